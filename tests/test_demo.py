"""`userloop demo`: the manifest, the whole pipeline on a tiny population, re-runs, and flag validation."""

import importlib.util
import json
import re
import shutil
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.demo import STAGES, DemoConfig, run_demo
from userloop.errors import UserError
from userloop.progress import Task
from userloop.report.manifest import read_manifest


def _write_manifest(directory, **changes):
    manifest = {
        "version": 1, "command": "userloop demo --out demo", "started": "2026-11-21T15:00:00Z", "finished": None,
        "data": "testbed", "models": {"user": "hf:models/user-lm", "assistant": "hf:models/assistant",
                                      "judge": "testbed:judge", "policy": None},
        "stages": [{"name": "testbed", "title": "Generate the testbed", "seconds": 1.0, "status": "done", "detail": ""}],
        "paths": {"raw": "testbed", "prepared": "prepared", "user_lm": None, "assistant": None,
                  "simulations": {"open": "sims/open"}, "evaluate_assistant": None, "metrics": None, "rlhi": None,
                  "dpo": None, "usereval": None},
        "report": None,
    } | changes
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_read_manifest_resolves_paths(tmp_path):
    _write_manifest(tmp_path)
    manifest = read_manifest(tmp_path)
    assert manifest["paths"]["raw"] == tmp_path.resolve() / "testbed"
    assert manifest["paths"]["simulations"] == {"open": tmp_path.resolve() / "sims" / "open"}
    assert manifest["paths"]["user_lm"] is None and manifest["report"] is None
    assert manifest["stages"][0]["status"] == "done"


