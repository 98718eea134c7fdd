"""Scenario records, scenario files, the builders and the ``userloop scenarios build`` command."""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.simulate.scenarios import Scenario, build_scenarios, code_shards, load_scenarios, request, write_scenarios

MATH = {"id": "m", "kind": "math", "intent": "Tom has 3 apples and buys 4.", "shards": ["Tom buys 4."],
        "full_prompt": "Tom has 3 apples and buys 4. How many?", "answer": "7"}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_round_trip_and_defaults(tmp_path):
    scenario = Scenario.from_dict(MATH)
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    open_one = Scenario.from_dict({"id": "o", "kind": "open", "intent": "write a poem"})
    assert open_one.shards == [] and open_one.full_prompt == "write a poem" and open_one.metadata == {}
    path = write_scenarios([scenario, open_one], tmp_path / "s.jsonl")
    assert load_scenarios(path) == [scenario, open_one]


@pytest.mark.parametrize("change, fragment", [
    ({"kind": "poetry"}, "kind must be one of"),
    ({"answer": None}, "needs 'answer'"),
    ({"shards": "one"}, "shards must be a list"),
    ({"shards": [""]}, "each shard"),
    ({"max_user_turns": 0}, "max_user_turns"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"intent": " "}, "intent must be a non-empty string"),
])
def test_bad_records_are_one_line_errors(change, fragment):
    with pytest.raises(UserError, match=fragment):
        Scenario.from_dict({**MATH, **change})
    with pytest.raises(UserError, match="needs 'tests' and 'entry_point'"):
        Scenario.from_dict({"id": "c", "kind": "code", "intent": "x", "tests": "def check(c): pass"})


def test_load_scenarios_names_the_bad_line_and_duplicate_ids(tmp_path):
    good = json.dumps(MATH)
    with pytest.raises(UserError, match=r"s\.jsonl:3: not valid JSON"):
        load_scenarios(write_lines(tmp_path / "s.jsonl", [good, "", "{oops"]))
    with pytest.raises(UserError, match=r":2: scenario id 'm' already used on line 1"):
        load_scenarios(write_lines(tmp_path / "s.jsonl", [good, good]))
    with pytest.raises(UserError, match=r":1: scenario is missing field 'kind'"):
        load_scenarios(write_lines(tmp_path / "s.jsonl", ['{"id": "x", "intent": "y"}']))
    with pytest.raises(UserError, match="not found"):
        load_scenarios(tmp_path / "missing.jsonl")


def test_lost_in_conversation_math(shared_data):
    result = build_scenarios(shared_data / "lost_in_conversation" / "sharded_gsm8k_train.json")
    first = result.scenarios[0]
    assert first.id == "sharded-GSM8K/0" and first.kind == "math" and first.answer == "16"
    assert first.shards[0] == "How many seashells did Leigh have?" and len(first.shards) == 4
    assert first.full_prompt.startswith("Mimi picked up 2 dozen seashells")
    assert first.intent == ("You are a user chatting with an assistant language model to get the answer to a math "
                            f"problem: {first.full_prompt}")
    report = result.to_dict()
    assert report["records_read"] == 698
    assert report["scenarios"] + report["skipped"] == 698  # every record accounted for
    assert len({s.id for s in result.scenarios}) == len(result.scenarios)
    assert report["renamed_duplicate_ids"] > 0  # the file reuses task ids for different shardings


def test_sharded_translation_is_refused(shared_data):
    with pytest.raises(UserError, match="sharded translation"):
        build_scenarios(shared_data / "lost_in_conversation" / "sharded_translation.json")


def test_humaneval_code(shared_data):
    result = build_scenarios(shared_data / "humaneval" / "HumanEval.jsonl.gz", kind="code", limit=5, seed=1)
    assert len(result.scenarios) == 5 and result.records_read == 164 and result.not_drawn == 159
    again = build_scenarios(shared_data / "humaneval" / "HumanEval.jsonl.gz", kind="code", limit=5, seed=1)
    assert [s.id for s in again.scenarios] == [s.id for s in result.scenarios]
    for scenario in result.scenarios:
        assert scenario.kind == "code" and scenario.entry_point and "def check" in scenario.tests
        assert scenario.shards[0].startswith(f"Write a Python function `def {scenario.entry_point}(")
        assert scenario.entry_point in scenario.full_prompt and scenario.prompt_code.strip() in scenario.full_prompt
    with pytest.raises(UserError, match="holds code tasks, not --kind math"):
        build_scenarios(shared_data / "humaneval" / "HumanEval.jsonl.gz", kind="math")


