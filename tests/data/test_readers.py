"""Readers on the real shared files, their rewritten forms (gzip, Parquet, shards, a local
Hugging Face dataset), hand-made OpenAI/ShareGPT files, and every kind of bad input."""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from userloop.conversation import Conversation, Message, write_jsonl, write_parquet
from userloop.data.readers import ReadReport, read_conversations, reason_category
from userloop.data.sources import BadLine
from userloop.errors import UserError


# ---------------------------------------------------------------------------- helpers
def read(inputs: list[Any], **kwargs: Any) -> tuple[list[Conversation], ReadReport, list[BadLine]]:
    report, bad = ReadReport(), []
    convs = list(read_conversations([str(i) for i in inputs], report=report, on_bad=bad.append, **kwargs))
    assert report.conversations == len(convs)
    assert_accounting(report)
    return convs, report, bad


def assert_accounting(report: ReadReport) -> None:
    assert report.lines_read == report.blank_lines + report.records_parsed + sum(report.bad_lines.values())


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def write_lines(path: Path, lines: list[bytes], gz: bool = False) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def dicts(convs: list[Conversation]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in convs]


# ---------------------------------------------------------------------------- WildChat
@pytest.fixture(scope="module")
def wildchat_path(shared_data: Path) -> Path:
    return shared_data / "wildchat" / "sample.jsonl"


