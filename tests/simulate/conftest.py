"""Scripted scenarios and models for the simulation engine's tests (no model weights)."""

import json
from pathlib import Path

import pytest

SCENARIOS = [
    {"id": "m1", "kind": "math", "intent": "(math-1) Tom has 3 apples and buys 4 more; you want the total.",
     "shards": ["Tom has 3 apples.", "He buys 4 more."], "full_prompt": "Tom has 3 apples and buys 4 more. How many now?",
     "answer": "7"},
    {"id": "m2", "kind": "math", "intent": "(math-2) You want the number of pencils: 6 boxes of 2.",
     "shards": ["There are 6 boxes.", "Each has 2 pencils."], "full_prompt": "6 boxes of 2 pencils: how many pencils?",
     "answer": "12", "max_user_turns": 2},
    {"id": "o1", "kind": "open", "intent": "(open-1) You want a short poem about the sea."},
    {"id": "o2", "kind": "open", "intent": "(open-2) You want to hear a fact nobody knows."},
]
# The user LM: keyed by a substring of the last message (the intent, then the assistant's replies).
USER_SCRIPT = {
    "(math-1)": "Need help with an apple counting problem today",
    "how many apples Tom buys": "He buys four more apples after that",
    "(math-2)": "Help me count the pencils in my box",
    "The answer is 5": "That is wrong, please check the pencils again",
    "(open-1)": "Want a short poem about the sea please",
    "Waves roll in": "Make it shorter and add a title",
    "Title: Sea": "<|endconversation|>",
    "*": "Tell me something unusual today",
}
# The assistant: keyed by a substring of the user's last turn; no default, so o2's opening is a model error.
ASSISTANT_SCRIPT = {
    "apple counting": "Could you tell me how many apples Tom buys?",
    "four more apples": "The answer is 7.",
    "6 boxes": "The answer is 12.",
    "pencils": "The answer is 5.",
    "poem about the sea": "Waves roll in, the gulls cry, the sky is grey.",
    "shorter": "Title: Sea. Waves roll.",
    "Tom has 3 apples": "That makes 3 + 4 = 7. The answer is 7.",
}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def scripted(tmp_path) -> dict:
    """A scenario file (``scenarios``, its ``rows``) and the scripted ``user`` and ``assistant`` specs."""
    (tmp_path / "user.json").write_text(json.dumps(USER_SCRIPT), encoding="utf-8")
    (tmp_path / "assistant.json").write_text(json.dumps(ASSISTANT_SCRIPT), encoding="utf-8")
    return {"scenarios": str(write_jsonl(tmp_path / "scenarios.jsonl", SCENARIOS)), "rows": SCENARIOS,
            "user": f"scripted:{tmp_path / 'user.json'}", "assistant": f"scripted:{tmp_path / 'assistant.json'}"}
