"""eval-validity: rank correlations and the bootstrap, the graded panel assistants, and a tiny end-to-end run."""

import json

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.metrics.validity import OUTCOMES, ValidityConfig, conversation_outcomes, eval_validity, held_out_problems
from userloop.models import load_model
from userloop.models.registry import role_spec
from userloop.simulate.panel import DEFAULT_PANEL, ESTIMATE, Knobs, complaints, read_panel, with_scenarios
from userloop.simulate.records import SimulatedConversation, SimulatedMessage
from userloop.simulate.scenarios import Scenario, write_scenarios
from userloop.statistics import average_ranks, bootstrap_resamples, kendall_tau_b, percentile_interval, spearman

# --------------------------------------------------------------------------- statistics on hand-made tables


def test_rank_correlations_match_their_definitions_with_ties():
    assert average_ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # ties on both sides (values checked against scipy.stats.spearmanr / kendalltau)
    assert spearman([1, 2, 2, 4, 5], [2, 1, 3, 3, 5]) == pytest.approx(0.7631578947368421)
    assert kendall_tau_b([1, 2, 2, 4, 5], [2, 1, 3, 3, 5]) == pytest.approx(0.6666666666666666)
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0) and kendall_tau_b([3, 2, 1], [1, 2, 3]) == -1.0


def test_a_constant_side_has_no_rank_correlation():
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert kendall_tau_b([1, 2, 3], [0.5, 0.5, 0.5]) is None
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