@pytest.fixture(scope="module")
def wildchat_raw(wildchat_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in wildchat_path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def wildchat_convs(wildchat_path: Path) -> list[Conversation]:
    convs, _, bad = read([wildchat_path])
    assert bad == []
    return convs


def wildchat_table(records: list[dict[str, Any]], unit: str = "us") -> pa.Table:
    """The records as real WildChat Parquet has them: timestamps as timestamp columns."""
    records = copy.deepcopy(records)
    for record in records:
        record["timestamp"] = dt.datetime.fromisoformat(record["timestamp"])
        for turn in record["conversation"]:
            turn["timestamp"] = dt.datetime.fromisoformat(turn["timestamp"]) if turn["timestamp"] else None
    table = pa.Table.from_pylist(records)
    index = table.schema.get_field_index("timestamp")
    table = table.cast(table.schema.set(index, pa.field("timestamp", pa.timestamp(unit, tz="UTC"))))
    assert pa.types.is_timestamp(table.schema.field("timestamp").type)
    turn_type = table.schema.field("conversation").type.value_type
    assert pa.types.is_timestamp(turn_type.field("timestamp").type)
    return table


def test_wildchat_sample_fields(wildchat_convs, wildchat_raw, wildchat_path) -> None:
    convs = wildchat_convs
    assert len(wildchat_raw) == 30 and len(convs) == 30
    assert len({c.id for c in convs}) == 30
    consumed = {"conversation", "hashed_ip", "language", "country", "model", "timestamp", "toxic", "redacted"}
    for conv, raw in zip(convs, wildchat_raw, strict=True):
        assert conv.source == "wildchat"
        assert conv.id == f"{raw['conversation_hash']}-{raw['conversation'][0]['turn_identifier']}"
        assert conv.user_id == raw["hashed_ip"]
        assert conv.language == raw["language"]  # WildChat already uses names ("English")
        assert conv.country == raw["country"]
        assert conv.model == raw["model"]
        assert conv.timestamp == raw["timestamp"]
        assert conv.toxic is raw["toxic"] and conv.redacted is raw["redacted"]
        # everything the reader does not model is kept, unchanged
        assert conv.extra == {k: v for k, v in raw.items() if k not in consumed}
        for key in ("openai_moderation", "detoxify_moderation", "conversation_hash", "header", "state", "turn"):
            assert conv.extra[key] == raw[key]
        assert len(conv.messages) == len(raw["conversation"])
        for message, turn in zip(conv.messages, raw["conversation"], strict=True):
            assert (message.role, message.content) == (turn["role"], turn["content"])
            assert message.extra == {k: v for k, v in turn.items() if k not in ("role", "content")}
            assert message.extra["turn_identifier"] == turn["turn_identifier"]
    assert sum(c.toxic for c in convs) == sum(r["toxic"] for r in wildchat_raw) == 1
    assert sum(c.redacted for c in convs) == sum(r["redacted"] for r in wildchat_raw) == 1


def test_wildchat_report(wildchat_path) -> None:
    _, report, bad = read([wildchat_path])
    assert bad == []
    assert (report.lines_read, report.records_parsed, report.conversations) == (30, 30, 30)
    assert report.blank_lines == 0 and not report.bad_lines and report.repaired_conversations == 0
    assert report.formats == {str(wildchat_path): "wildchat"}
    assert report.to_dict()["bad_lines"] == 0


def test_wildchat_gzip(tmp_path, wildchat_path, wildchat_convs) -> None:
    path = tmp_path / "sample.jsonl.gz"
    path.write_bytes(gzip.compress(wildchat_path.read_bytes()))
    convs, report, bad = read([path])
    assert bad == [] and report.formats == {str(path): "wildchat"}
    assert dicts(convs) == dicts(wildchat_convs)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_wildchat_parquet_with_timestamp_columns(tmp_path, wildchat_raw, wildchat_convs, unit) -> None:
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(wildchat_table(wildchat_raw, unit), path)
    convs, report, bad = read([path])
    assert bad == [] and report.formats == {str(path): "wildchat"}
    assert report.lines_read == report.records_parsed == 30
    for conv, raw in zip(convs, wildchat_raw, strict=True):
        assert isinstance(conv.timestamp, str)
        assert conv.timestamp == raw["timestamp"]  # "2023-06-02T00:00:00+00:00", as in the JSON release
        assert [m.extra["timestamp"] for m in conv.messages] == [t["timestamp"] for t in raw["conversation"]]
    assert dicts(convs) == dicts(wildchat_convs)  # the same conversations as from the JSON lines


def test_wildchat_parquet_bad_row_is_reported_by_row_number(tmp_path, wildchat_raw) -> None:
    records = copy.deepcopy(wildchat_raw[:5])
    records[2]["conversation"] = []
    path = tmp_path / "rows.parquet"
    pq.write_table(wildchat_table(records), path)
    convs, report, bad = read([path])
    assert len(convs) == 4
    assert bad == [BadLine(str(path), 3, "empty conversation")]
    assert report.bad_lines == Counter({"empty conversation": 1})


def test_wildchat_folder_of_shards(tmp_path, wildchat_raw, wildchat_convs) -> None:
    folder = tmp_path / "shards"
    (folder / "nested").mkdir(parents=True)
    (folder / ".cache").mkdir()
    (folder / "_tmp").mkdir()
    lines = [dumps(r) for r in wildchat_raw]
    write_lines(folder / "shard-00.jsonl", lines[:10])
    write_lines(folder / "nested" / "shard-01.jsonl.gz", lines[10:20], gz=True)
    pq.write_table(wildchat_table(wildchat_raw[20:]), folder / "shard-02.parquet")
    # hidden, private and unsupported files are not inputs (they would be bad lines if read)
    write_lines(folder / ".cache" / "junk.jsonl", [b"not json"])
    write_lines(folder / "_tmp" / "junk.jsonl", [b"not json"])
    write_lines(folder / ".junk.jsonl", [b"not json"])
    (folder / "notes.txt").write_text("not json\n")

    convs, report, bad = read([folder])
    assert bad == [] and not report.bad_lines
    assert report.formats == {
        str(folder / "nested" / "shard-01.jsonl.gz"): "wildchat",
        str(folder / "shard-00.jsonl"): "wildchat",
        str(folder / "shard-02.parquet"): "wildchat",
    }
    expected = dicts(wildchat_convs)
    # files are read in sorted order: nested/shard-01 (records 10-19) comes first
    assert dicts(convs) == expected[10:20] + expected[:10] + expected[20:]
    assert report.lines_read == report.records_parsed == 30


def test_wildchat_hugging_face_dataset_id(tmp_path, monkeypatch, wildchat_raw, wildchat_convs) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    dataset = tmp_path / "WildChat-local"
    (dataset / "data").mkdir(parents=True)
    pq.write_table(wildchat_table(wildchat_raw), dataset / "data" / "train-00000-of-00001.parquet")

    for spec in (f"hf:{dataset}", f"hf:{dataset}:train"):
        convs, report, bad = read([spec])
        assert bad == []
        assert report.formats == {str(dataset): "wildchat"}
        assert report.lines_read == report.records_parsed == 30
        assert [c.timestamp for c in convs] == [r["timestamp"] for r in wildchat_raw]
        assert dicts(convs) == dicts(wildchat_convs)


def test_hugging_face_dataset_unknown_split_is_a_user_error(tmp_path, monkeypatch, wildchat_raw) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dataset = tmp_path / "ds"
    (dataset / "data").mkdir(parents=True)
    pq.write_table(wildchat_table(wildchat_raw[:2]), dataset / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(UserError, match="cannot load dataset"):
        list(read_conversations([f"hf:{dataset}:nosuchsplit"]))


# ---------------------------------------------------------------------------- OASST
def threads(node: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every root-to-leaf path, left to right, computed from the raw JSON."""
    replies = node.get("replies") or []
    if not replies:
        return [[node]]
    return [[node, *path] for reply in replies for path in threads(reply)]


@pytest.fixture(scope="module")
def oasst_trees(shared_data: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (shared_data / "oasst" / "en_100_tree.jsonl").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def oasst_expected(oasst_trees) -> list[tuple[str, list[dict[str, Any]], bool]]:
    """(tree id, path, synthetic tree) for every thread, in reading order."""
    return [
        (tree["message_tree_id"], path, bool(tree["prompt"].get("synthetic")))
        for tree in oasst_trees
        for path in threads(tree["prompt"])
    ]


def check_oasst_threads(convs: list[Conversation], expected) -> None:
    assert len(convs) == len(expected)
    for conv, (tree_id, path, synthetic_tree) in zip(convs, expected, strict=True):
        assert conv.source == "oasst"
        assert conv.id == path[-1]["message_id"]
        assert [(m.role, m.content) for m in conv.messages] == [
            ({"prompter": "user", "assistant": "assistant"}[n["role"]], n["text"]) for n in path
        ]
        assert conv.messages[0].role == "user"
        assert conv.language == "English"
        assert conv.extra["message_tree_id"] == tree_id
        assert conv.extra["synthetic"] is any(bool(n.get("synthetic")) for n in path)
        if synthetic_tree:
            assert conv.extra["synthetic"] is True
        for message, node in zip(conv.messages, path, strict=True):
            assert message.extra["message_id"] == node["message_id"]
            assert not {"text", "role", "replies"} & set(message.extra)


def test_oasst_tree_file(shared_data, oasst_trees, oasst_expected) -> None:
    path = shared_data / "oasst" / "en_100_tree.jsonl"
    convs, report, bad = read([path])
    assert bad == [] and report.formats == {str(path): "oasst"}
    assert report.lines_read == report.records_parsed == len(oasst_trees) == 100
    leaves = sum(len(threads(t["prompt"])) for t in oasst_trees)
    assert len(convs) == report.conversations == leaves
    assert len({c.id for c in convs}) == leaves
    check_oasst_threads(convs, oasst_expected)
    synthetic_trees = {t["message_tree_id"] for t in oasst_trees if t["prompt"].get("synthetic")}
    assert len(synthetic_trees) == 5
    assert {c.extra["message_tree_id"] for c in convs if c.extra["synthetic"]} >= synthetic_trees
    assert all(c.extra["synthetic"] for c in convs if c.extra["message_tree_id"] in synthetic_trees)
    assert all(c.extra["tree_state"] == "ready_for_export" for c in convs)


def test_oasst_message_file(shared_data, oasst_expected) -> None:
    path = shared_data / "oasst" / "en_100_message.jsonl"
    roots = [json.loads(line) for line in path.read_bytes().splitlines()]
    convs, report, bad = read([path])
    assert bad == [] and report.formats == {str(path): "oasst"}
    assert len(convs) == sum(len(threads(r)) for r in roots)
    # the message file holds the same trees as the tree file, so the same threads come out
    check_oasst_threads(convs, oasst_expected)
    assert sum(c.extra["synthetic"] for c in convs) == sum(
        any(n.get("synthetic") for n in path) for r in roots for path in threads(r)
    )
    assert any("labels" in m.extra or "emojis" in m.extra for c in convs for m in c.messages)


def flatten(trees: list[dict[str, Any]], keys: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Hub-style flat OASST rows (one per message), in tree order."""
    rows = []

    def walk(node: dict[str, Any], parent: str | None, tree_id: str) -> None:
        row = {k: v for k, v in node.items() if k != "replies"}
        row.update(parent_id=parent, message_tree_id=tree_id)
        rows.append({k: row.get(k) for k in keys} if keys else row)
        for reply in node.get("replies") or []:
            walk(reply, node["message_id"], tree_id)

    for tree in trees:
        walk(tree["prompt"], None, tree["message_tree_id"])
    return rows


def test_oasst_flat_rows_jsonl(tmp_path, oasst_trees, oasst_expected) -> None:
    rows = flatten(oasst_trees)
    path = write_lines(tmp_path / "oasst_flat.jsonl", [dumps(r) for r in rows])
    for fmt in (None, "oasst"):
        convs, report, bad = read([path], fmt=fmt)
        assert bad == [] and report.formats == {str(path): "oasst"}
        assert report.lines_read == report.records_parsed == len(rows)
        check_oasst_threads(convs, oasst_expected)


def test_oasst_flat_rows_parquet(tmp_path, oasst_trees, oasst_expected) -> None:
    keys = ("message_id", "parent_id", "message_tree_id", "text", "role", "lang", "synthetic", "deleted")
    path = tmp_path / "oasst1-train.parquet"
    pq.write_table(pa.Table.from_pylist(flatten(oasst_trees, keys)), path)
    convs, _, bad = read([path])
    assert bad == []
    check_oasst_threads(convs, oasst_expected)


def test_oasst_flat_tree_errors(tmp_path) -> None:
    def row(mid, parent, tree, role="prompter", text="t"):
        return dumps({"message_id": mid, "parent_id": parent, "message_tree_id": tree, "role": role, "text": text})

    lines = [
        row("a", None, "A"), row("a1", "a", "A", "assistant"),  # 1-2: a good tree, one thread
        row("b1", "nope", "B", "assistant"), row("b", None, "B"),  # 3-4: orphan: the whole tree is bad
        row("c", None, "C"), row("c2", None, "C"),  # 5-6: two roots
        row("a2", "a", "A", "assistant"),  # 7: tree A again after it ended
        dumps({"message_id": "x", "parent_id": None, "role": "prompter", "text": "t"}),  # 8: no tree id
        dumps({"message_id": ["x"], "parent_id": None, "message_tree_id": "D", "role": "prompter", "text": "t"}),  # 9
        row("e", None, "E"), row("e1", "e", "E", "assistant"),  # 10-11: good again
    ]
    path = write_lines(tmp_path / "flat.jsonl", lines)
    convs, report, bad = read([path])
    assert [c.id for c in convs] == ["a1", "e1"]
    assert [(b.line, reason_category(b.reason)) for b in bad] == [
        (3, "OASST orphan message"), (4, "OASST orphan message"),
        (5, "OASST tree without one root"), (6, "OASST tree without one root"),
        (7, "OASST tree not contiguous"),
        (8, "flat OASST message without message_tree_id"),
        (9, "flat OASST message without a text message_id and parent_id"),
    ]
    assert all(b.file == str(path) for b in bad)
    assert report.records_parsed == 4 and sum(report.bad_lines.values()) == 7


def test_prompt_lottery(shared_data) -> None:
    path = shared_data / "oasst" / "prompt_lottery_en_250_text.jsonl"
    raw = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert all(isinstance(r, str) for r in raw)
    convs, report, bad = read([path])
    assert bad == [] and report.formats == {str(path): "prompts"}
    assert len(convs) == len(raw) == 250
    for number, (conv, text) in enumerate(zip(convs, raw, strict=True), 1):
        assert conv.messages == [Message("user", text)]
        assert conv.source == "prompts"
        assert conv.id == f"{path}:{number}"


# ---------------------------------------------------------------------------- OpenAI / ShareGPT
def test_openai_messages(tmp_path) -> None:
    records = [
        {
            "id": "conv-1", "user_id": "u1", "language": "en", "model": "gpt-4o", "dataset": "mine",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello 👋\nthere", "name": "alice"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi."}, {"type": "text", "text": "How?"}]},
            ],
        },
        {"messages": [{"role": "User", "content": [{"type": "text", "text": "one part"}]}]},
        {"id": 7, "user_id": 42, "messages": [{"role": "user", "content": ""}]},
    ]
    path = write_lines(tmp_path / "chat.jsonl", [dumps(r) for r in records])
    convs, report, bad = read([path])
    assert bad == [] and report.formats == {str(path): "openai"}
    first, second, third = convs
    assert first.id == "conv-1" and first.source == "openai"
    assert (first.user_id, first.language, first.model) == ("u1", "English", "gpt-4o")
    assert first.extra == {"dataset": "mine"}
    assert [(m.role, m.content) for m in first.messages] == [
        ("system", "Be brief."), ("user", "Hello 👋\nthere"), ("assistant", "Hi.\nHow?")
    ]
    assert first.messages[1].extra == {"name": "alice"}
    assert second.id == f"{path}:2" and second.messages == [Message("user", "one part")]
    assert (third.id, third.user_id) == ("7", "42")  # numbers where text belongs become text
    assert third.messages == [Message("user", "")]


