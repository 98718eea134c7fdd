"""Interactive testbed users (``testbed:users``): they read free text, act by the logged users' policy, and,
against the scripted assistant as a chat model (``testbed:assistant``), reproduce the logged dialogues' statistics."""

import asyncio
import math
from collections import Counter

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.models.base import ChatModel, GenerationParams
from userloop.models.mock import MockModel
from userloop.models.registry import load_role
from userloop.simulate import testbed_users as users_module
from userloop.simulate.engine import Job, SimulationEngine
from userloop.simulate.runs import read_records
from userloop.simulate.scenarios import load_scenarios
from userloop.simulate.testbed_users import POLICY_EVENT, read_reply
from userloop.testbed import generate, read_truth
from userloop.testbed.dialogue import MAX_USER_TURNS
from userloop.testbed.families import family_modules
from userloop.testbed.population import generate_user, user_dialogue

# 95% family-wise over the 11 statistics compared (4 end reasons, 6 feedback types, turns per conversation):
# Bonferroni gives z = 2.84 per comparison; 3 is used.
Z = 3.0
END_REASONS = ("satisfied", "tolerated", "gave_up", "turn_limit")
FEEDBACK_TYPES = ("none", "make_aware_with_correction", "positive", "ask_for_clarification", "repeat_rephrase",
                  "make_aware_without_correction")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """A raw testbed folder of 100 users (about 400 conversations)."""
    folder = tmp_path_factory.mktemp("testbed")
    population = generate(100, seed=11)
    population.write(folder)
    return folder, population


def _simulate(scenarios, assistant: ChatModel, seed: int = 0):
    engine = SimulationEngine(assistant, users_module.TestbedUsers(), max_user_turns=MAX_USER_TURNS, seed=seed,
                              assistant_params=GenerationParams(max_new_tokens=4096))
    records = []
    asyncio.run(engine.run([Job(scenario, 0) for scenario in scenarios], records.append))
    return sorted(records, key=lambda record: record.scenario_id)


@pytest.fixture(scope="module")
def conversations(testbed):
    folder, _ = testbed
    scenarios = users_module.testbed_scenarios(folder).scenarios
    return scenarios, _simulate(scenarios, users_module.TestbedAssistant())


def test_both_specs_resolve_through_the_registry():
    assert isinstance(load_role("user", "testbed:users"), users_module.TestbedUsers)
    assistant = load_role("assistant", "testbed:assistant")
    assert isinstance(assistant, ChatModel) and assistant.name == "testbed:assistant"


def test_regenerated_dialogues_are_the_logged_ones():
    _, records, _ = generate_user(5, 3)
    for number, record in enumerate(records):
        _, dialogue = user_dialogue(5, 3, number)
        assert [turn.text for turn in dialogue.turns] == [turn["content"] for turn in record["conversation"]]
    with pytest.raises(UserError, match="has no conversation"):
        user_dialogue(5, 3, len(records))


def test_one_scenario_per_conversation_with_what_the_user_needs(testbed):
    folder, _population = testbed
    users, truth = read_truth(folder)
    scenarios = users_module.testbed_scenarios(folder).scenarios
    assert len(scenarios) == len(truth)
    kinds = Counter(scenario.kind for scenario in scenarios)
    assert set(kinds) == {"math", "code", "open"}
    for scenario in scenarios:
        row = truth[scenario.id]
        assert scenario.shards == row["tasks"][0]["shards"] and scenario.metadata["user_id"] == row["user_id"]
        assert scenario.metadata["persona"] == users[row["user_id"]]["description"]
    assert len(users_module.testbed_scenarios(folder, limit=7).scenarios) == 7


def test_the_sandbox_check_of_a_code_task_passes_the_reference_and_fails_the_bug(testbed):
    folder, _ = testbed
    code = next(s for s in users_module.testbed_scenarios(folder).scenarios if s.kind == "code")
    _, dialogue = user_dialogue(11, code.metadata["user_index"], code.metadata["conversation"])
    task = dialogue.tasks[0]
    function = task.data["function"]
    assert read_reply(task, len(task.shards), f"```python\n{function.code}\n```").wrong is False
    wrong = read_reply(task, len(task.shards), f"```python\n{function.bug}\n```")
    assert wrong.wrong and wrong.correction == function.bug_note


def test_the_user_reads_acts_and_checks_from_free_text(testbed):
    folder, _ = testbed
    math_scenario = next(s for s in users_module.testbed_scenarios(folder).scenarios if s.kind == "math")
    _, dialogue = user_dialogue(11, math_scenario.metadata["user_index"], math_scenario.metadata["conversation"])
    task = dialogue.tasks[0]
    every = len(task.shards)
    answer = task.check["answer"]
    assert read_reply(task, every, f"The total is ${answer}, so the answer is {answer}.").wrong is False
    wrong = read_reply(task, every, f"So the answer is {answer + 1}.")
    assert wrong.wrong and wrong.correction == f"the answer should be {answer}, not {answer + 1}"
    assert read_reply(task, every, "I'm sorry, but I cannot help with that request.").act == "refusal"
    assert read_reply(task, 1, "How much does each item cost?").act == "clarification"
    assert read_reply(task, every, "Budgets are a fascinating topic with a long history.").act == "discussion"