def test_bootstrap_resamples_are_seeded_and_the_interval_skips_undefined_replicates():
    values = [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    resamples = bootstrap_resamples(len(values), 500, seed=1)
    assert resamples == bootstrap_resamples(len(values), 500, seed=1) != bootstrap_resamples(len(values), 500, seed=2)
    assert len(resamples) == 500 and all(len(r) == 8 and set(r) <= set(range(8)) for r in resamples)
    low, high = percentile_interval([sum(values[i] for i in r) / len(r) for r in resamples])
    assert 0.0 <= low < sum(values) / len(values) < high <= 1.0
    assert percentile_interval([0.25] * 10) == (0.25, 0.25)
    assert percentile_interval([None, 1.0, None, 1.0]) == (1.0, 1.0)
    assert percentile_interval([None, None]) is None


# --------------------------------------------------------------------------- the graded panel assistants
PROBLEM = Scenario(id="p1", kind="math", intent="You are a user chatting with an assistant language model to add up a bill.",
                   shards=["I need the total cost of my shopping", "I'm buying 3 books at $12 each", "plus 2 pens at $4 each"],
                   full_prompt="I'm buying 3 books at $12 each, plus 2 pens at $4 each. What is the total cost?", answer="44",
                   metadata={"testbed_persona": {"expertise": "novice", "detail": "brief", "tone": "casual",
                                                 "structure": "prose"}})
OTHER = Scenario(id="p2", kind="math", intent="You are a user to plan a trip.", shards=["how far do I go", "I drive 80 km"],
                 full_prompt="I drive at 80 km/h for 7 hours. How far do I go?", answer="560")


@pytest.fixture
def bank(tmp_path):
    return write_scenarios([PROBLEM, OTHER], tmp_path / "bank.jsonl")


def reply(bank, knobs: str, *users: str, seed: int = 0) -> str:
    model = load_model(f"testbed:graded?{knobs}&scenarios={bank}")
    messages = []
    for number, text in enumerate(users):
        if number:
            messages.append({"role": "assistant", "content": "..."})
        messages.append({"role": "user", "content": text})
    return model.reply(messages, seed)


def test_error_rate_decides_the_answer_with_every_shard_known(bank):
    assert all("the answer is 44." in reply(bank, "error=0", PROBLEM.full_prompt, seed=s) for s in range(10))
    assert not any("the answer is 44." in reply(bank, "error=1", PROBLEM.full_prompt, seed=s) for s in range(10))
    assert "the answer is 560." in reply(bank, "error=0", OTHER.full_prompt)  # the problem is found by its content


def test_replies_depend_on_the_conversation_and_seed_not_on_the_bank_path(bank, tmp_path):
    copy = tmp_path / "elsewhere.jsonl"
    copy.write_text(bank.read_text())
    assert reply(bank, "error=0.5", PROBLEM.full_prompt, seed=3) == reply(copy, "error=0.5", PROBLEM.full_prompt, seed=3)


def test_asking_vs_answering_on_incomplete_information(bank):
    asked = reply(bank, "ask=always", PROBLEM.shards[0])
    assert "the remaining details" in asked and ESTIMATE not in asked
    hasty = reply(bank, "ask=never&error=0", PROBLEM.shards[0])
    assert ESTIMATE in hasty and "44" not in hasty
    # once every number is there, even the hasty one answers, but anchored on its premature attempt
    messages = [{"role": "user", "content": PROBLEM.shards[0]}, {"role": "assistant", "content": hasty},
                {"role": "user", "content": " ".join(PROBLEM.shards[1:])}]
    model = load_model(f"testbed:graded?ask=never&error=0&anchor=1&scenarios={bank}")
    assert "the answer is 44." not in model.reply(messages, 0)


def test_length_and_style_knobs(bank):
    verbose = reply(bank, "error=0&length=verbose", PROBLEM.full_prompt)
    concise = reply(bank, "error=0&length=concise", PROBLEM.full_prompt)
    assert len(verbose.split()) > 2 * len(concise.split())
    assert complaints("way too long, shorter pls") == ["too_long"]
    assert complaints("can you use bullet points") == ["wants_structure"]
    long_first = "error=0&length=style&style=match"
    after = [reply(bank, long_first, PROBLEM.full_prompt, "can you use bullet points", seed=s) for s in range(5)]
    assert all("\n- " in text for text in after)  # a matching assistant follows the complaint
    ignored = [reply(bank, "error=0&style=ignore", PROBLEM.full_prompt, "can you write it as a paragraph", seed=s)
               for s in range(5)]
    first = [reply(bank, "error=0&style=ignore", PROBLEM.full_prompt, seed=s) for s in range(5)]
    assert ["\n- " in a for a in ignored] == ["\n- " in b for b in first]  # one that ignores the persona keeps its style


def test_bad_specs_and_panels_are_one_line_errors(bank, tmp_path):
    with pytest.raises(UserError, match="no knob 'speed'"):
        Knobs.parse("speed=3")
    with pytest.raises(UserError, match=r"error must be a number in \[0, 1\]"):
        Knobs.parse("error=2")
    with pytest.raises(UserError, match="ask must be one of"):
        Knobs.parse("ask=maybe")
    with pytest.raises(UserError, match="needs scenarios=FILE"):
        load_model("testbed:graded?error=0")
    with pytest.raises(UserError, match="unknown model spec 'testbed:nothing' for the assistant"):
        role_spec("assistant", "testbed:nothing")
    assert with_scenarios("testbed:graded", "S.jsonl") == "testbed:graded?scenarios=S.jsonl"
    assert with_scenarios("testbed:graded?error=0", "S.jsonl") == "testbed:graded?error=0&scenarios=S.jsonl"
    assert with_scenarios("hf:./model", "S.jsonl") == "hf:./model"
    panel = tmp_path / "panel.yaml"
    panel.write_text("assistants: {a: 'testbed:graded', b: 'mock'}\nexpected_order: [a]\n")
    with pytest.raises(UserError, match="expected_order must list every assistant"):
        read_panel(panel)
    panel.write_text("assistants: {a: 'gpt'}\n")
    with pytest.raises(UserError, match="at least two"):
        read_panel(panel)


def test_the_default_panel_ships_graded_assistants():
    panel = read_panel()
    assert DEFAULT_PANEL.is_file() and len(panel.assistants) >= 4
    assert sorted(panel.expected_order) == sorted(panel.assistants)
    for spec in panel.assistants.values():
        assert role_spec("assistant", spec) == spec


# --------------------------------------------------------------------------- outcomes of one conversation
def test_feedback_is_a_follow_up_to_an_answer_that_reveals_nothing_new():
    def record(*turns, end="solved", solved=True):
        messages = [SimulatedMessage(role, text, classification=kind) for role, text, kind in turns]
        return SimulatedConversation(messages, scenario_id="p1", sample=0, kind="math", intent="i", setting="multi_turn",
                                     end_reason=end, solved=solved, max_user_turns=8, seed=0)

    revealing = record(("user", PROBLEM.shards[0], None), ("assistant", "my estimate is 30", "answer_attempt"),
                       ("user", PROBLEM.shards[1], None), ("assistant", "the answer is 44", "answer_attempt"))
    complaining = record(("user", PROBLEM.full_prompt, None), ("assistant", "the answer is 45", "answer_attempt"),
                         ("user", "that's wrong, the answer should be 44", None),
                         ("assistant", "the answer is 44", "answer_attempt"))
    one = conversation_outcomes(revealing, PROBLEM)
    two = conversation_outcomes(complaining, PROBLEM)
    assert set(one) == set(OUTCOMES)
    assert (one["feedback"], one["satisfied"], one["success"], one["turns"], one["end_solved"]) == (0, 1, 1, 2, 1)
    assert (two["feedback"], two["satisfied"], two["success"]) == (1, 0, 1)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """A prepared testbed folder (120 users: a test split with a few math problems)."""
    from userloop.data.prepare import PrepareConfig, prepare
    from userloop.testbed import generate

    root = tmp_path_factory.mktemp("validity")
    generate(120, seed=3).write(root / "raw")
    prepare([str(root / "raw" / "conversations.jsonl")], root / "prepared", PrepareConfig(splits="50/25/25"))
    return root


def test_eval_validity_end_to_end_ranks_a_broken_assistant_below_a_good_one(testbed, tmp_path):
    data = testbed / "prepared"
    problems = held_out_problems(data, 4, seed=0)
    assert len(problems) == 4 and all(p.kind == "math" and p.full_prompt in p.intent for p in problems)
    # a scripted simulator that says the goal shard and nothing more
    first = tmp_path / "first.json"
    first.write_text(json.dumps({**{p.full_prompt: p.shards[0] for p in problems}, "*": "<|endconversation|>"}))
    panel = tmp_path / "panel.yaml"
    panel.write_text("assistants:\n  good: testbed:graded?error=0&ask=always\n  middling: testbed:graded?error=0.5\n"
                     "  broken: testbed:graded?error=1&ask=never\nexpected_order: [good, middling, broken]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval-validity", "--out", str(out), "--data", str(data), "--panel", str(panel),
                                      "--sim", "mock", "--sim", f"first=scripted:{first}", "--intents", "4",
                                      "--bootstrap", "50", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((out / "report.json").read_text())
    assert set(report["outcomes"]) == {"ground_truth", "mock", "first", "naive"}
    truth = report["outcomes"]["ground_truth"]
    assert truth["good"]["success"] > truth["broken"]["success"] == 0.0
    assert report["ranks"]["ground_truth"]["broken"] == 3.0 and report["ranks"]["ground_truth"]["good"] < 3.0
    assert set(report["validity"]) == {"mock", "first", "naive"}
    for row in report["validity"].values():
        assert set(row) == {"spearman", "kendall", "mae"} and set(row["mae"]) == set(OUTCOMES)
        assert set(row["mae"]["success"]) == {"value", "ci95"}
    naive = report["outcomes"]["naive"]
    assert all(o["turns"] == 1.0 for o in naive.values()) and naive["good"]["success"] == 1.0
    assert report["validity"]["naive"]["mae"]["turns"]["value"] > 0
    drops = report["multi_turn_drop"]
    assert set(drops) == {"good", "middling", "broken"}
    assert set(drops["good"]["multi_turn"]) == {"ground_truth", "mock", "first"}
    assert drops["good"]["single_turn"] == 1.0
    # rerunning resumes every run folder and gives the same report
    again = eval_validity(ValidityConfig(sim=("mock", f"first=scripted:{first}"), data=str(data), panel=str(panel),
                                         intents=4, bootstrap=50), out)
    assert again["outcomes"] == report["outcomes"] and again["validity"] == report["validity"]
    # the simulators run raw (no guardrails) by default, recorded in every run folder and the report
    assert report["config"]["guardrails"] == "off"
    assert json.loads((out / "runs" / "first" / "good" / "run.json").read_text())["config"]["guardrails"] == "off"
    assert "guardrails off" in (out / "report.md").read_text()
    # a moved folder resumes too: the graded assistants' specs name the run's own scenario file
    moved = tmp_path / "moved"
    out.rename(moved)
    run_file = (moved / "runs" / "first" / "good" / "run.json").read_bytes()
    assert str(out / "scenarios.jsonl") in run_file.decode()
    moved_again = eval_validity(ValidityConfig(sim=("mock", f"first=scripted:{first}"), data=str(data), panel=str(panel),
                                               intents=4, bootstrap=50), moved)
    assert moved_again["outcomes"] == report["outcomes"]
    assert (moved / "runs" / "first" / "good" / "run.json").read_bytes() == run_file  # resumed, not restarted


def test_reserved_simulator_names_are_refused(testbed, tmp_path):
    with pytest.raises(UserError, match="reserved"):
        eval_validity(ValidityConfig(sim=("naive=mock",), data=str(testbed / "prepared"), intents=2), tmp_path / "o")