def test_sharegpt_jsonl_and_json_array(tmp_path) -> None:
    records = [
        {"id": "sg-1", "conversations": [
            {"from": "system", "value": "You are helpful."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!", "markdown": True},
        ], "lang": "fr", "source_url": "x"},
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "chatgpt", "value": "A"}]},
        {"conversations": [{"from": "robot", "value": "?"}]},
        {"conversations": [{"from": "user", "value": "Q2"}, {"from": "bing", "value": "A2"}]},
    ]
    array = tmp_path / "sharegpt.json"
    array.write_bytes(dumps(records))
    lines = write_lines(tmp_path / "sharegpt.jsonl", [dumps(r) for r in records])
    for path in (array, lines):
        convs, report, bad = read([path])
        assert report.formats == {str(path): "sharegpt"}
        assert bad == [BadLine(str(path), 3, "unknown role: 'robot'")]  # the element / line number
        assert report.lines_read == 4 and report.records_parsed == 3
        assert [c.id for c in convs] == ["sg-1", f"{path}:2", f"{path}:4"]
        first = convs[0]
        assert [(m.role, m.content) for m in first.messages] == [
            ("system", "You are helpful."), ("user", "Hi"), ("assistant", "Hello!")
        ]
        assert first.messages[2].extra == {"markdown": True}
        assert first.language == "French" and first.source == "sharegpt"
        assert first.extra == {"source_url": "x"}  # lang is read into the language field
        assert [m.role for c in convs[1:] for m in c.messages] == ["user", "assistant"] * 2


