"""Sharded math scenarios from the testbed's truth (``scenarios build --kind math`` on a testbed folder)."""

import json

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.simulate.scenarios import build_scenarios, load_scenarios
from userloop.testbed import generate, read_truth


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """A raw testbed folder (60 users) and a prepared folder made from it."""
    from userloop.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("testbed")
    generate(60, seed=3).write(root / "raw")
    prepare([str(root / "raw" / "conversations.jsonl")], root / "prepared", PrepareConfig(splits="50/25/25"))
    return root / "raw", root / "prepared"


def test_every_math_problem_of_the_truth_becomes_a_sharded_scenario(testbed):
    raw, _ = testbed
    _, conversations = read_truth(raw)
    problems = [(c, task) for c in conversations.values() for task in c["tasks"] if task["family"] == "math"]
    result = build_scenarios(raw, kind="math")
    assert len(result.scenarios) == len(problems) > 0
    assert result.records_read == len(conversations)
    assert result.skipped == {"no math task": sum(not any(t["family"] == "math" for t in c["tasks"])
                                                  for c in conversations.values())}
    by_id = {s.id: s for s in result.scenarios}
    conversation, task = problems[0]
    k = conversation["tasks"].index(task) + 1
    scenario = by_id[f"{conversation['id']}-task{k}"]
    assert scenario.kind == "math" and scenario.shards == task["shards"] and len(scenario.shards) >= 2
    assert scenario.answer == str(task["check"]["answer"]) and scenario.full_prompt == task["full_request"]
    assert task["full_request"] in scenario.intent
    assert scenario.metadata["user_id"] == conversation["user_id"]


def test_a_prepared_folder_keeps_the_problems_of_its_split(testbed):
    raw, prepared = testbed
    every = {s.id for s in build_scenarios(raw, kind="math").scenarios}
    splits = {split: {s.id for s in build_scenarios(prepared, kind="math", split=split).scenarios}
              for split in ("train", "test")}
    assert splits["train"] and splits["test"] and not splits["train"] & splits["test"]
    assert splits["train"] | splits["test"] <= every
    assert build_scenarios(prepared, kind="math").to_dict()["scenarios"] == len(splits["test"])


def test_folders_without_the_truth_or_splits_are_refused(testbed, tmp_path):
    raw, prepared = testbed
    with pytest.raises(UserError, match="--split applies to a prepared data folder only"):
        build_scenarios(raw, kind="math", split="test")
    with pytest.raises(UserError, match="has no 'dev' split"):
        build_scenarios(prepared, kind="math", split="dev")
    with pytest.raises(UserError, match="needs the testbed"):
        build_scenarios(tmp_path, kind="math")


def test_cli_builds_math_scenarios_from_a_testbed_folder(testbed, tmp_path):
    raw, _ = testbed
    out = tmp_path / "math.jsonl"
    result = CliRunner().invoke(app, ["scenarios", "build", "--source", str(raw), "--kind", "math", "--limit", "5",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 5 scenarios (math)" in result.stdout
    scenarios = load_scenarios(out)
    assert len(scenarios) == 5 and all(s.answer and s.shards for s in scenarios)
    assert json.loads(out.read_text().splitlines()[0])["metadata"]["source"] == "testbed"