def test_read_manifest_refuses_other_folders_and_versions(tmp_path):
    with pytest.raises(UserError, match="not a demo folder"):
        read_manifest(tmp_path)
    _write_manifest(tmp_path, version=2)
    with pytest.raises(UserError, match="version 2"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        read_manifest(tmp_path)


# --------------------------------------------------------------------------- the whole pipeline, tiny
TINY = {"users": 120, "user_lm_steps": 2, "assistant_steps": 2, "hidden_size": 16, "conversations": 3, "math_tasks": 2,
        "validity_intents": 2, "max_turns": 2, "max_new_tokens": 8, "eval_conversations": 3, "dpo_steps": 1, "usereval_requests": 3}
REPORT_MODULE = importlib.util.find_spec("userloop.report") is not None


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One tiny demo run (every stage, tiny sizes); returns (folder, config, manifest, seen progress titles)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    config = DemoConfig(out=str(out), **TINY)
    titles = []

    @contextmanager
    def progress(title, total=None):
        titles.append(title)
        yield Task()

    report = run_demo(config, progress)
    return out, config, report, titles


def test_every_stage_runs_and_the_manifest_points_at_its_outputs(demo):
    out, _, report, titles = demo
    manifest = read_manifest(out)
    assert [s["name"] for s in manifest["stages"]] == [name for name, _ in STAGES]
    assert titles == [title for _, title in STAGES]
    assert {s["status"] for s in manifest["stages"]} == {"done"}, manifest["stages"]
    assert manifest["data"] == "testbed" and manifest["finished"] is not None
    assert manifest["models"] == {"user": f"hf:{out / 'models/user-lm'}", "assistant": f"hf:{out / 'models/assistant'}",
                                  "judge": "testbed:judge", "policy": f"hf:{out / 'models/dpo'}"}
    paths = manifest["paths"]
    assert (paths["raw"] / "truth.jsonl").is_file() and (paths["prepared"] / "report.json").is_file()
    for key, name in (("user_lm", "train_report.json"), ("assistant", "train_report.json"), ("dpo", "dpo_report.json"),
                      ("evaluate_assistant", "report.json"), ("metrics", "metrics.json"), ("rlhi", "report.json"),
                      ("usereval", "report.json")):
        assert (paths[key] / name).is_file(), key
    for key, name in (("user_lm", "train_report.json"), ("assistant", "train_report.json"), ("dpo", "dpo_report.json")):
        assert json.loads((paths[key] / name).read_text())["bf16"] is False, key  # float32 on every CPU (LEAN_TRAINING)
    rlhi = json.loads((paths["rlhi"] / "report.json").read_text())   # what worked in docs/rlhi.md run 3
    assert rlhi["config"]["rewriter"] == "testbed:editor" and rlhi["config"]["mirrors"] is True
    assert rlhi["config"]["split"] == "train"   # UserEval asks the test split's users: none of them in DPO's pairs
    assert rlhi["mirrors"]["pairs"] > 0 and json.loads((paths["dpo"] / "dpo_report.json").read_text())["pairs"] == rlhi["pairs"]
    [stage] = [s for s in manifest["stages"] if s["name"] == "rlhi"]
    assert stage["detail"].endswith(f"{rlhi['pairs']:,} preference pairs ({rlhi['mirrors']['pairs']:,} of them mirrors)")
    assert (paths["simulations"]["open"] / "summary.json").is_file()
    assert (paths["evaluate_assistant"] / "single_turn" / "summary.json").is_file()
    math = [json.loads(line) for line in (out / "scenarios" / "math.jsonl").read_text().splitlines()]
    assert len(math) == TINY["math_tasks"] and {m["kind"] for m in math} == {"math"}
    if REPORT_MODULE:
        assert report == out / "report" / "index.html" and report.is_file()
        assert manifest["report"] == report.resolve()


def test_the_validity_stage_ranks_the_panel_with_the_ground_truth_the_user_lm_and_the_naive_protocol(demo):
    out, _, _, _ = demo
    manifest = read_manifest(out)
    assert manifest["paths"]["validity"] == out.resolve() / "validity"
    report = json.loads((out / "validity" / "report.json").read_text())
    panel = ["careful", "standard", "hasty", "tone-deaf", "sloppy"]
    assert report["intents"] == TINY["validity_intents"] and report["config"]["max_user_turns"] == TINY["max_turns"]
    assert report["simulators"] == {"user-lm": f"hf:{out / 'models/user-lm'}"}
    assert list(report["outcomes"]) == ["ground_truth", "user-lm", "naive"]
    assert all(list(by_assistant) == panel for by_assistant in report["outcomes"].values())
    assert set(report["validity"]) == {"user-lm", "naive"} and list(report["multi_turn_drop"]) == panel
    for sim in ("ground_truth", "user-lm", "naive"):
        for assistant in panel:
            assert (out / "validity" / "runs" / sim / assistant / "summary.json").is_file()
    [stage] = [s for s in manifest["stages"] if s["name"] == "validity"]
    assert stage["status"] == "done" and stage["title"] == "Simulator validity on the assistant panel"
    truth_ranks = sorted(report["ranks"]["ground_truth"].items(), key=lambda item: item[1])
    assert stage["detail"].startswith(f"2 problems; ground-truth ranks {truth_ranks[0][0]} {truth_ranks[0][1]:g}, ")
    naive = report["validity"]["naive"]["spearman"]["value"]
    assert f"naive {'undefined' if naive is None else format(naive, '.2f')}" in stage["detail"]
    hasty = report["multi_turn_drop"]["hasty"]["drop_points"]
    assert stage["detail"].endswith(f"hasty's multi-turn drop (points): ground truth {hasty['ground_truth']['value']:+.0f}, "
                                    f"user-lm {hasty['user-lm']['value']:+.0f}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="per-stage peak RSS is read from Linux /proc")
def test_each_stage_records_its_peak_memory(demo):
    import resource

    out, _, _, _ = demo
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    peaks = [s["peak_rss_mb"] for s in stages]
    assert all(isinstance(peak, float) and 10 < peak < 100_000 for peak in peaks), peaks
    assert peaks[0] < max(peaks)  # each stage's own peak: the testbed's does not include the trainings after it
    # the kernel's high-water mark is not reset: the process's peak (what /usr/bin/time reports) covers them all
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 >= max(peaks) - 0.1  # peaks are rounded


def test_a_rerun_redoes_nothing(demo):
    out, config, _, _ = demo
    before = json.loads((out / "manifest.json").read_text())
    weights = out / "models" / "user-lm" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    titles = []

    @contextmanager
    def progress(title, total=None):
        titles.append(title)
        yield Task()

    run_demo(DemoConfig(**asdict(config)), progress)
    after = json.loads((out / "manifest.json").read_text())
    assert titles == [] and after["stages"] == before["stages"] and after["paths"] == before["paths"]
    assert weights.stat().st_mtime_ns == stamp


def test_a_rerun_with_other_settings_is_refused(demo):
    _, config, _, _ = demo
    with pytest.raises(UserError, match="other settings \\(users\\).*--force"):
        run_demo(DemoConfig(**(asdict(config) | {"users": 121})))


def test_real_data_without_a_judge_skips_the_stages_that_need_one(demo, tmp_path):
    """A prepared folder without the testbed's truth, the demo's own tiny models: no math, no RLHI, no DPO."""
    out, _, _, _ = demo
    data = tmp_path / "real"
    shutil.copytree(out / "prepared", data)
    report = json.loads((data / "report.json").read_text())
    (data / "report.json").write_text(json.dumps(report | {"inputs": ["elsewhere/logs.jsonl"]}))
    config = DemoConfig(out=str(tmp_path / "demo"), data=str(data), user_model=f"hf:{out / 'models/user-lm'}",
                        assistant=f"hf:{out / 'models/assistant'}", **TINY)
    run_demo(config)
    manifest = read_manifest(tmp_path / "demo")
    status = {s["name"]: (s["status"], s["detail"]) for s in manifest["stages"]}
    assert {name for name, (state, _) in status.items() if state == "done"} == {"simulate", "metrics", "report"}
    assert "--data" in status["testbed"][1] and "already prepared" in status["prepare"][1]
    assert "--user-model" in status["user_lm"][1] and "--assistant" in status["assistant"][1]
    assert "testbed's truth" in status["evaluate_assistant"][1] and "--judge" in status["rlhi"][1]
    assert "RLHI" in status["dpo"][1] and "--judge" in status["usereval"][1]
    assert status["validity"][0] == "skipped" and "testbed's truth" in status["validity"][1]
    assert manifest["data"] == str(data) and manifest["models"]["judge"] is None
    assert manifest["paths"]["prepared"] == data.resolve() and manifest["paths"]["rlhi"] is None


@pytest.mark.parametrize("change, fragment", [
    ({"users": 0}, "--users must be an integer >= 1"),
    ({"dpo_steps": -1}, "--dpo-steps"),
    ({"hidden_size": 12}, "--hidden-size must be a multiple of 8"),
    ({"validity_intents": 1}, "--validity-intents must be >= 2"),
    ({"data": "no/such/logs.jsonl"}, "--data no/such/logs.jsonl: no such file"),
    ({"user_model": "UserLM-8b"}, "unknown model spec 'UserLM-8b'"),
    ({"assistant": "openai:"}, "names no model"),
    ({"judge": "gpt"}, "unknown model spec 'gpt'"),
])
def test_flags_are_checked_before_any_stage(tmp_path, change, fragment):
    config = DemoConfig(out=str(tmp_path / "demo"), **change)
    with pytest.raises(UserError, match=re.escape(fragment)):
        run_demo(config)
    assert not (tmp_path / "demo").exists()


def test_out_file_and_testbed_judge_on_real_data_are_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        run_demo(DemoConfig(out=str(tmp_path / "file")))
    logs = tmp_path / "logs.jsonl"
    logs.write_text(json.dumps({"messages": [{"role": "user", "content": "hi there"}]}) + "\n")
    with pytest.raises(UserError, match="--judge testbed:judge needs the testbed's truth"):
        run_demo(DemoConfig(out=str(tmp_path / "demo"), data=str(logs), judge="testbed"))
    assert not (tmp_path / "demo").exists()


# --------------------------------------------------------------------------- CLI
def test_cli_rerun_prints_the_stages_the_report_and_the_viewer_command(demo):
    out, _, _, _ = demo
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in TINY.items()]
    result = CliRunner().invoke(app, ["demo", "--out", str(out), *flags])
    assert result.exit_code == 0, (result.output, result.exception)
    for _, title in STAGES:
        assert title in result.stdout
    assert f"userloop view {out}" in result.stdout
    if REPORT_MODULE:
        assert str(out / "report" / "index.html") in result.stdout


def test_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--users", "0"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: --users must be an integer >= 1, got 0"]
    (tmp_path / "demo").mkdir()
    _write_manifest(tmp_path / "demo", settings={"users": 5})
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "other settings" in line and "--force" in line
