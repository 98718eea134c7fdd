"""User-based rewards: which requests got no feedback, sampling, best-vs-worst pairing, the whole step."""

import json
from collections import Counter

import orjson
import pytest

from userloop.conversation import Conversation, Message
from userloop.rlhi.followups import Labels, extract_followups
from userloop.rlhi.user_rewards import (
    RewardsConfig,
    UserRequest,
    best_worst_pairs,
    sample_candidates,
    user_based_rewards,
    user_requests,
)
from userloop.testbed import score


def request(i: int, persona: str | None = "A novice.") -> UserRequest:
    return UserRequest(f"c{i}", f"u{i}", persona, [{"role": "user", "content": f"request {i}"}], 0, False)


def test_best_worst_pairs_pick_the_extremes_and_skip_ties():
    counts = Counter()
    rows = best_worst_pairs([request(0), request(1), request(2, None)],
                            [["a", "b", "c"], ["x", "y"], ["p", "q", "r", "s"]],
                            [[0.2, 0.9, 0.1], [0.5, 0.5 + 1e-12], [0.3, 0.3, 0.7, 0.7]], counts)
    assert counts == Counter(paired=2, all_tied=1)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [("b", "c"), ("r", "p")]  # first of equals
    assert rows[0]["chosen_score"] == 0.9 and rows[0]["rejected_score"] == 0.1
    assert rows[0]["prompt"] == [{"role": "user", "content": "request 0"}] and rows[0]["chosen"][0]["role"] == "assistant"
    assert rows[1]["persona"] is None and rows[1]["user_id"] == "u2" and rows[1]["feedback"] is None


def test_pairs_are_written_in_part_one_format_with_scores(tmp_path):
    import datasets

    from userloop.rlhi.pairs import write_pairs

    rows = best_worst_pairs([request(0)], [["good", "bad"]], [[1.0, 0.0]])
    write_pairs(rows, tmp_path / "pairs.parquet", tmp_path / "pairs_dataset", scores=True)
    loaded = datasets.load_from_disk(str(tmp_path / "pairs_dataset")).to_list()
    assert loaded == rows
    write_pairs([], tmp_path / "empty.parquet", tmp_path / "empty", scores=True)
    assert "chosen_score" in datasets.load_from_disk(str(tmp_path / "empty")).column_names


def test_best_worst_pairs_refuse_mismatched_lengths():
    with pytest.raises(ValueError):
        best_worst_pairs([request(0)], [["a", "b"]], [[1.0]])


def test_requests_without_feedback_follow_the_labels():
    said = ["Write a poem about rain.", "Too long, make it shorter.", "Thanks!", "Now one about snow."]
    messages = []
    for turn in said:
        messages += [Message("user", turn), Message("assistant", f"answer to {turn}")]
    conversation = Conversation(messages[:-1], id="c", user_id="u")   # the last request is unanswered
    followups = extract_followups(conversation)
    labels = [Labels("re_attempt", "make_aware_with_correction", "Too long"), Labels("none", "positive", "Thanks!"),
              Labels("new_request", "none", None)]
    counts = Counter()
    requests = user_requests([conversation], list(zip(followups, labels, strict=True)), {"u": "A novice."}, counts)
    assert [(r.index, r.feedback) for r in requests] == [(0, True), (2, True), (6, False)]
    assert counts["skipped_not_a_request"] == 1   # "Thanks!" asks for nothing
    assert requests[2].prompt[-1] == {"role": "user", "content": "Now one about snow."} and requests[2].persona == "A novice."


def test_sample_candidates_gives_n_per_prompt(tmp_path):
    from userloop.models import load_model

    script = tmp_path / "policy.json"
    script.write_text(json.dumps(["one", "two", "three"]))
    seen = []
    candidates = sample_candidates(load_model(f"scripted:{script}"), [[{"role": "user", "content": "hi"}]] * 2, n=3,
                                   batch_size=1, on_progress=seen.append)
    assert candidates == [["one", "two", "three"]] * 2 and seen == [1, 1]


STYLES = ["Sure! Boil it.", "Certainly. " + " ".join(["Therefore, one would carefully consider the comprehensive procedure."] * 12),
          "- Step one: boil.\n- Step two: wait.\n- Step three: eat!", "Ok, so basically you just kinda boil it, cool!"]


def test_user_based_rewards_end_to_end(prepared, tmp_path, small_classifier):
    import pyarrow.parquet as pq

    script = tmp_path / "policy.json"
    script.write_text(json.dumps(STYLES))
    out = tmp_path / "rewards"
    config = RewardsConfig(policy=f"scripted:{script}", scorer="testbed", max_requests=30)
    report = user_based_rewards(prepared, out, config)
    assert report["requests_used"] == 30 and report["candidates"] == 120
    assert report["pairs"] + report["skipped_all_tied"] == 30 and report["pairs"] > 0
    assert report["requests"]["requests_without_feedback"] >= 30
    truth = {json.loads(line)["user_id"]: json.loads(line)["persona"]
             for line in (prepared.parent / "raw" / "truth.jsonl").read_text().splitlines() if '"type":"user"' in line}
    rows = pq.read_table(out / "pairs.parquet").to_pylist()
    assert len(rows) == report["pairs"]
    for row in rows:
        assert row["chosen_score"] > row["rejected_score"]
        assert row["chosen_score"] == pytest.approx(score(truth[row["user_id"]], row["chosen"][0]["content"]))
        assert row["prompt"][-1]["role"] == "user" and row["prompt"][0]["role"] != "system"   # persona is a column
    assert orjson.loads((out / "report.json").read_bytes())["pairs"] == report["pairs"]


def test_rlhi_rewards_cli(prepared, tmp_path, small_classifier):
    from typer.testing import CliRunner

    from userloop.cli import app

    script = tmp_path / "policy.json"
    script.write_text(json.dumps(STYLES))
    runner = CliRunner()
    result = runner.invoke(app, ["rlhi", "rewards", "--policy", f"scripted:{script}", "--data", str(prepared),
                                 "--out", str(tmp_path / "out"), "--n", "3", "--max-requests", "10"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "10 requests without feedback" in result.stdout and (tmp_path / "out" / "pairs_dataset").is_dir()
    bad = runner.invoke(app, ["rlhi", "rewards", "--policy", f"scripted:{script}", "--data", str(prepared),
                              "--out", str(tmp_path / "bad"), "--n", "1"])
    assert bad.exit_code == 2 and "n must be at least 2" in bad.output
