"""Persona-contrastive mirrors (``rlhi build --mirrors``): who gets a mirror, what the judges decide, the build."""

from __future__ import annotations

import json

import orjson
import pyarrow.parquet as pq
import pytest

from userloop.rlhi.mirrors import mirror_pairs
from userloop.rlhi.pairwise_judges import Comparison, ModelJudge, TestbedJudge
from userloop.rlhi.personas import DerivedPersona
from userloop.testbed import score

PROMPT = [{"role": "user", "content": "How do I repot a fern?"}]
LONG = ("Certainly. Repotting a fern is straightforward. Furthermore, choose a pot one size larger, "
        "loosen the roots gently and water it well afterwards. " * 6).strip()
SHORT = "Use a slightly larger pot, loosen the roots, water well."


def persona(user_id: str, detail: str, tone: str = "formal", text: str | None = None) -> DerivedPersona:
    return DerivedPersona(user_id=user_id, persona=f"{user_id}: {detail}" if text is None else text, expertise="novice",
                          detail=detail, tone=tone, structure="prose", domains=[], language="English",
                          conversations=3, backend="offline")


def pair(i: int, feedback: str, user_id: str = "asker") -> dict:
    """The user asked for a shorter answer: the short rewrite chosen, the long original rejected."""
    return {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": SHORT}],
            "rejected": [{"role": "assistant", "content": LONG}], "user_id": user_id, "persona": "asker: brief",
            "feedback": feedback, "conversation_id": f"c{i}"}


class Always:
    """A pairwise judge that always prefers the original (the long answer) or always the edit, recording what it
    was asked."""

    def __init__(self, verdict: bool) -> None:
        self.verdict, self.asked = verdict, []

    def compare(self, items, personalised):
        assert personalised
        self.asked.extend(items)
        return ["A" if (item.first == LONG) == self.verdict else "B" for item in items]


PERSONAS = [persona("asker", "brief"), persona("terse", "brief"), persona("wordy", "detailed"),
            persona("chatty", "detailed", tone="casual"), persona("nameless", "detailed", text="")]


def test_a_mirror_reverses_the_pair_for_a_user_who_prefers_the_opposite():
    pairs = [pair(0, "This is too long, please make it shorter."), pair(1, "Thanks, that works.")]
    judge = Always(True)
    mirrors, outcomes = mirror_pairs(pairs, PERSONAS, judge)
    assert outcomes == {"passed": 1, "no style change asked": 1}
    [mirror] = mirrors
    assert mirror["user_id"] in ("wordy", "chatty")       # detailed, with a persona text, not the asker
    assert mirror["persona"] == f"{mirror['user_id']}: detailed"
    assert mirror["chosen"] == pairs[0]["rejected"] and mirror["rejected"] == pairs[0]["chosen"]
    assert {k: mirror[k] for k in ("prompt", "feedback", "conversation_id")} == {k: pairs[0][k] for k in ("prompt", "feedback", "conversation_id")}
    assert judge.asked == [Comparison(mirror["user_id"], mirror["persona"], PROMPT, LONG, SHORT),
                           Comparison(mirror["user_id"], mirror["persona"], PROMPT, SHORT, LONG)]   # both orders
    assert mirror_pairs(pairs, PERSONAS, Always(True))[0] == mirrors   # a seeded draw: the same user every run


def test_every_asked_axis_must_be_opposite_and_the_judge_can_refuse():
    both = pair(0, "Too long, and please less casual.")     # wants brief and formal: chatty (detailed, casual) only
    mirrors, _ = mirror_pairs([both], PERSONAS, Always(True))
    assert [m["user_id"] for m in mirrors] == ["chatty"]
    mirrors, outcomes = mirror_pairs([both], PERSONAS, Always(False))
    assert mirrors == [] and outcomes == {"judge rejected": 1}
    mirrors, outcomes = mirror_pairs([both], PERSONAS[:3], Always(True))
    assert mirrors == [] and outcomes == {"no user prefers the opposite": 1}


