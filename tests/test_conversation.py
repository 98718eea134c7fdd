"""Conversation survives every serialised form without loss (hypothesis property tests)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from userloop.conversation import (
    METADATA_FIELDS,
    ROLES,
    Conversation,
    Message,
    from_arrow,
    is_userloop_schema,
    parquet_schema,
    read_jsonl,
    read_parquet,
    to_arrow,
    write_jsonl,
    write_parquet,
)

SETTINGS = settings(max_examples=50, deadline=None)

# ------------------------------------------------------------------ strategies
# Arbitrary unicode (hypothesis leaves out lone surrogates, which are not valid UTF-8 text), plus
# the strings most likely to break a line- or JSON-based format.
awkward_text = st.sampled_from(
    ["", " ", "\n", "\r\n", "a\nb\n\nc", "\t\x00\x1f", "😀👩‍👩‍👧‍👦🏳️‍🌈", "\u2028\u2029", '"}\\n{',
     "ünïcödé 中文 עברית"]
)
text = st.one_of(st.text(), awkward_text)

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)),
    max_leaves=12,
)

CONVERSATION_KEYS = frozenset((*METADATA_FIELDS, "messages"))
conversation_extra = st.dictionaries(text.filter(lambda k: k not in CONVERSATION_KEYS), json_value, max_size=4)
message_extra = st.dictionaries(text.filter(lambda k: k not in ("role", "content")), json_value, max_size=3)
optional_text = st.one_of(st.none(), text)

messages = st.builds(Message, role=st.sampled_from(sorted(ROLES)), content=text, extra=message_extra)
conversations = st.builds(
    Conversation,
    messages=st.lists(messages, max_size=5),
    id=text,
    source=optional_text,
    user_id=optional_text,
    language=optional_text,
    country=optional_text,
    model=optional_text,
    timestamp=optional_text,
    toxic=st.booleans(),
    redacted=st.booleans(),
    intent=optional_text,
    extra=conversation_extra,
)
conversation_lists = st.lists(conversations, max_size=6)


# ------------------------------------------------------------------ comparison
def typed(value: Any) -> Any:
    """``value`` with every leaf tagged by its type, so True/1/1.0 and "1"/1 are told apart."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def assert_same(got: list[Conversation], expected: list[Conversation]) -> None:
    assert all(type(c) is Conversation for c in got)
    assert all(type(m) is Message for c in got for m in c.messages)
    assert [typed(dataclasses.asdict(c)) for c in got] == [typed(dataclasses.asdict(c)) for c in expected]
    assert got == expected


# ------------------------------------------------------------------ JSON
@SETTINGS
@given(conversations)
def test_dict_round_trip(conv: Conversation) -> None:
    assert_same([Conversation.from_dict(conv.to_dict())], [conv])


@SETTINGS
@given(conversations)
def test_json_round_trip(conv: Conversation) -> None:
    data = conv.to_json()
    assert isinstance(data, bytes)
    assert b"\n" not in data  # one record per line in JSONL
    assert_same([Conversation.from_json(data)], [conv])
    assert_same([Conversation.from_json(data.decode("utf-8"))], [conv])


@SETTINGS
@given(conversations)
def test_to_dict_is_an_openai_style_record(conv: Conversation) -> None:
    data = conv.to_dict()
    assert data["messages"] == [{"role": m.role, "content": m.content, **m.extra} for m in conv.messages]
    for name in METADATA_FIELDS:
        assert data[name] == getattr(conv, name)
    for key, value in conv.extra.items():
        assert data[key] == value
    assert set(data) == {*METADATA_FIELDS, "messages", *conv.extra}


def test_from_dict_minimal_record_defaults() -> None:
    conv = Conversation.from_dict({"messages": [{"role": "user", "content": "hi", "name": "x"}], "lang": "en"})
    assert conv.id == ""
    assert conv.messages == [Message("user", "hi", {"name": "x"})]
    assert conv.extra == {"lang": "en"}
    assert conv.toxic is False and conv.redacted is False
    assert conv.source is None and conv.timestamp is None


# ------------------------------------------------------------------ Arrow / Parquet
@SETTINGS
@given(conversation_lists)
def test_arrow_round_trip(convs: list[Conversation]) -> None:
    table = to_arrow(convs)
    assert table.schema == parquet_schema()
    assert table.num_rows == len(convs)
    assert_same(from_arrow(table), convs)
    for batch in table.to_batches():  # record batches are accepted too
        assert_same(from_arrow(batch), convs[: batch.num_rows])
        break


@SETTINGS
@given(conversation_lists, st.integers(min_value=1, max_value=4))
def test_parquet_round_trip(convs: list[Conversation], batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conversations.parquet"
        assert write_parquet(iter(convs), path, batch_size=batch_size) == len(convs)
        assert is_userloop_schema(pq.ParquetFile(path).schema_arrow)
        assert_same(list(read_parquet(path, batch_size=batch_size)), convs)
        assert_same(list(read_parquet(str(path))), convs)


def test_parquet_messages_column_is_plain_role_content() -> None:
    """Chat training tools read ``messages`` as ``{role, content}`` structs; extras live apart."""
    conv = Conversation(
        [Message("user", "hi", {"turn_identifier": 7}), Message("assistant", "hello")], id="a", extra={"k": [1, 2.5]}
    )
    row = to_arrow([conv]).to_pylist()[0]
    assert row["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert row["message_extra"] == '[{"turn_identifier":7},{}]'
    assert row["extra"] == '{"k":[1,2.5]}'
    plain = to_arrow([Conversation([Message("user", "hi")], id="b")]).to_pylist()[0]
    assert plain["message_extra"] is None and plain["extra"] is None


# ------------------------------------------------------------------ JSON lines
@SETTINGS
@given(conversation_lists)
def test_jsonl_round_trip(convs: list[Conversation]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conversations.jsonl"
        assert write_jsonl(iter(convs), path) == len(convs)
        assert len(path.read_bytes().splitlines()) == len(convs)
        assert_same(list(read_jsonl(path)), convs)
        assert_same(list(read_jsonl(str(path))), convs)
