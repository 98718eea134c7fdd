"""UserEval: the win-rate arithmetic (both orders, ties, inconsistent orders), judges, and an end-to-end run."""

import json

import orjson
import pytest

from userloop.rlhi.pairwise_judges import (
    Comparison,
    ModelJudge,
    TestbedJudge,
    inconsistent,
    pairwise_verdicts,
    parse_preference,
)
from userloop.rlhi.usereval import UserEvalConfig, eval_personal, judge_both_orders, win_rate

# The judge's preference in the order with the policy's answer first (A = policy) and in the swapped
# order (A = baseline), and the verdict for the policy.
TABLE = [
    ("A", "B", 1.0),      # policy preferred in both orders: win
    ("B", "A", 0.0),      # baseline preferred in both orders: loss
    ("A", "A", 0.5),      # the judge always picks the first shown: inconsistent, a tie
    ("B", "B", 0.5),      # always the second shown: inconsistent, a tie
    ("tie", "tie", 0.5),  # tie in both orders
    ("A", "tie", 1.0),    # policy preferred in one order, tie in the other: win
    ("tie", "A", 0.0),    # baseline preferred in one order, tie in the other: loss
]


def test_verdicts_from_both_orders():
    first, second, expected = zip(*TABLE, strict=True)
    assert pairwise_verdicts(first, second) == list(expected)
    assert inconsistent(first, second) == 2


def test_position_swap_is_symmetric():
    """Swapping which policy is 'the policy' turns wins into losses and keeps ties."""
    first, second, expected = zip(*TABLE, strict=True)
    swapped = pairwise_verdicts(second, first)
    assert swapped == [1.0 - v for v in expected]


def test_win_rate_counts_ties_half():
    summary = win_rate([1.0, 1.0, 0.5, 0.0])
    assert summary["win_rate"] == 0.625
    assert (summary["wins"], summary["ties"], summary["losses"], summary["requests"]) == (2, 1, 1, 4)
    low, high = summary["ci95"]
    assert 0 <= low <= 0.625 <= high <= 1
    assert win_rate([0.5] * 10)["ci95"] == [0.5, 0.5]
    assert win_rate([])["win_rate"] is None


def test_bad_preferences_and_lengths_are_refused():
    with pytest.raises(ValueError):
        pairwise_verdicts(["A"], ["C"])
    with pytest.raises(ValueError):
        pairwise_verdicts(["A"], [])


@pytest.mark.parametrize(("answer", "value"), [('{"better": "A"}', "A"), ('{"better": "b"}', "B"), ('ok {"better": "Tie"}', "tie"),
                                                ('{"better": "C"}', None), ("A", None), ('{"better": 1}', None)])
def test_parse_preference(answer, value):
    assert parse_preference(answer)[0] == value


BRIEF = {"expertise": "novice", "detail": "brief", "tone": "casual", "structure": "prose"}
DETAILED = {"expertise": "expert", "detail": "detailed", "tone": "formal", "structure": "structured"}
SHORT = "Sure! Just boil it for ten minutes and you're done."
LONG = "Certainly. Therefore:\n" + "\n".join(f"- Consider the comprehensive methodological consideration number {i}." for i in range(30))
PROMPT = [{"role": "user", "content": "How do I cook an egg?"}]


def test_testbed_judge_is_exact_and_personal():
    judge = TestbedJudge({"brief": BRIEF, "detailed": DETAILED})
    items = [(Comparison("brief", None, PROMPT, SHORT, LONG), Comparison("brief", None, PROMPT, LONG, SHORT)),
             (Comparison("detailed", None, PROMPT, SHORT, LONG), Comparison("detailed", None, PROMPT, LONG, SHORT)),
             (Comparison("brief", None, PROMPT, SHORT, SHORT), Comparison("brief", None, PROMPT, SHORT, SHORT))]
    personal = judge_both_orders(judge, items, personalised=True)
    assert personal["verdicts"] == [1.0, 0.0, 0.5]
    assert personal["summary"]["inconsistent_orders"] == 0
    overall = judge_both_orders(judge, items, personalised=False)   # one verdict for both users: persona-agnostic
    assert overall["verdicts"][0] == overall["verdicts"][1]
    assert judge.overall_score(SHORT) == pytest.approx((judge.personal_score("brief", SHORT) + judge.personal_score("detailed", SHORT)) / 2)