def test_sharegpt_json_single_object(tmp_path) -> None:
    path = tmp_path / "one.json"
    path.write_bytes(dumps({"conversations": [{"from": "human", "value": "solo"}]}))
    convs, _, bad = read([path])
    assert bad == [] and [c.messages for c in convs] == [[Message("user", "solo")]]


def test_userloop_outputs_read_back_unchanged(tmp_path, wildchat_convs) -> None:
    parquet = tmp_path / "train.parquet"
    write_parquet(wildchat_convs, parquet)
    convs, report, bad = read([parquet])
    assert bad == [] and report.formats == {str(parquet): "userloop"}
    assert convs == wildchat_convs
    jsonl = tmp_path / "train.jsonl"
    write_jsonl(wildchat_convs, jsonl)
    convs, report, bad = read([jsonl])
    assert bad == [] and report.formats == {str(jsonl): "openai"}
    assert convs == wildchat_convs


# ---------------------------------------------------------------------------- detection / forcing
def test_format_detected_per_file(tmp_path, shared_data) -> None:
    openai_path = write_lines(tmp_path / "a.jsonl", [dumps({"messages": [{"role": "user", "content": "x"}]})])
    sharegpt_path = tmp_path / "b.json"
    sharegpt_path.write_bytes(dumps([{"conversations": [{"from": "human", "value": "x"}]}]))
    userloop_path = tmp_path / "c.parquet"
    write_parquet([Conversation([Message("user", "x")], id="c")], userloop_path)
    inputs = {
        shared_data / "wildchat" / "sample.jsonl": "wildchat",
        shared_data / "oasst" / "en_100_tree.jsonl": "oasst",
        shared_data / "oasst" / "prompt_lottery_en_250_text.jsonl": "prompts",
        openai_path: "openai",
        sharegpt_path: "sharegpt",
        userloop_path: "userloop",
    }
    convs, report, bad = read(list(inputs))
    assert bad == []
    assert report.formats == {str(p): f for p, f in inputs.items()}
    assert Counter(c.source for c in convs)["openai"] == 1


