"""Sharded runs (simulate --shard I/N) and their merge (userloop runs merge): nothing lost, nothing duplicated."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.simulate.runs import SimulationConfig, merge_runs, parse_shard, read_records, simulate

N = 3  # samples per scenario: 4 scenarios x 3 = 12 conversations


def _simulate(scripted, out, *options: str):
    result = CliRunner().invoke(app, ["simulate", "--user", scripted["user"], "--assistant", scripted["assistant"],
                                      "--scenarios", scripted["scenarios"], "--n", str(N), "--out", str(out), "--json",
                                      *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _merge(*args: str):
    return CliRunner().invoke(app, ["runs", "merge", *map(str, args)])


def _keys(folder) -> list[tuple[str, int]]:
    return [r.key for r in read_records(folder / "conversations.jsonl")[0]]


def _without_timings(value):
    """A record without its measured times (the rest is deterministic with scripted models)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("timings", "latency_s")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


@pytest.fixture
def shards(scripted, tmp_path):
    folders = [tmp_path / f"shard-{i}" for i in range(1, 4)]
    for i, folder in enumerate(folders, start=1):
        _simulate(scripted, folder, "--shard", f"{i}/3")
    return folders


def test_shards_split_every_conversation_once_and_merge_into_the_whole_run(scripted, shards, tmp_path):
    everything = [(row["id"], sample) for row in scripted["rows"] for sample in range(N)]  # scenario-major
    for i, folder in enumerate(shards, start=1):
        assert sorted(_keys(folder)) == sorted(everything[i - 1::3])  # every third conversation, from the i-th
    result = _merge(*shards, "--out", tmp_path / "merged", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["conversations"] == 12 and [m["conversations"] for m in summary["merged_from"]] == [4, 4, 4]
    assert _keys(tmp_path / "merged") == everything

    whole = _simulate(scripted, tmp_path / "whole")  # the same run in one piece
    merged_records, _ = read_records(tmp_path / "merged" / "conversations.jsonl")
    whole_records, _ = read_records(tmp_path / "whole" / "conversations.jsonl")
    assert sorted(json.dumps(_without_timings(r.to_dict())) for r in merged_records) == \
        sorted(json.dumps(_without_timings(r.to_dict())) for r in whole_records)
    assert summary["overall"]["solved"] == whole["overall"]["solved"]
    assert summary["by_kind"].keys() == whole["by_kind"].keys()

    resumed = _simulate(scripted, tmp_path / "merged")  # the merged folder is a complete run of the same options
    assert resumed["resume"]["finished_now"] == 0 and resumed["resume"]["pending"] == 0


def test_merge_refuses_missing_duplicated_or_foreign_shards(scripted, shards, tmp_path):
    def refused(*args) -> str:
        result = _merge(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
        return lines[0]

    out = tmp_path / "merged"
    assert "shard 3/3 missing" in refused(shards[0], shards[1], "--out", out)
    assert "given twice" in refused(shards[0], shards[0], shards[1], shards[2], "--out", out)
    other = tmp_path / "other-seed"
    _simulate(scripted, other, "--shard", "2/3", "--seed", "1")
    assert "different seed" in refused(shards[0], other, shards[2], "--out", out)
    four = tmp_path / "of-four"
    _simulate(scripted, four, "--shard", "2/4")
    assert "of 3 shards" in refused(shards[0], four, shards[2], "--out", out)
    whole = tmp_path / "whole"
    _simulate(scripted, whole)
    assert "without --shard" in refused(whole, "--out", out)
    assert not out.exists()  # nothing written by a refused merge


def test_merge_refuses_lost_or_misplaced_conversations(scripted, shards, tmp_path):
    partial = tmp_path / "partial"
    _simulate(scripted, partial, "--shard", "2/3", "--max-conversations", "1")
    with pytest.raises(UserError, match=r"3 of 12 conversations are not recorded \(shards 2/3: 3\)"):
        merge_runs([shards[0], partial, shards[2]], tmp_path / "merged")

    moved = tmp_path / "moved"  # a conversation of shard 1 appended to shard 2's records
    shutil.copytree(shards[1], moved)
    first_line = (shards[0] / "conversations.jsonl").read_bytes().splitlines(keepends=True)[0]
    with (moved / "conversations.jsonl").open("ab") as file:
        file.write(first_line)
    with pytest.raises(UserError, match="belongs to shard 1/3, not 2/3"):
        merge_runs([shards[0], moved, shards[2]], tmp_path / "merged")

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        merge_runs(shards, tmp_path / "busy")


def test_merge_reads_the_scenario_file_from_another_path_with_the_same_content(scripted, shards, tmp_path):
    moved = tmp_path / "elsewhere.jsonl"
    shutil.copy(scripted["scenarios"], moved)
    (tmp_path / "scenarios.jsonl").unlink()  # the path the shards recorded is gone
    with pytest.raises(UserError, match="scenario file"):
        merge_runs(shards, tmp_path / "merged")
    assert merge_runs(shards, tmp_path / "merged", scenarios=moved)["conversations"] == 12
    moved.write_text(moved.read_text().replace("apples", "pears"))
    with pytest.raises(UserError, match="not the scenario file the shards simulated"):
        merge_runs(shards, tmp_path / "merged-again", scenarios=moved)


def test_a_shard_folder_resumes_only_as_the_same_shard(scripted, shards):
    config = SimulationConfig(user=scripted["user"], assistant=scripted["assistant"], scenarios=scripted["scenarios"],
                              n=N, shard="2/3")
    with pytest.raises(UserError, match="shard"):
        simulate(config, shards[0])
    assert simulate(SimulationConfig(**{**config.__dict__, "shard": "1/3"}), shards[0]).finished_now == 0


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_bad_shards_are_one_line_errors(scripted, tmp_path, text):
    with pytest.raises(UserError, match="shard must be I/N"):
        parse_shard(text)
    result = CliRunner().invoke(app, ["simulate", "--user", scripted["user"], "--assistant", scripted["assistant"],
                                      "--scenarios", scripted["scenarios"], "--out", str(tmp_path / "run"),
                                      "--shard", text])
    assert result.exit_code == 2 and result.output.strip().startswith("error: shard must be I/N"), result.output


def test_runs_without_shards_record_no_shard(scripted, tmp_path):
    """run.json of an unsharded run is what it was before shards existed (old run folders still resume)."""
    _simulate(scripted, tmp_path / "run")
    assert "shard" not in json.loads((tmp_path / "run" / "run.json").read_text())["config"]
