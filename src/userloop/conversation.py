"""The one conversation type that every part of userloop speaks.

A :class:`Conversation` is an ordered list of :class:`Message` (role ``system`` / ``user`` /
``assistant`` and text) plus the metadata that later stages need: where it came from, who the user
is, language and country, the assistant model, when it happened, moderation flags and, when known,
the user's high-level intent. Fields a source has that userloop does not model are kept in
``extra`` (conversation level) and ``Message.extra`` (turn level), so nothing a reader sees is lost.

Two serialised forms, both lossless for JSON-representable extras:

* JSON: :meth:`Conversation.to_dict` is an OpenAI-style ``{"messages": [...]}`` record with the
  metadata (and extras) as top-level keys, so any tool that reads chat JSONL reads it too.
* Parquet: :func:`parquet_schema`, one row per conversation; extras are stored as JSON text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

Role = Literal["system", "user", "assistant"]
ROLES: frozenset[str] = frozenset(("system", "user", "assistant"))


@dataclass(slots=True)
class Message:
    """One turn: who spoke, what they wrote, and any per-turn fields of the source."""

    role: str
    content: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        extra = {k: v for k, v in data.items() if k != "role" and k != "content"}
        return cls(data["role"], data["content"], extra)


@dataclass(slots=True)
class Conversation:
    """An ordered list of messages with the metadata of one chat."""

    messages: list[Message]
    id: str = ""
    source: str | None = None
    user_id: str | None = None
    language: str | None = None
    country: str | None = None
    model: str | None = None
    timestamp: str | None = None
    toxic: bool = False
    redacted: bool = False
    intent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def user_turns(self) -> list[str]:
        return [m.content for m in self.messages if m.role == "user"]

    @property
    def n_user_turns(self) -> int:
        return sum(1 for m in self.messages if m.role == "user")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """OpenAI-style record: ``messages`` plus metadata and extras as top-level keys."""
        data: dict[str, Any] = {name: getattr(self, name) for name in METADATA_FIELDS}
        data["messages"] = [m.to_dict() for m in self.messages]
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversation:
        """Inverse of :meth:`to_dict`; unknown top-level keys go to ``extra``."""
        known = {k: data[k] for k in METADATA_FIELDS if k in data}
        extra = {k: v for k, v in data.items() if k not in _DICT_KEYS}
        known.setdefault("id", "")
        return cls(messages=[Message.from_dict(m) for m in data["messages"]], extra=extra, **known)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> Conversation:
        return cls.from_dict(orjson.loads(text))


METADATA_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Conversation) if f.name not in ("messages", "extra")
)
_DICT_KEYS = frozenset((*METADATA_FIELDS, "messages"))


# ---------------------------------------------------------------------- Parquet
def _parquet_schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    columns = [(name, pa.bool_() if name in ("toxic", "redacted") else pa.string()) for name in METADATA_FIELDS]
    return pa.schema([*columns, ("messages", pa.list_(message)), ("message_extra", pa.string()), ("extra", pa.string())])


def to_arrow(conversations: Sequence[Conversation]):
    """Columnar form of ``conversations``: a ``pyarrow.Table`` with :func:`parquet_schema`.

    ``messages`` is a plain list of ``{role, content}`` structs (what chat training tools read);
    per-turn extras are one JSON array per conversation in ``message_extra`` (null when no turn
    has any), conversation extras a JSON object in ``extra``.
    """
    import pyarrow as pa

    schema = parquet_schema()
    columns = [pa.array([getattr(c, name) for c in conversations], type=schema.field(name).type) for name in METADATA_FIELDS]
    offsets = [0]
    roles: list[str] = []
    contents: list[str] = []
    message_extras: list[str | None] = []
    dumps = orjson.dumps
    for conv in conversations:
        has_extra = False
        for m in conv.messages:
            roles.append(m.role)
            contents.append(m.content)
            has_extra = has_extra or bool(m.extra)
        offsets.append(len(roles))
        message_extras.append(dumps([m.extra for m in conv.messages]).decode() if has_extra else None)
    messages = pa.StructArray.from_arrays(
        [pa.array(roles, pa.string()), pa.array(contents, pa.string())],
        fields=list(schema.field("messages").type.value_type),
    )
    columns.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), messages))
    columns.append(pa.array(message_extras, pa.string()))
    columns.append(pa.array([dumps(c.extra).decode() if c.extra else None for c in conversations], pa.string()))
    return pa.Table.from_arrays(columns, schema=schema)


def from_arrow(table) -> list[Conversation]:
    """Inverse of :func:`to_arrow`, for a table or record batch with the userloop schema."""
    rows = table.to_pydict()
    out = []
    for i in range(table.num_rows):
        turn_extras = orjson.loads(rows["message_extra"][i]) if rows["message_extra"][i] else None
        messages = [
            Message(m["role"], m["content"], turn_extras[j] if turn_extras else {}) for j, m in enumerate(rows["messages"][i])
        ]
        meta = {name: rows[name][i] for name in METADATA_FIELDS}
        meta["id"] = meta["id"] or ""
        extra = orjson.loads(rows["extra"][i]) if rows["extra"][i] else {}
        out.append(Conversation(messages=messages, extra=extra, **meta))
    return out


_SCHEMA = None


def parquet_schema():
    """The Arrow schema of userloop's Parquet files (built on first use: pyarrow loads lazily)."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = _parquet_schema()
    return _SCHEMA


def is_userloop_schema(schema) -> bool:
    return schema.names == parquet_schema().names


def write_parquet(conversations: Iterable[Conversation], path: str | Path, batch_size: int = 4096) -> int:
    """Write conversations to one Parquet file, streaming in batches; returns the count."""
    import pyarrow.parquet as pq

    count = 0
    with pq.ParquetWriter(str(path), parquet_schema(), compression="zstd") as writer:
        batch: list[Conversation] = []
        for conv in conversations:
            batch.append(conv)
            if len(batch) >= batch_size:
                writer.write_table(to_arrow(batch))
                count += len(batch)
                batch = []
        if batch or count == 0:
            writer.write_table(to_arrow(batch))
            count += len(batch)
    return count


def read_parquet(path: str | Path, batch_size: int = 4096) -> Iterator[Conversation]:
    """Stream conversations from a userloop Parquet file."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(str(path))
    for batch in parquet.iter_batches(batch_size=batch_size):
        yield from from_arrow(batch)


def write_jsonl(conversations: Iterable[Conversation], path: str | Path) -> int:
    """Write conversations as JSON lines (OpenAI-style records); returns the count."""
    count = 0
    with open(path, "wb") as f:
        for conv in conversations:
            f.write(conv.to_json() + b"\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> Iterator[Conversation]:
    """Stream conversations from a file written by :func:`write_jsonl`."""
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield Conversation.from_json(line)