def test_detection_skips_unrecognisable_leading_lines(tmp_path) -> None:
    good = dumps({"messages": [{"role": "user", "content": "x"}]})
    path = write_lines(tmp_path / "x.jsonl", [dumps({"foo": 1, "bar": 2}), b"[1]", good])
    convs, report, bad = read([path])
    assert len(convs) == 1 and report.formats == {str(path): "openai"}
    assert bad == [
        BadLine(str(path), 1, "unrecognised record layout: keys bar, foo (use --format)"),
        BadLine(str(path), 2, "not a JSON object: list"),
    ]


def test_forced_format(tmp_path, wildchat_path) -> None:
    # a record that detection takes for WildChat (it has `conversation`) but is an OpenAI record
    record = {"conversation": "a title", "messages": [{"role": "user", "content": "hi"}]}
    path = write_lines(tmp_path / "mixed.jsonl", [dumps(record)])
    convs, report, bad = read([path])
    assert convs == [] and [b.reason for b in bad] == ["missing list of turns: 'conversation' is a str"]
    convs, report, bad = read([path], fmt="openai")
    assert bad == [] and report.formats == {str(path): "openai"}
    assert convs[0].messages == [Message("user", "hi")] and convs[0].extra == {"conversation": "a title"}

    convs, report, bad = read([wildchat_path], fmt="openai")
    assert convs == [] and report.bad_lines == Counter({"missing list of turns": 30})
    assert [b.line for b in bad] == list(range(1, 31))
    convs, report, bad = read([wildchat_path], fmt="prompts")
    assert convs == [] and report.bad_lines == Counter({"not a JSON string": 30})

    with pytest.raises(UserError, match="unknown format 'chatml'"):
        list(read_conversations([str(path)], fmt="chatml"))


def test_missing_inputs_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        list(read_conversations([str(tmp_path / "nope.jsonl")]))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no supported files"):
        list(read_conversations([str(tmp_path / "empty")]))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match=re.escape(str(broken))):
        list(read_conversations([str(broken)]))


# ---------------------------------------------------------------------------- bad input
KINDS = {
    # turns key, role key, content key, role names
    "wildchat": ("conversation", "role", "content", {"user": "user", "assistant": "assistant", "system": "system"}),
    "openai": ("messages", "role", "content", {"user": "user", "assistant": "assistant", "system": "system"}),
    "sharegpt": ("conversations", "from", "value", {"user": "human", "assistant": "gpt", "system": "system"}),
}


def make_record(kind: str, turns: list[tuple[str, Any]], rid: str) -> dict[str, Any]:
    key, role_key, content_key, names = KINDS[kind]
    record: dict[str, Any] = {key: [{role_key: names[r], content_key: c} for r, c in turns]}
    if kind == "wildchat":
        record.update(conversation_hash=rid, hashed_ip="ip", model="gpt-4", language="English")
    else:
        record["id"] = rid
    return record