def test_a_refusing_assistant_gets_rephrasings_until_the_user_gives_up(testbed):
    folder, _ = testbed
    scenarios = users_module.testbed_scenarios(folder, limit=20).scenarios
    records = _simulate(scenarios, MockModel(replies=["I'm sorry, but I cannot help with that request."]))
    for record, scenario in zip(records, sorted(scenarios, key=lambda s: s.id)):
        followups = [m.events[0] for m in record.messages[2::2]]
        assert all(event["feedback_type"] == "repeat_rephrase" for event in followups)
        assert record.end_reason == "user_ended" and record.end_events[0]["detail"] == "gave_up"
        patience = scenario.metadata["testbed_persona"]["patience"]
        assert len(followups) == patience


def test_same_seed_and_replies_give_the_same_user_turns(testbed, conversations):
    scenarios, records = conversations
    again = _simulate(scenarios[:40], users_module.TestbedAssistant())
    by_id = {record.scenario_id: record for record in records}
    for record in again:
        assert [m.content for m in record.messages] == [m.content for m in by_id[record.scenario_id].messages]
    other_seed = _simulate(scenarios[:40], users_module.TestbedAssistant(), seed=1)
    assert any([m.content for m in a.messages] != [m.content for m in b.messages] for a, b in zip(again, other_seed))


def test_the_testbed_assistant_answers_testbed_users_only():
    with pytest.raises(UserError, match="testbed:users only"):
        users_module.TestbedAssistant().generate([[{"role": "user", "content": "hello"}]])


def _statistics(conversations):
    """(end reason per conversation, feedback types of the follow-up user turns per conversation, user turns)."""
    return ([c[0] for c in conversations], [c[1] for c in conversations], [c[2] for c in conversations])


def _interactive(record):
    end = {"max_turns": "turn_limit"}.get(record.end_reason) or record.end_events[0]["detail"]
    events = [m.events[0] for m in record.messages if m.role == "user"]
    assert all(event["guardrail"] == POLICY_EVENT for event in events)
    return end, [event["feedback_type"] for event in events[1:]], len(events)


def _logged(row):
    users = [turn for turn in row["turns"] if turn["role"] == "user"]
    return row["end_reason"], [turn["feedback_type"] for turn in users[1:]], len(users)


def _share_and_se(per_conversation, value):
    """The share of ``value`` among all items and its standard error, clustered by conversation (ratio estimator)."""
    hits = [sum(item == value for item in items) for items in per_conversation]
    sizes = [len(items) for items in per_conversation]
    share = sum(hits) / sum(sizes)
    n = len(sizes)
    variance = n / (n - 1) * sum((h - share * m) ** 2 for h, m in zip(hits, sizes)) / sum(sizes) ** 2
    return share, math.sqrt(variance)


def test_interactive_users_reproduce_the_logged_statistics(testbed, conversations):
    """Against testbed:assistant, the interactive users' end-reason shares, follow-up feedback-type shares and
    mean user turns equal the logged dialogues' of the same personas and first tasks within Z standard errors of
    the difference (the two samples taken as independent, which overstates the error of paired samples)."""
    folder, _ = testbed
    _, truth = read_truth(folder)
    scenarios, records = conversations
    assert not [record.error for record in records if record.error]
    interactive = _statistics([_interactive(record) for record in records])
    logged = _statistics([_logged(truth[record.scenario_id]) for record in records])
    for reason in END_REASONS:
        a, b = ([[end] for end in sample[0]] for sample in (interactive, logged))
        (share_a, se_a), (share_b, se_b) = _share_and_se(a, reason), _share_and_se(b, reason)
        assert abs(share_a - share_b) <= Z * math.hypot(se_a, se_b) + 1e-9, (reason, share_a, share_b)
    for feedback_type in FEEDBACK_TYPES:
        (share_a, se_a), (share_b, se_b) = (_share_and_se(sample[1], feedback_type) for sample in (interactive, logged))
        assert abs(share_a - share_b) <= Z * math.hypot(se_a, se_b) + 1e-9, (feedback_type, share_a, share_b)
    turns_a, turns_b = interactive[2], logged[2]
    mean_a, mean_b = sum(turns_a) / len(turns_a), sum(turns_b) / len(turns_b)
    se = math.hypot(*(math.sqrt(_variance(t) / len(t)) for t in (turns_a, turns_b)))
    assert abs(mean_a - mean_b) <= Z * se, (mean_a, mean_b)
    assert set(family_modules()) >= {s.metadata["family"] for s in scenarios}


def _variance(values):
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def test_the_cli_builds_testbed_user_scenarios_and_simulates_them(testbed, tmp_path):
    folder, _ = testbed
    runner = CliRunner()
    scenarios = tmp_path / "scenarios.jsonl"
    built = runner.invoke(app, ["scenarios", "build", "--source", str(folder), "--testbed-users", "--limit", "6",
                                "--out", str(scenarios)])
    assert built.exit_code == 0, built.output
    assert [s.metadata["source"] for s in load_scenarios(scenarios)] == ["testbed_users"] * 6
    ran = runner.invoke(app, ["simulate", "--user", "testbed:users", "--assistant", "testbed:assistant", "--scenarios",
                              str(scenarios), "--max-turns", "10", "--out", str(tmp_path / "run")])
    assert ran.exit_code == 0, ran.output
    records, _ = read_records(tmp_path / "run" / "conversations.jsonl")
    assert len(records) == 6 and {(r.user_model, r.model) for r in records} == {("testbed:users", "testbed:assistant")}
    wrong = runner.invoke(app, ["simulate", "--user", "testbed:scorer", "--assistant", "testbed:assistant",
                                "--scenarios", str(scenarios), "--out", str(tmp_path / "other")])
    assert wrong.exit_code == 2 and "is not a simulated user" in wrong.output
