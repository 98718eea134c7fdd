"""Run folders: resume after a real kill and a Ctrl-C, torn lines, configuration checks, summaries, compare."""

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from record_helpers import simulated
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.simulate.runs import SimulationConfig, compare_runs, read_records, simulate


def _command(scripted, out, n: int, concurrency: int = 1) -> list[str]:
    return [sys.executable, "-m", "userloop.cli", "simulate", "--user", scripted["user"], "--assistant",
            scripted["assistant"], "--scenarios", scripted["scenarios"], "--n", str(n), "--out", str(out),
            "--concurrency", str(concurrency)]


def _start_and_stop(command, records_path, stop_signal) -> subprocess.CompletedProcess:
    """Start the command, send ``stop_signal`` once it wrote some records, and wait for it to exit."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    written = records_path.read_bytes().count(b"\n") if records_path.exists() else 0
    deadline = time.monotonic() + 60
    while not (records_path.exists() and records_path.read_bytes().count(b"\n") >= written + 10):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended before it could be stopped: {process.communicate()}")
        time.sleep(0.002)
    process.send_signal(stop_signal)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _keys(path):
    records, torn = read_records(path)
    return [r.key for r in records], torn


def test_resume_after_ctrl_c_and_a_kill_loses_nothing_and_duplicates_nothing(scripted, tmp_path):
    # far more conversations than a stopped run can finish on a busy machine before the signal lands;
    # the final run finishes them with more in flight (concurrency may change on resume)
    n, out = 2000, tmp_path / "run"
    records_path = out / "conversations.jsonl"
    command = _command(scripted, out, n)

    interrupted = _start_and_stop(command, records_path, signal.SIGINT)
    assert interrupted.returncode == 130, interrupted.stderr
    assert "run the same command again to resume" in interrupted.stderr and "Traceback" not in interrupted.stderr
    after_interrupt, _ = _keys(records_path)
    assert 10 <= len(after_interrupt) < 4 * n
    assert json.loads((out / "summary.json").read_text())["conversations"] == len(after_interrupt)

    killed = _start_and_stop(command, records_path, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    complete = records_path.read_bytes()
    complete = complete[:complete.rfind(b"\n") + 1]
    with records_path.open("ab") as file:  # a write cut short (the kill may have left one already)
        file.write(b'{"scenario_id": "m1", "sample": 29')
    kept, torn = _keys(records_path)
    assert torn == 1 and kept[:len(after_interrupt)] == after_interrupt

    finished = subprocess.run(_command(scripted, out, n, concurrency=256), check=False, capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "1 torn line repaired" in finished.stdout and "0 still to run" in finished.stdout
    keys, torn = _keys(records_path)
    assert torn == 0 and len(keys) == len(set(keys)) == 4 * n
    assert set(keys) == {(s["id"], k) for s in scripted["rows"] for k in range(n)}
    assert records_path.read_bytes().startswith(complete)  # what was on disk stays as it was
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resume"]["records_before"] == len(kept) and summary["resume"]["torn_lines_repaired"] == 1


def test_read_records_repairs_only_when_asked(tmp_path):
    path = tmp_path / "conversations.jsonl"
    lines = [json.dumps(simulated("a", [("user", "hi")], sample=k).to_dict()) + "\n" for k in range(2)]
    path.write_text("".join(lines) + '{"scenario_id": "a", "sam')
    records, torn = read_records(path)
    assert (len(records), torn) == (2, 1) and path.read_text().endswith('"sam')
    records, torn = read_records(path, repair=True)
    assert (len(records), torn) == (2, 1) and path.read_text() == "".join(lines)

    path.write_text(lines[0] + lines[0])
    with pytest.raises(UserError, match=r"conversations.jsonl:2: conversation 'a' sample 0 is already on line 1"):
        read_records(path)
    path.write_text(lines[0] + "not json\n" + lines[1])
    with pytest.raises(UserError, match=r"conversations.jsonl:2: not a conversation record"):
        read_records(path)


def test_a_run_folder_written_before_typed_records_loads_as_it_was(scripted):
    """``fixtures/run_written_before_typed_records``: the files ``userloop simulate`` wrote for the scripted
    scenarios (n=2) before records were typed. They load, write back byte for byte, and summarise as then."""
    from userloop.simulate.runs import summarize
    from userloop.simulate.scenarios import load_scenarios

    folder = Path(__file__).parent / "fixtures" / "run_written_before_typed_records"
    records, torn = read_records(folder / "conversations.jsonl")
    assert torn == 0 and len(records) == 8
    assert b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in records) == (folder / "conversations.jsonl").read_bytes()
    then = json.loads((folder / "summary.json").read_text())
    now = summarize(records, load_scenarios(scripted["scenarios"]))

    def computed(summary):  # end reasons added since then count 0
        groups = [summary["overall"], *summary["by_kind"].values()]
        for group in groups:
            group["end_reasons"] = {reason: n for reason, n in group["end_reasons"].items() if n}
        return groups, summary["simulation_statistics"]

    assert computed(now) == computed(then)


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda r: r.pop("tokens"), "a record without 'tokens'"),
    (lambda r: r.update(user_turns=5), "a record with user_turns 5 but 2 user messages"),
    (lambda r: r["messages"][0].pop("role"), "a record with a message without a role and text content"),
    (lambda r: r["messages"][3].update(score={"passed": True}), "a record with a message whose score is not one"),
    (lambda r: r.update(solved="yes"), "a record with solved 'yes'"),
])
def test_a_broken_record_is_one_line_naming_it_and_what_to_do(tmp_path, edit, reason):
    folder = Path(__file__).parent / "fixtures" / "run_written_before_typed_records"
    lines = (folder / "conversations.jsonl").read_text().splitlines()
    broken = json.loads(lines[2])  # m1 sample 0: two user turns, the second reply scored
    edit(broken)
    path = tmp_path / "conversations.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(broken), lines[1], *lines[3:]]) + "\n")
    with pytest.raises(UserError) as error:
        read_records(path)
    message = str(error.value)
    assert message.startswith(f"{path}:2: not a conversation record: {reason}") and "\n" not in message
    assert message.endswith("remove that line (a resume simulates its conversation again) or simulate into a new --out")
    skipped = []
    records, _ = read_records(path, on_bad=skipped.append)
    assert len(records) == 7 and len(skipped) == 1 and f"a record {skipped[0]}".startswith(reason)


def _config(scripted, **fields) -> SimulationConfig:
    return SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=scripted["scenarios"], **fields)


def test_a_run_folder_from_an_older_version_is_a_one_line_error(scripted, tmp_path):
    simulate(_config(scripted), tmp_path / "run")
    run_file = tmp_path / "run" / "run.json"
    run = json.loads(run_file.read_text())
    run["config"]["retired_option"] = 3
    run_file.write_text(json.dumps(run))
    with pytest.raises(UserError, match="options this version does not know: retired_option"):
        simulate(_config(scripted), tmp_path / "run")
    del run["config"]["retired_option"], run["config"]["seed"]
    run_file.write_text(json.dumps(run))
    with pytest.raises(UserError, match="seed: absent in run.json, 0 now"):
        simulate(_config(scripted), tmp_path / "run")
    run_file.write_text("[1, 2]")
    with pytest.raises(UserError, match="is not a run file"):
        simulate(_config(scripted), tmp_path / "run")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a run folder"):
        simulate(_config(scripted), tmp_path / "a-file")


def test_a_different_configuration_is_refused_unless_forced(scripted, tmp_path):
    simulate(_config(scripted, n=1), tmp_path / "run")
    with pytest.raises(UserError, match=r"different configuration \(n: 1 in run.json, 2 now\).*--force"):
        simulate(_config(scripted, n=2), tmp_path / "run")
    simulate(_config(scripted, n=1, concurrency=7), tmp_path / "run")  # speed settings may change
    result = simulate(_config(scripted, n=2), tmp_path / "run", force=True)
    assert (result.resumed, result.finished_now) == (4, 4)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["n"] == 2 and run["previous"][0]["config"]["n"] == 1


def test_a_run_file_with_the_old_spelling_of_a_built_in_role_resumes(scripted, tmp_path):
    """run.json files written before the role providers say "rules" for the reply classifier."""
    simulate(_config(scripted, n=1), tmp_path / "run")
    run_file = tmp_path / "run" / "run.json"
    run = json.loads(run_file.read_text())
    assert run["config"]["classifier"] == "rules:classifier"
    run["config"]["classifier"] = "rules"
    run_file.write_text(json.dumps(run))
    result = simulate(_config(scripted, n=1), tmp_path / "run")
    assert result.finished_now == 0 and result.resumed == 4
    assert _config(scripted, n=1, classifier="rules").identity()["classifier"] == "rules:classifier"


def test_stopping_early_then_resuming_gives_the_same_records_as_one_run(scripted, tmp_path):
    first = simulate(_config(scripted, n=2), tmp_path / "parts", max_conversations=3)
    assert first.finished_now == 3 and first.summary["resume"]["pending"] == 5
    simulate(_config(scripted, n=2), tmp_path / "parts")
    simulate(_config(scripted, n=2), tmp_path / "whole")

    def contents(folder):
        records, _ = read_records(tmp_path / folder / "conversations.jsonl")
        return {r.key: ([m.content for m in r.messages], r.end_reason) for r in records}

    assert contents("parts") == contents("whole")


def test_summary_fields_and_compare(scripted, tmp_path):
    simulate(_config(scripted, n=2), tmp_path / "a")
    simulate(SimulationConfig(assistant=scripted["assistant"], user=None, scenarios=scripted["scenarios"], n=2), tmp_path / "b")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    math = summary["by_kind"]["math"]
    assert math["solved"] == {"solved": 2, "scored": 4, "rate": 0.5, "ci95": pytest.approx([0.15, 0.85], abs=1e-4)}
    assert math["user_turns"] == {"mean": 2.0, "variance": 0.0, "min": 2, "max": 2}
    assert summary["by_kind"]["open"]["solved"] is None
    assert math["reply_classification"]["answer_attempt"] == pytest.approx(0.75)
    assert set(summary["timings"]) >= {"wall_s", "in_model_calls_s", "overhead_share", "conversations_per_s", "turns_per_s"}
    assert summary["simulation_statistics"]["conversations"] == 6  # errors are left out of Table 3
    assert "| solved rate (95% CI) | 50.0% [15.0%, 85.0%] (2/4)" in (tmp_path / "a" / "summary.md").read_text()

    table = compare_runs(tmp_path / "a", tmp_path / "b")
    assert "| math | solved rate (95% CI) | 50.0% [15.0%, 85.0%] (2/4) | 100.0% [51.0%, 100.0%] (4/4) | +50.0 pts |" in table
    assert "| math | user turns mean | 2.00 | 1.00 | -1.00 |" in table
    result = CliRunner().invoke(app, ["runs", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0 and result.stdout == table
    missing = CliRunner().invoke(app, ["runs", "compare", str(tmp_path / "a"), str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "run summary not found" in missing.stderr


def test_cli_simulate(scripted, tmp_path):
    args = ["simulate", "--user", scripted["user"], "--assistant", scripted["assistant"], "--scenarios",
            scripted["scenarios"], "--n", "2", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "8 conversations (8 new, 0 from earlier runs, 0 torn line repaired, 0 still to run): solved 2/4 (50.0%)" in result.stdout
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "(0 new, 8 from earlier runs" in again.stdout
    changed = CliRunner().invoke(app, [*args[:-2], "--max-turns", "3", "--out", str(tmp_path / "run")])
    assert changed.exit_code == 2 and changed.stderr.count("\n") == 1 and "max_user_turns: 6 in run.json, 3 now" in changed.stderr
    bad = CliRunner().invoke(app, [*args[:-2], "--n", "0", "--out", str(tmp_path / "other")])
    assert bad.exit_code == 2 and "n must be an integer >= 1" in bad.stderr


def test_a_model_that_does_not_load_leaves_no_run_behind(scripted, tmp_path):
    with pytest.raises(UserError, match="unknown model spec 'nope:x'"):
        simulate(SimulationConfig(assistant="nope:x", user=scripted["user"], scenarios=scripted["scenarios"]), tmp_path / "a")
    with pytest.raises(UserError, match="scripted model file not found"):
        simulate(replace(_config(scripted), assistant="scripted:missing.json"), tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()
    simulate(_config(scripted), tmp_path / "run")  # the fixed command starts the run: nothing to --force
    assert (tmp_path / "run" / "run.json").exists()
