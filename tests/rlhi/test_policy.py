"""The base policy's persona-conditioned training data (userloop.rlhi.policy)."""

import json

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import Conversation, Message, read_parquet, write_parquet
from userloop.errors import UserError
from userloop.rlhi.conditioning import persona_line
from userloop.rlhi.policy import write_policy_data


@pytest.fixture
def prepared(tmp_path):
    data = tmp_path / "prepared"
    data.mkdir()
    conversations = [
        Conversation([Message("user", "Hi, list three primes.", {"turn_identifier": 1}), Message("assistant", "2, 3, 5.")],
                     id="c1", user_id="u1"),
        Conversation([Message("system", "You are terse."), Message("user", "Name a colour."), Message("assistant", "Red.")],
                     id="c2", user_id="u1"),
        Conversation([Message("user", "Hello"), Message("assistant", "Hi!")], id="c3", user_id="u2"),
    ]
    write_parquet(conversations[:2], data / "train.parquet")
    write_parquet(conversations[2:], data / "test.parquet")
    (data / "report.json").write_text(json.dumps({"inputs": ["/somewhere/conversations.jsonl"]}))
    personas = tmp_path / "personas.jsonl"
    personas.write_text(json.dumps({"user_id": "u1", "persona": "An expert who likes brief answers."}) + "\n")
    return data, personas


def test_persona_goes_into_the_system_message(prepared, tmp_path):
    data, personas = prepared
    counts = write_policy_data(data, personas, tmp_path / "out")
    train = list(read_parquet(tmp_path / "out" / "train.parquet"))
    line = persona_line("An expert who likes brief answers.")
    assert [(m.role, m.content) for m in train[0].messages] == [("system", line), ("user", "Hi, list three primes."),
                                                                ("assistant", "2, 3, 5.")]
    assert train[0].messages[1].extra == {"turn_identifier": 1}          # per-turn fields kept
    assert train[1].messages[0].content == f"{line}\n\nYou are terse."   # an existing system prompt is kept after it
    [test] = read_parquet(tmp_path / "out" / "test.parquet")
    assert [m.role for m in test.messages] == ["user", "assistant"]       # no persona: unchanged
    assert counts["splits"] == {"train": {"conversations": 2, "with_persona": 2, "without_persona": 0},
                                "test": {"conversations": 1, "with_persona": 0, "without_persona": 1}}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["inputs"] == ["/somewhere/conversations.jsonl"]         # the testbed truth stays findable


def test_errors(prepared, tmp_path):
    data, personas = prepared
    with pytest.raises(UserError, match="not a prepared folder"):
        write_policy_data(tmp_path, personas, tmp_path / "out")
    with pytest.raises(UserError, match="personas file not found"):
        write_policy_data(data, tmp_path / "none.jsonl", tmp_path / "out")
    result = CliRunner().invoke(app, ["rlhi", "policy-data", "--data", str(data), "--personas", str(tmp_path / "x.jsonl"),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0 and "personas file not found" in result.output