def bad_cases(kind: str) -> list[tuple[bytes, str]]:
    """(line, exact reason); a reason ending in ': ' is a prefix."""
    key, role_key, content_key, names = KINDS[kind]
    good = dumps(make_record(kind, [("user", "question"), ("assistant", "answer")], "x"))

    def turns(*items: Any) -> bytes:
        return dumps({key: list(items)})

    return [
        (good[: len(good) // 2], "invalid JSON: "),
        (b'{"' + key.encode() + b'": [', "invalid JSON: "),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"a bare string"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
        (dumps({"model": "m", "lang": "en"}), f"missing list of turns: no '{key}'"),
        (dumps({key: "hello"}), f"missing list of turns: '{key}' is a str"),
        (dumps({key: {role_key: "user", content_key: "hi"}}), f"missing list of turns: '{key}' is a dict"),
        (turns("hello"), "turn is not an object"),
        (turns({role_key: names["user"], content_key: 5}), "turn without string content: int"),
        (turns({role_key: names["user"]}), "turn without string content: missing"),
        (turns({role_key: names["user"], content_key: None}), "turn without string content: missing"),
        (turns({role_key: names["user"], content_key: {"text": "x"}}), "turn without string content: dict"),
        (turns({role_key: names["user"], content_key: [{"type": "image_url", "image_url": "x"}]}),
         "turn without string content: list"),
        (turns({role_key: "bot", content_key: "hi"}), "unknown role: 'bot'"),
        (turns({content_key: "hi"}), "unknown role: None"),
        (turns({role_key: 3, content_key: "hi"}), "unknown role: 3"),
        (turns(), "empty conversation"),
        (turns({role_key: names["assistant"], content_key: "hi"}), "no user turn"),
        (turns({role_key: names["user"], content_key: "hi"}, {role_key: "system", content_key: "late"}),
         "system message after the first turn"),
        (good.replace(b"question", b"quest\xff\xfeion"), "invalid UTF-8"),
    ]


def check_bad_file(path: Path, cases: list[tuple[bytes, str]], good_ids: list[str]) -> None:
    """Line 1 is good; then each bad case is followed by a good line."""
    convs, report, bad = read([path])
    assert [b.file for b in bad] == [str(path)] * len(cases)
    assert [b.line for b in bad] == [2 * i for i in range(1, len(cases) + 1)]
    for b, (_, reason) in zip(bad, cases, strict=True):
        if reason.endswith(": "):
            assert b.reason.startswith(reason) and len(b.reason) > len(reason), b
        else:
            assert b.reason == reason, b
    assert report.bad_lines == Counter(reason_category(reason) for _, reason in cases)
    assert report.bad_lines == Counter(reason_category(b.reason) for b in bad)
    # reading went on after every bad line: all the good lines are there
    assert [c.id for c in convs] == good_ids
    assert report.lines_read == 2 * len(cases) + 1
    assert report.records_parsed == len(cases) + 1


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_lines_are_reported_and_skipped(tmp_path, kind) -> None:
    cases = bad_cases(kind)
    lines = [dumps(make_record(kind, [("user", "q"), ("assistant", "a")], "good-1"))]
    for number, (raw, _) in enumerate(cases, 1):
        lines.append(raw)
        lines.append(dumps(make_record(kind, [("user", "q"), ("assistant", "a")], f"good-{2 * number + 1}")))
    path = write_lines(tmp_path / f"{kind}.jsonl", lines)
    good_ids = [f"good-{n}" for n in range(1, 2 * len(cases) + 2, 2)]
    check_bad_file(path, cases, good_ids)


def test_oasst_bad_trees(tmp_path) -> None:
    def node(mid, role="prompter", text="t", replies=None, **kw):
        return {"message_id": mid, "role": role, "text": text, "replies": replies or [], **kw}

    def tree(tid, prompt):
        return dumps({"message_tree_id": tid, "prompt": prompt})

    good = tree("g", node("g", replies=[node("g1", "assistant"), node("g2", "assistant")]))
    cases = [
        (good[:40], "invalid JSON: "),
        (b"[1]", "not a JSON object"),
        (dumps({"message_tree_id": "t"}), "OASST record without 'prompt' or 'replies'"),
        (tree("t", "hello"), "message is not an object"),
        (tree("t", node("t", replies=["not a message"])), "message is not an object"),
        (tree("t", node("t", replies={"x": 1})), "'replies' is not a list"),
        (tree("t", node("t", text=None)), "message without text"),
        (tree("t", node("t", replies=[node("t1", "moderator")])), "unknown role: 'moderator'"),
        (tree("t", node("t", role=["prompter"])), "unknown role: ['prompter']"),
        (tree("t", node("t", role="assistant")), "no user turn"),
        (good.replace(b'"text": "t"', b'"text": "\xff"', 1), "invalid UTF-8"),
    ]
    lines = [good]
    for raw, _ in cases:
        lines += [raw, good]
    path = write_lines(tmp_path / "oasst.jsonl", lines)
    check_bad_file(path, cases, ["g1", "g2"] * (len(cases) + 1))


def test_prompts_bad_lines(tmp_path) -> None:
    cases = [(b'"unterminated', "invalid JSON: "), (b'{"text": "x"}', "not a JSON string"),
             (b"7", "not a JSON string"), (b'"\xc3\x28"', "invalid UTF-8")]
    lines = [b'"first"']
    for raw, _ in cases:
        lines += [raw, b'"again"']
    path = write_lines(tmp_path / "prompts.jsonl", lines)
    good_ids = [f"{path}:{n}" for n in range(1, 2 * len(cases) + 2, 2)]
    check_bad_file(path, cases, good_ids)


def test_accounting_with_good_bad_and_blank_lines(tmp_path) -> None:
    good = dumps({"messages": [{"role": "user", "content": "hi"}]})
    content = b"\n".join([
        b"", good, b"   ", b"{broken", good, b"\t", b"[]", b"\r", good + b"\r", b"\xff\xfe", b"",
        dumps({"messages": []}), good,
    ]) + b"\n\n" + good  # last line without a newline
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(content)
    convs, report, bad = read([path])
    assert report.lines_read == 15
    assert report.blank_lines == 6
    assert report.records_parsed == 5
    assert report.bad_lines == Counter({"invalid JSON": 1, "not a JSON object": 1, "invalid UTF-8": 1,
                                        "empty conversation": 1})
    assert [b.line for b in bad] == [4, 7, 10, 12]
    assert len(convs) == 5
    assert [c.id for c in convs] == [f"{path}:{n}" for n in (2, 5, 9, 13, 15)]
    summary = report.to_dict()
    assert summary["lines_read"] == summary["blank_lines"] + summary["records_parsed"] + summary["bad_lines"]


def test_accounting_across_files_and_formats(tmp_path, shared_data, wildchat_path) -> None:
    noisy = write_lines(tmp_path / "noisy.jsonl", [b"", b"{", dumps({"messages": [{"role": "user", "content": "x"}]})])
    _, report, bad = read([wildchat_path, noisy, shared_data / "oasst" / "en_100_tree.jsonl"])
    assert [(b.file, b.line) for b in bad] == [(str(noisy), 2)]
    assert report.lines_read == 30 + 3 + 100
    assert (report.blank_lines, report.records_parsed, sum(report.bad_lines.values())) == (1, 131, 1)


def test_truncated_gzip(tmp_path) -> None:
    records = [dumps({"id": f"c{i}", "messages": [{"role": "user", "content": f"question {i} " * 20}]})
               for i in range(1, 301)]
    full = gzip.compress(b"".join(r + b"\n" for r in records))
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(full[: len(full) // 2])
    after = write_lines(tmp_path / "after.jsonl", [records[0]])
    convs, report, bad = read([truncated, after])
    assert len(bad) == 1
    (b,) = bad
    complete = report.records_parsed - 1  # the one record of the next file
    assert 0 < complete < 300
    assert b.file == str(truncated) and b.line == complete + 1
    assert b.reason.startswith(f"unreadable file: stops after line {complete} (")
    assert report.bad_lines == Counter({"unreadable file": 1})
    # the complete lines before the cut are read, and reading goes on with the next file
    assert [c.id for c in convs] == [f"c{i}" for i in range(1, complete + 1)] + ["c1"]
    assert report.formats[str(after)] == "openai"


@pytest.mark.parametrize("name", ["cut.json.gz", "cut.ndjson.gz"])
def test_truncated_or_fake_gzip_other_kinds(tmp_path, name) -> None:
    record = {"messages": [{"role": "user", "content": "x" * 2000}]}
    data = dumps([record] * 50) if name.endswith(".json.gz") else b"\n".join([dumps(record)] * 50)
    full = gzip.compress(data)
    cut = tmp_path / name
    cut.write_bytes(full[: len(full) // 2])
    fake = tmp_path / ("fake-" + name)
    fake.write_bytes(data)  # not gzip at all
    convs, _, bad = read([cut, fake])
    assert [b.file for b in bad] == [str(cut), str(fake)]
    assert all(reason_category(b.reason) == "unreadable file" for b in bad)
    if name.endswith(".json.gz"):  # a .json file is one value: nothing of it can be used
        assert convs == [] and [b.line for b in bad] == [1, 1]


def test_invalid_json_array_file(tmp_path) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(b'[{"conversations": [{"from": "human", "value": "x"}]},')
    convs, report, bad = read([path])
    assert convs == [] and len(bad) == 1 and report.lines_read == 1
    assert bad[0].line == 1 and bad[0].reason.startswith("invalid JSON: ")
    assert bad[0].reason.endswith("(the whole .json file)")
    path.write_bytes(b'[{"conversations": [{"from": "human", "value": "\xff"}]}]')
    convs, _, bad = read([path])
    assert convs == [] and [b.reason for b in bad] == ["invalid UTF-8 (the whole .json file)"]


# ---------------------------------------------------------------------------- strict
def test_strict_raises_with_file_and_line(tmp_path) -> None:
    good = dumps({"messages": [{"role": "user", "content": "hi"}]})
    path = write_lines(tmp_path / "s.jsonl", [good, b"", good, b"{oops", good])
    seen: list[Conversation] = []
    with pytest.raises(UserError) as info:
        seen.extend(read_conversations([str(path)], strict=True))
    assert f"{path}:4" in str(info.value)
    assert "invalid JSON" in str(info.value)
    assert len(seen) == 2  # what came before the bad line was read

    path = write_lines(tmp_path / "t.jsonl", [good, dumps({"messages": [{"role": "bot", "content": "x"}]})])
    with pytest.raises(UserError, match=re.escape(f"{path}:2") + ".*unknown role"):
        list(read_conversations([str(path)], strict=True))


def test_strict_does_not_call_on_bad_or_count(tmp_path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [b"[]"])
    report, bad = ReadReport(), []
    with pytest.raises(UserError, match=re.escape(f"{path}:1")):
        list(read_conversations([str(path)], strict=True, report=report, on_bad=bad.append))
    assert bad == []


# ---------------------------------------------------------------------------- repair
@pytest.mark.parametrize("kind", list(KINDS))
def test_consecutive_same_role_turns_are_merged(tmp_path, kind) -> None:
    turns = [("system", "sys"), ("user", "a"), ("user", "b"), ("user", "c"), ("assistant", "x"),
             ("assistant", "y"), ("user", "d")]
    lines = [dumps(make_record(kind, turns, "merged")), dumps(make_record(kind, [("user", "q")], "plain"))]
    path = write_lines(tmp_path / f"{kind}.jsonl", lines)
    convs, report, bad = read([path])
    assert bad == []
    merged, plain = convs
    assert [(m.role, m.content) for m in merged.messages] == [
        ("system", "sys"), ("user", "a\n\nb\n\nc"), ("assistant", "x\n\ny"), ("user", "d")
    ]
    assert [m.extra.get("merged_turns") for m in merged.messages] == [None, 3, 2, None]
    assert merged.extra["merged_turns"] == 3
    assert "merged_turns" not in plain.extra
    assert report.repaired_conversations == 1 and report.conversations == 2
    assert report.to_dict()["conversations_with_merged_turns"] == 1


@pytest.mark.parametrize("kind", list(KINDS))
def test_system_message_after_first_turn_is_rejected(tmp_path, kind) -> None:
    lines = [
        dumps(make_record(kind, [("system", "s"), ("user", "q")], "ok")),
        dumps(make_record(kind, [("user", "q"), ("system", "s"), ("user", "r")], "late")),
        dumps(make_record(kind, [("user", "q"), ("assistant", "a"), ("system", "s")], "last")),
    ]
    path = write_lines(tmp_path / f"{kind}.jsonl", lines)
    convs, report, bad = read([path])
    assert [c.id for c in convs] == ["ok"]
    assert convs[0].messages[0] == Message("system", "s")
    assert bad == [BadLine(str(path), 2, "system message after the first turn"),
                   BadLine(str(path), 3, "system message after the first turn")]
    assert report.bad_lines == Counter({"system message after the first turn": 2})
    assert report.repaired_conversations == 0


def test_merged_wildchat_turns_keep_the_first_turn_fields(tmp_path, wildchat_raw) -> None:
    record = copy.deepcopy(wildchat_raw[0])
    first, reply = record["conversation"][:2]
    record["conversation"] = [first, {**first, "content": "and more", "turn_identifier": 1}, reply]
    path = write_lines(tmp_path / "w.jsonl", [dumps(record)])
    convs, report, bad = read([path])
    assert bad == [] and report.repaired_conversations == 1
    (conv,) = convs
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[0].content == first["content"] + "\n\nand more"
    assert conv.messages[0].extra["turn_identifier"] == first["turn_identifier"]
    assert conv.id == f"{record['conversation_hash']}-{first['turn_identifier']}"


def test_byte_order_mark_on_the_first_line_is_ignored(tmp_path):
    record = {"messages": [{"role": "user", "content": "hi"}]}
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + dumps(record) + b"\n" + dumps(record) + b"\n")
    convs, _report, bad = read([path])
    assert len(convs) == 2 and bad == []


def test_merged_turns_keep_the_later_turns_fields(tmp_path):
    record = {"conversation": [
        {"role": "user", "content": "a", "turn_identifier": 1},
        {"role": "user", "content": "b", "turn_identifier": 2},
        {"role": "assistant", "content": "c", "turn_identifier": 2},
    ]}
    convs, _, _ = read([write_lines(tmp_path / "w.jsonl", [dumps(record)])])
    first = convs[0].messages[0]
    assert first.content == "a\n\nb"
    assert first.extra == {"turn_identifier": 1, "merged_turns": 2, "merged_extra": [{"turn_identifier": 2}]}