def test_a_pair_without_feedback_goes_to_any_user_with_another_persona():
    """A user-based reward pair (best vs worst of sampled answers) names no axis: any other user whose persona
    text differs may get its mirror, and the judge alone decides."""
    sampled = {**pair(0, "x"), "feedback": None, "persona": "terse: brief"}
    mirrors, outcomes = mirror_pairs([sampled], [persona("asker", "brief", text="terse: brief"), *PERSONAS[1:]], Always(True))
    assert outcomes == {"passed": 1}
    [mirror] = mirrors
    assert mirror["user_id"] in ("wordy", "chatty") and mirror["feedback"] is None   # not the asker's persona text
    assert mirror["chosen"] == sampled["rejected"] and mirror["rejected"] == sampled["chosen"]
    mirrors, outcomes = mirror_pairs([sampled], PERSONAS, Always(False))
    assert mirrors == [] and outcomes == {"judge rejected": 1}
    mirrors, outcomes = mirror_pairs([sampled], [persona("terse", "brief", text="terse: brief")], Always(True))
    assert mirrors == [] and outcomes == {"no user prefers the opposite": 1}


def test_a_personas_file_record_without_axes_has_them_unknown():
    record = {"user_id": 7, "persona": "Likes ferns."}
    derived = DerivedPersona.from_record(record)
    assert (derived.user_id, derived.persona, derived.detail, derived.domains) == ("7", "Likes ferns.", None, [])
    mirrors, outcomes = mirror_pairs([pair(0, "Too long, please make it shorter.")], [PERSONAS[0], derived], Always(True))
    assert mirrors == [] and outcomes == {"no user prefers the opposite": 1}   # an unknown axis is never the opposite
    full = persona("wordy", "detailed").to_dict()
    assert DerivedPersona.from_record(full) == persona("wordy", "detailed")


def test_the_testbed_judge_keeps_a_mirror_by_the_true_persona():
    truth = {"wordy": {"expertise": "novice", "detail": "detailed", "tone": "formal", "structure": "prose"}}
    assert score(truth["wordy"], LONG) > score(truth["wordy"], SHORT)
    only_wordy = PERSONAS[:3]
    mirrors, outcomes = mirror_pairs([pair(0, "Too long.")], only_wordy, TestbedJudge(truth))
    assert [m["user_id"] for m in mirrors] == ["wordy"] and outcomes == {"passed": 1}
    truth["wordy"] = {**truth["wordy"], "detail": "brief"}   # derived as detailed, truly brief: the judge refuses
    mirrors, outcomes = mirror_pairs([pair(0, "Too long.")], only_wordy, TestbedJudge(truth))
    assert mirrors == [] and outcomes == {"judge rejected": 1}


def test_a_model_judge_keeps_a_mirror_only_when_both_orders_agree(tmp_path):
    from userloop.models import load_model

    def mirrors_with(script: object) -> list[dict]:
        path = tmp_path / "judge.json"
        path.write_text(json.dumps(script))
        return mirror_pairs([pair(0, "Too long.")], PERSONAS[:3], ModelJudge(load_model(f"scripted:{path}")))[0]

    assert mirrors_with({"*": '{"better": "A"}'}) == []          # position bias: the orders disagree
    # a model that picks the long answer (the original) wherever it is shown
    assert len(mirrors_with({f"Answer A:\n<<<\n{LONG[:40]}": '{"better": "A"}', "*": '{"better": "B"}'})) == 1
    assert mirrors_with({f"Answer A:\n<<<\n{LONG[:40]}": '{"better": "B"}', "*": '{"better": "A"}'}) == []
    assert mirrors_with(["no idea"]) == []                          # unusable twice: a tie in each order


