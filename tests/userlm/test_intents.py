"""Intents: the offline rules on testbed conversations, the LLM path with scripted models, the command."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import Conversation, Message, read_parquet, write_parquet
from userloop.data.sources import prepared_splits
from userloop.errors import UserError
from userloop.testbed import read_truth
from userloop.userlm.intents import (
    INTENT_PREFIX,
    intent_problem,
    intent_prompt,
    offline_intent,
    request_kind,
    transcript,
    write_intents,
)

VALID = f"{INTENT_PREFIX} get help with an everyday task."
FAMILY_OF_KIND = {"code": "code", "math": "math", "writing": "writing", "recommendation": "recommendation",
                  "question": "fact"}
runner = CliRunner()


def conversation(*turns: str, intent: str | None = None, id: str = "c") -> Conversation:
    roles = ("user", "assistant")
    return Conversation([Message(roles[i % 2], text) for i, text in enumerate(turns)], id=id, intent=intent)


@pytest.fixture
def small_prepared(tmp_path) -> Path:
    """A prepared folder by hand: three conversations in train, one in test, one of them with an intent."""
    folder = tmp_path / "prepared"
    folder.mkdir()
    write_parquet([conversation("write me a poem about the sea", "Waves...", "shorter please", id="a"),
                   conversation("what is the capital of France?", "Paris.", id="b"),
                   conversation("hi", "Hello!", intent=VALID, id="c")], folder / "train.parquet")
    write_parquet([], folder / "validation.parquet")
    write_parquet([conversation("I have $40, I buy 3 books at $12 each. How much is left?", id="d")],
                  folder / "test.parquet")
    (folder / "report.json").write_text(json.dumps({"splits": {"train": {"conversations": 3}}}))
    (folder / "bad_lines.jsonl").write_text('{"file": "x", "line": 1, "reason": "bad"}\n')
    return folder


def script(tmp_path: Path, replies) -> str:
    path = tmp_path / f"intents{len(list(tmp_path.glob('intents*')))}.json"
    path.write_text(json.dumps(replies))
    return f"scripted:{path}"


def read_split(folder: Path, split: str) -> dict[str, Conversation]:
    return {c.id: c for c in read_parquet(folder / f"{split}.parquet")}


# --------------------------------------------------------------------------- offline rules


def test_offline_kinds_match_the_testbed_truth(prepared_testbed, testbed_conversations):
    _, truth = read_truth(prepared_testbed.parent / "raw")
    families = [truth[c.id]["tasks"][0]["family"] for c in testbed_conversations]
    kinds = [request_kind(c.user_turns[0]) for c in testbed_conversations]
    share = sum(FAMILY_OF_KIND.get(k) == f for k, f in zip(kinds, families)) / len(kinds)
    assert len(kinds) > 100 and share >= 0.9, share
    for c in testbed_conversations[:50]:
        intent = offline_intent(c)
        assert intent_problem(intent, c) is None, intent


@pytest.mark.parametrize("turn, kind, phrase", [
    ("def add(a, b):\n    \"\"\"Return the sum.\"\"\"", "code", "a programming task"),
    ("why does my javascript loop never stop", "code", "a programming task in JavaScript"),
    ("pls write a cover letter for a barista job", "writing", "writing a cover letter"),
    ("summarise this: the council met on Tuesday ...", "writing", "a short text summarised"),
    ("I have $50 and buy 4 tickets at $9 each, how much is left?", "math", "an everyday calculation"),
    ("can you recommend some podcasts about history", "recommendation", "recommendations for podcasts"),
    ("who painted the night watch", "question", "a factual question"),
    ("hmm", "other", "help with a request"),
])
def test_offline_rules(turn, kind, phrase):
    assert request_kind(turn) == kind
    intent = offline_intent(conversation(turn))
    assert intent.startswith(INTENT_PREFIX) and phrase in intent and intent.endswith(".")


# --------------------------------------------------------------------------- validation and prompt


@pytest.mark.parametrize("intent, problem", [
    (VALID, None),
    ("The user wants a poem.", "does not start with the intent prefix"),
    (f"{INTENT_PREFIX} x", "says nothing after the prefix"),
    (f"{INTENT_PREFIX} get a poem.\nAlso a story.", "more than one line"),
    (f"{INTENT_PREFIX} " + "very " * 60 + "long.", "longer than 60 words"),
    (f"{INTENT_PREFIX} buy 3 books with 40 dollars.", "copies a number from the user's turns"),
    (f"{INTENT_PREFIX} plan a purchase for 2 people.", None),  # a number the user never wrote
])
def test_intent_problem(intent, problem):
    assert intent_problem(intent, conversation("I have $40, I buy 3 books")) == problem


def test_prompt_shows_the_whole_conversation_truncated():
    long = conversation(*[f"turn {i} " + "word " * 400 for i in range(40)])
    text = transcript(long)
    assert text.startswith("USER: turn 0") and "[...]" in text and "more turns left out]" in text
    assert len(text) < 7000
    messages = intent_prompt(long)
    assert messages[0]["role"] == "system" and INTENT_PREFIX in messages[0]["content"]
    assert messages[-1]["content"].startswith("Conversation:\nUSER: turn 0")
    assert all(m["content"].startswith(INTENT_PREFIX) for m in messages if m["role"] == "assistant")


# --------------------------------------------------------------------------- a prepared folder


def test_offline_keeps_existing_intents_and_copies_the_layout(small_prepared, tmp_path):
    result = write_intents(small_prepared, tmp_path / "out")
    out = result.out
    assert set(prepared_splits(out)) == {"train", "validation", "test"}
    train = read_split(out, "train")
    assert train["c"].intent == VALID
    assert "writing a poem" in train["a"].intent and "factual question" in train["b"].intent
    assert "calculation" in read_split(out, "test")["d"].intent
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["splits"] == {"train": {"conversations": 3}}  # the input report is kept
    assert report["intents"] | {} == result.report["intents"]
    counts = result.report["intents"]
    assert (counts["conversations"], counts["kept"], counts["offline_fallback"]) == (4, 1, 3)
    assert counts["per_split"] == {"train": 3, "validation": 0, "test": 1}
    assert (out / "bad_lines.jsonl").read_text() == (small_prepared / "bad_lines.jsonl").read_text()


def test_model_path_valid_answers(small_prepared, tmp_path):
    result = write_intents(small_prepared, tmp_path / "out", model=script(tmp_path, {"*": f"  \"{VALID}\"\n"}),
                           overwrite=True)
    counts = result.report["intents"]
    assert (counts["written_by_model"], counts["kept"], counts["invalid_then_offline_fallback"]) == (4, 0, 0)
    assert all(c.intent == VALID for c in read_split(result.out, "train").values())


def test_model_path_invalid_twice_falls_back(small_prepared, tmp_path):
    result = write_intents(small_prepared, tmp_path / "out", model=script(tmp_path, ["Sure! The user wants help."]))
    counts = result.report["intents"]
    assert (counts["kept"], counts["written_by_model"], counts["invalid_then_offline_fallback"]) == (1, 0, 3)
    assert counts["invalid_answers_by_reason"] == {"does not start with the intent prefix": 6}
    assert "writing a poem" in read_split(result.out, "train")["a"].intent


def test_model_path_retries_once(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    write_parquet([conversation("I have $40, I buy 3 books", id="x")], folder / "train.parquet")
    (folder / "report.json").write_text("{}")
    copied = f"{INTENT_PREFIX} buy 3 books."
    result = write_intents(folder, tmp_path / "out", model=script(tmp_path, [copied, VALID]))
    counts = result.report["intents"]
    assert (counts["written_by_model"], counts["written_by_model_after_retry"]) == (1, 1)
    assert counts["invalid_answers_by_reason"] == {"copies a number from the user's turns": 1}
    assert read_split(result.out, "train")["x"].intent == VALID


def test_bad_folders(small_prepared, tmp_path):
    with pytest.raises(UserError, match="not a prepared folder"):
        write_intents(tmp_path, tmp_path / "out")
    with pytest.raises(UserError, match="must differ"):
        write_intents(small_prepared, small_prepared)


# --------------------------------------------------------------------------- CLI


def test_cli_intents(small_prepared, tmp_path):
    result = runner.invoke(app, ["intents", "--data", str(small_prepared), "--out", str(tmp_path / "out"),
                                 "--model", script(tmp_path, {"*": VALID})])
    assert result.exit_code == 0, result.output
    assert "4 conversations: kept 1, written by the model 3" in result.stdout
    assert read_split(tmp_path / "out", "test")["d"].intent == VALID


def test_cli_intents_not_prepared_is_one_line(tmp_path):
    result = runner.invoke(app, ["intents", "--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not a prepared folder" in lines[0]