def test_code_shards_goal_details_then_examples():
    prompt = ('def add(a: int, b: int) -> int:\n    """Add two numbers.\n\n    Both are positive.\n'
              '    >>> add(1, 2)\n    3\n    """\n')
    assert code_shards(prompt, "add") == ["Write a Python function `def add(a: int, b: int) -> int`: Add two numbers.",
                                          "Both are positive.", "Examples:\n>>> add(1, 2)\n3"]


def test_plain_gsm8k_counts_skips(tmp_path):
    path = write_lines(tmp_path / "gsm8k.jsonl", [
        json.dumps({"question": "2 + 2?", "answer": "2 + 2 = 4\n#### 4"}),
        json.dumps({"question": "Big?", "answer": "#### 1,234"}),
        json.dumps({"question": "No gold", "answer": "four"}),
        json.dumps([1, 2]),
        "{torn",
    ])
    result = build_scenarios(path)
    assert [(s.id, s.shards, s.answer) for s in result.scenarios] == [("gsm8k-1", ["2 + 2?"], "4"),
                                                                      ("gsm8k-2", ["Big?"], "1234")]
    assert result.skipped == {"answer without '#### N'": 1, "not a JSON object": 1, "not valid JSON": 1}
    assert result.records_read == 5


def test_unrecognised_and_bad_options(tmp_path):
    with pytest.raises(UserError, match="not a recognised task file"):
        build_scenarios(write_lines(tmp_path / "x.jsonl", ['{"text": "hi"}']))
    with pytest.raises(UserError, match="--split applies to a prepared data folder"):
        build_scenarios(write_lines(tmp_path / "g.jsonl", ['{"question": "q", "answer": "#### 1"}']), split="test")
    with pytest.raises(UserError, match="--kind must be one of"):
        build_scenarios(None, kind="poem")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from userloop.data.prepare import PrepareConfig, prepare
    from userloop.testbed import generate

    root = tmp_path_factory.mktemp("scenarios")
    raw = generate(30, seed=5).write(root / "raw")
    prepare([str(raw / "conversations.jsonl")], root / "prepared", PrepareConfig())
    return root / "prepared"


def test_open_intents_from_a_prepared_folder(prepared):
    result = build_scenarios(prepared, split="test")
    assert result.scenarios and result.records_read == len(result.scenarios) + sum(result.skipped.values())
    for scenario in result.scenarios:
        assert scenario.kind == "open" and scenario.shards == [] and scenario.intent
        assert scenario.metadata["split"] == "test"
    with pytest.raises(UserError, match="has no 'dev' split"):
        build_scenarios(prepared, split="dev")


def test_request_turns_an_intent_into_a_one_turn_request():
    assert request("You are a user chatting with an assistant language model to write a poem.") == \
        "Please help me write a poem."
    assert request("Sum 2 and 3.") == "Sum 2 and 3."


def test_cli_build(tmp_path, shared_data):
    runner = CliRunner()
    out = tmp_path / "code.jsonl"
    result = runner.invoke(app, ["scenarios", "build", "--source", str(shared_data / "humaneval" / "HumanEval.jsonl.gz"),
                                 "--out", str(out), "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert len(load_scenarios(out)) == 3 and "3 scenarios" in result.output
    bad = runner.invoke(app, ["scenarios", "build", "--source", str(tmp_path / "nope.json"), "--out", str(out)])
    assert bad.exit_code == 2 and "not found" in bad.stderr and "Traceback" not in bad.output


def test_gzip_humaneval_style_file_is_read(tmp_path):
    path = tmp_path / "tiny.jsonl.gz"
    with gzip.open(path, "wt") as out:
        out.write(json.dumps({"task_id": "T/0", "prompt": 'def f(x):\n    """Return x."""\n',
                              "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"}) + "\n")
    (scenario,) = build_scenarios(path).scenarios
    assert scenario.id == "T/0" and scenario.shards == ["Write a Python function `def f(x)`: Return x."]