def test_model_judge_sees_the_persona_only_when_personalised(tmp_path):
    from userloop.models import load_model

    script = tmp_path / "judge.json"
    script.write_text(json.dumps({"The user:": '{"better": "A"}', "*": '{"better": "B"}'}))
    judge = ModelJudge(load_model(f"scripted:{script}"))
    items = [(Comparison("u", "A novice.", PROMPT, SHORT, LONG), Comparison("u", "A novice.", PROMPT, LONG, SHORT))]
    assert judge_both_orders(judge, items, personalised=True)["verdicts"] == [0.5]   # always "A": position bias, a tie
    assert judge_both_orders(judge, items, personalised=False)["verdicts"] == [0.5]  # always "B"


def test_model_judge_invalid_answers_are_ties(tmp_path):
    from userloop.models import load_model

    script = tmp_path / "judge.json"
    script.write_text(json.dumps(["no", "still no"]))
    judge = ModelJudge(load_model(f"scripted:{script}"))
    assert judge.compare([Comparison("u", None, PROMPT, SHORT, LONG)], personalised=True) == ["tie"]
    assert judge.counts["invalid"] == 1


def test_eval_personal_end_to_end(prepared, tmp_path, small_classifier):
    """A policy that always answers briefly against one that always answers at length, judged exactly."""
    brief, long = tmp_path / "brief.json", tmp_path / "long.json"
    brief.write_text(json.dumps([SHORT]))
    long.write_text(json.dumps([LONG]))
    out = tmp_path / "eval"
    report = eval_personal(prepared, out, UserEvalConfig(policy=f"scripted:{brief}", baseline=f"scripted:{long}", max_requests=0))
    n = report["requests_used"]
    assert n == report["requests"]["opening_requests"] > 0
    truth = [json.loads(line) for line in (prepared.parent / "raw" / "truth.jsonl").read_text().splitlines()]
    personas = {t["user_id"]: t["persona"] for t in truth if t["type"] == "user"}
    rows = [orjson.loads(line) for line in (out / "comparisons.jsonl").read_bytes().splitlines()]
    assert len(rows) == n
    wins = 0.0
    for row in rows:   # the personalised verdict follows the true persona's detail preference
        from userloop.testbed import score

        mine, theirs = score(personas[row["user_id"]], SHORT), score(personas[row["user_id"]], LONG)
        wins += row["personalisation"]["verdict"]
        assert row["personalisation"]["verdict"] == (1.0 if mine > theirs else 0.0 if mine < theirs else 0.5)
        assert row["overall"]["verdict"] == rows[0]["overall"]["verdict"]   # persona-agnostic: the same everywhere
    assert report["personalisation"]["win_rate"] == pytest.approx(wins / n, abs=1e-4)
    assert report["mean_persona_match"]["policy"] != report["mean_persona_match"]["baseline"]
    assert orjson.loads((out / "report.json").read_bytes())["personalisation"] == report["personalisation"]


def test_eval_personal_cli(prepared, tmp_path, small_classifier):
    from typer.testing import CliRunner

    from userloop.cli import app

    brief, long = tmp_path / "brief.json", tmp_path / "long.json"
    brief.write_text(json.dumps([SHORT]))
    long.write_text(json.dumps([LONG]))
    runner = CliRunner()
    result = runner.invoke(app, ["eval-personal", "--policy", f"scripted:{brief}", "--baseline", f"scripted:{long}",
                                 "--data", str(prepared), "--out", str(tmp_path / "eval"), "--max-requests", "5"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "personalisation  win rate" in result.stdout and "overall" in result.stdout
    bad = runner.invoke(app, ["eval-personal", "--policy", "nonsense", "--baseline", f"scripted:{long}",
                              "--data", str(prepared), "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown model spec" in bad.output