def test_build_with_mirrors_writes_them_after_the_pairs_and_counts_every_pair(small_classifier, tmp_path):
    from userloop.rlhi.build import BuildConfig, build
    from userloop.testbed import generate

    folder = tmp_path
    generate(50, seed=3).write(folder / "testbed")
    report = build(folder / "testbed", folder / "out", BuildConfig(rewriter="testbed:editor", mirrors=True))
    rows = pq.read_table(folder / "out" / "pairs.parquet").to_pylist()
    originals = [r for r in rows if not r["mirror"]]
    mirrors = [r for r in rows if r["mirror"]]
    assert report["mirrors"]["pairs"] == len(mirrors) > 0 and report["pairs"] == len(rows)
    assert rows == originals + mirrors
    assert sum(report["mirrors"]["outcomes"].values()) == len(originals) == report["rewrites"]["passed_filter"]
    truth = TestbedJudge.from_data(folder / "testbed").true_personas
    personas = {p["user_id"]: p["persona"] for p in map(orjson.loads, (folder / "out" / "personas.jsonl").read_bytes().splitlines())}
    by_conversation = {r["conversation_id"]: r["user_id"] for r in originals}
    for m in mirrors:
        assert m["user_id"] != by_conversation[m["conversation_id"]] and m["persona"] == personas[m["user_id"]]
        chosen, rejected = m["chosen"][0]["content"], m["rejected"][0]["content"]
        assert score(truth[m["user_id"]], chosen) > score(truth[m["user_id"]], rejected)   # the testbed judge agreed



def test_build_on_the_train_split_keeps_held_out_users_out(prepared, small_classifier, tmp_path):
    from userloop.errors import UserError
    from userloop.rlhi.build import BuildConfig, build, read_split_conversations

    report = build(prepared, tmp_path / "out", BuildConfig(rewriter="testbed:editor", split="train", mirrors=True))
    train = {c.user_id for c in read_split_conversations(prepared, "train")}
    held_out = {c.user_id for split in ("validation", "test") for c in read_split_conversations(prepared, split)}
    assert held_out and not train & held_out
    rows = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    assert rows and report["pairs"] == len(rows) and {r["user_id"] for r in rows} <= train
    assert report["conversations"] == len(read_split_conversations(prepared, "train"))
    personas = [orjson.loads(line) for line in (tmp_path / "out" / "personas.jsonl").read_bytes().splitlines()]
    assert personas and {p["user_id"] for p in personas} <= train
    with pytest.raises(UserError, match="split must be one of train, validation, test, got 'tain'"):
        build(prepared, tmp_path / "bad", BuildConfig(split="tain"))
    with pytest.raises(UserError, match="not a prepared folder with a train split"):
        build(prepared.parent / "raw", tmp_path / "raw", BuildConfig(split="train"))


def test_cli_refuses_an_unknown_split_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from userloop.cli import app

    result = CliRunner().invoke(app, ["rlhi", "build", "--split", "tain", "--mirrors", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: split must be one of train, validation, test, got 'tain'"]
    assert not (tmp_path / "out").exists()


def test_build_with_a_model_judge_asks_it_about_every_mirror(small_classifier, tmp_path):
    """A chat-model judge that accepts every rewrite and always answers "A" keeps no mirror (both orders are asked),
    and its counts for the mirrors are reported apart from those for the rewrites."""
    from userloop.rlhi.build import BuildConfig, build
    from userloop.testbed import generate

    generate(30, seed=3).write(tmp_path / "testbed")
    script = tmp_path / "judge.json"
    script.write_text(json.dumps({"Answer A:": '{"better": "A"}', "*": '{"addresses_feedback": true}'}))
    report = build(tmp_path / "testbed", tmp_path / "out",
                   BuildConfig(rewriter="testbed:editor", judge=f"scripted:{script}", mirrors=True))
    asked = report["mirrors"]["outcomes"].get("judge rejected", 0)
    assert report["pairs"] == report["rewrites"]["passed_filter"] > 0 and report["mirrors"]["pairs"] == 0 and asked > 0
    assert report["mirrors"]["judge"] == {"valid": 2 * asked}
    assert report["rewrites"]["judge"] == {"valid": report["rewrites"]["attempted"] - report["rewrites"]["outcomes"].get("identical", 0)}
