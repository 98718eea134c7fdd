"""Run folders and scenario files that fail: a damaged or half-written run.json, the same scenario file under
another path, files that are not UTF-8 or not scenario files yet, SIGTERM (issue 24)."""

import builtins
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import userloop.files
from userloop.cli import app
from userloop.errors import UserError
from userloop.simulate.runs import SimulationConfig, read_records, simulate


def _config(scripted, scenarios=None, **fields) -> SimulationConfig:
    return SimulationConfig(assistant=scripted["assistant"], user=scripted["user"],
                            scenarios=str(scenarios or scripted["scenarios"]), **fields)


def _one_error_line(result) -> str:
    """Exit 2, and stderr is one line starting 'error:' (no usage box, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output and "╭" not in result.output
    return lines[0]


def _simulate_args(scripted, scenarios, out) -> list[str]:
    return ["simulate", "--user", scripted["user"], "--assistant", scripted["assistant"], "--scenarios", str(scenarios),
            "--out", str(out)]


def _evaluate_args(scripted, scenarios, out) -> list[str]:
    return ["evaluate-assistant", "--user", scripted["user"], "--assistant", scripted["assistant"], "--scenarios",
            str(scenarios), "--out", str(out)]


# ---------------------------------------------------------------------- scenario files
def test_a_scenario_file_that_is_not_utf8_is_one_line_in_simulate_and_evaluate_assistant(scripted, tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    row = {"id": "c1", "kind": "open", "intent": "You want a caf\u00e9 recipe."}
    latin1.write_bytes((json.dumps(row, ensure_ascii=False) + "\n").encode("latin-1"))
    for args in (_simulate_args(scripted, latin1, tmp_path / "run"),
                 _evaluate_args(scripted, latin1, tmp_path / "eval")):
        line = _one_error_line(CliRunner().invoke(app, args))
        assert f"scenario file {latin1} is not UTF-8 text" in line and "save it as UTF-8" in line
    assert not (tmp_path / "run" / "run.json").exists()


def test_an_unreadable_scenario_file_is_one_line(scripted, tmp_path, monkeypatch):
    locked = Path(scripted["scenarios"])
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # chmod does not stop root, which the test machine may be
        if os.fspath(file) == os.fspath(locked):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    line = _one_error_line(CliRunner().invoke(app, _simulate_args(scripted, locked, tmp_path / "run")))
    assert f"scenario file {locked} cannot be read: permission denied" in line


@pytest.mark.parametrize("layout", ["one line", "indented"])
def test_a_raw_lost_in_conversation_file_says_how_to_build_a_scenario_file(scripted, tmp_path, layout):
    tasks = [{"task_id": "sharded-GSM8K/1", "task": "math", "question": "Tom has 3 apples and buys 4. How many?",
              "answer": "#### 7", "shards": [{"shard_id": 1, "shard": "Tom has 3 apples."}]}]
    raw = tmp_path / "lic.json"
    raw.write_text(json.dumps(tasks, indent=2 if layout == "indented" else None))
    line = _one_error_line(CliRunner().invoke(app, _simulate_args(scripted, raw, tmp_path / "run")))
    assert "is a JSON array, not a scenario file" in line
    assert f"userloop scenarios build --source {raw} --out scenarios.jsonl" in line


def test_a_gsm8k_file_says_how_to_build_a_scenario_file(tmp_path):
    from userloop.simulate.scenarios import load_scenarios

    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text(json.dumps({"question": "2 + 2?", "answer": "#### 4"}) + "\n")
    with pytest.raises(UserError, match=rf"gsm8k.jsonl:1: .*userloop scenarios build --source {gsm8k}"):
        load_scenarios(gsm8k)


# ---------------------------------------------------------------------- run.json
def test_a_damaged_run_file_is_refused_and_force_replaces_it(scripted, tmp_path):
    out = tmp_path / "run"
    simulate(_config(scripted), out)
    run_file = out / "run.json"
    run_file.write_bytes(run_file.read_bytes()[:40])  # what an in-place write cut by a crash left behind
    with pytest.raises(UserError, match=r"run file .*run.json is not valid JSON.*pass --force to replace it"):
        simulate(_config(scripted), out)
    result = simulate(_config(scripted), out, force=True)
    assert (result.resumed, result.finished_now) == (4, 0)  # the finished conversations are kept
    run = json.loads(run_file.read_text())
    assert run["config"]["n"] == 1 and run["previous"] == []
    assert simulate(_config(scripted), out).finished_now == 0  # and the run resumes as usual


def test_a_crash_while_writing_run_json_leaves_no_half_file(scripted, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(userloop.files.os, "fsync", crash)
    with pytest.raises(OSError):
        simulate(_config(scripted), out)
    assert not (out / "run.json").exists() and not list(out.glob(".run.json*"))
    monkeypatch.undo()
    assert simulate(_config(scripted), out).finished_now == 4  # nothing to --force: the run starts


def test_the_same_scenario_file_under_another_path_resumes(scripted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    simulate(_config(scripted, scenarios="scenarios.jsonl", n=1), out)  # relative
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["scenarios"] == str(tmp_path / "scenarios.jsonl")  # recorded resolved
    again = simulate(_config(scripted, scenarios=tmp_path / "scenarios.jsonl", n=1), out)  # absolute
    assert (again.resumed, again.finished_now) == (4, 0)
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "scenarios.jsonl"
    copy.write_bytes((tmp_path / "scenarios.jsonl").read_bytes())
    assert simulate(_config(scripted, scenarios=copy, n=1), out).finished_now == 0  # same content, same scenarios
    rows = (tmp_path / "scenarios.jsonl").read_text().splitlines()
    copy.write_text("\n".join(rows[:3]) + "\n")
    with pytest.raises(UserError, match=r"another scenario file: .*scenarios.jsonl in run.json, .*copy/scen"):
        simulate(_config(scripted, scenarios=copy, n=1), out)
    (tmp_path / "scenarios.jsonl").write_text("\n".join(rows[:3]) + "\n")
    with pytest.raises(UserError, match=r"\(the scenario file changed\)"):
        simulate(_config(scripted, scenarios="scenarios.jsonl", n=1), out)


# ---------------------------------------------------------------------- SIGTERM
def test_sigterm_writes_the_summary_ctrl_c_writes_and_exits_143(scripted, tmp_path):
    out = tmp_path / "run"
    records_path = out / "conversations.jsonl"
    command = [sys.executable, "-m", "userloop.cli", *_simulate_args(scripted, scripted["scenarios"], out),
               "--n", "2000", "--concurrency", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (records_path.exists() and records_path.read_bytes().count(b"\n") >= 10):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended before it could be stopped: {process.communicate()}")
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "terminated: finished conversations are saved" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    records, torn = read_records(records_path)
    summary = json.loads((out / "summary.json").read_text())
    assert torn == 0 and 10 <= summary["conversations"] == len(records) < 4 * 2000
    assert summary["resume"]["pending"] == 4 * 2000 - len(records)
