"""Read conversations from any supported input, as a stream, accounting for every line.

``read_conversations`` yields :class:`~userloop.conversation.Conversation` objects; everything
else that happened is counted in a :class:`ReadReport` and each unusable line is handed to
``on_bad`` (file, line number, reason). The accounting invariant, checked by the tests::

    lines_read == blank_lines + records_parsed + sum(bad_lines.values())
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from userloop.conversation import Conversation
from userloop.data import formats
from userloop.data.sources import BLANK, BadLine, ParseFailure, expand_inputs
from userloop.errors import UserError


@dataclass
class ReadReport:
    """What reading saw. ``bad_lines`` counts reasons by category (the text before ': ')."""

    lines_read: int = 0
    blank_lines: int = 0
    records_parsed: int = 0
    bad_lines: Counter[str] = field(default_factory=Counter)
    conversations: int = 0
    repaired_conversations: int = 0
    formats: dict[str, str] = field(default_factory=dict)

    def merge(self, other: ReadReport) -> None:
        """Add the counts of ``other`` (a report of a later part of the same input)."""
        for name in ("lines_read", "blank_lines", "records_parsed", "conversations", "repaired_conversations"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.bad_lines.update(other.bad_lines)
        for file, fmt in other.formats.items():
            self.formats.setdefault(file, fmt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines_read": self.lines_read,
            "blank_lines": self.blank_lines,
            "records_parsed": self.records_parsed,
            "bad_lines": sum(self.bad_lines.values()),
            "bad_lines_by_reason": dict(self.bad_lines.most_common()),
            "conversations_read": self.conversations,
            "conversations_with_merged_turns": self.repaired_conversations,
            "formats": self.formats,
        }


def reason_category(reason: str) -> str:
    return reason.split(": ", 1)[0]


def read_conversations(
    inputs: list[str],
    fmt: str | None = None,
    strict: bool = False,
    report: ReadReport | None = None,
    on_bad: Callable[[BadLine], None] | None = None,
) -> Iterator[Conversation]:
    """Stream conversations from files, folders and dataset ids (see :func:`expand_inputs`).

    ``fmt`` forces a format (one of :data:`formats.FORMATS`); by default each file's format is
    detected from its first recognisable record. ``strict`` makes the first bad line fatal.
    """
    if fmt is not None and fmt not in formats.FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of {', '.join(formats.FORMATS)}")
    sources = expand_inputs(inputs)
    report = report if report is not None else ReadReport()
    for source in sources:
        yield from read_records(source.name, source.records(), fmt, strict, report, on_bad)


def read_records(
    file: str,
    records: Iterable[tuple[int, Any]],
    fmt: str | None,
    strict: bool,
    report: ReadReport,
    on_bad: Callable[[BadLine], None] | None,
) -> Iterator[Conversation]:
    """Conversations from the ``(line, record)`` pairs of one file (see :meth:`Source.records`)."""
    file_format = fmt
    flat_trees = formats.OasstFlatTrees()
    flat_lines: list[int] = []

    def bad(line: int, reason: str) -> None:
        bad_line = BadLine(file, line, reason)
        if strict:
            raise UserError(f"bad input at {bad_line} (--strict)")
        report.bad_lines[reason_category(reason)] += 1
        if on_bad is not None:
            on_bad(bad_line)

    def flush_flat() -> list[Conversation]:
        try:
            threads = flat_trees.flush()
        except formats.BadRecord as err:
            for line in flat_lines:
                bad(line, str(err))
            threads = []
        else:
            report.records_parsed += len(flat_lines)
        flat_lines.clear()
        return threads

    def emit(conversations: list[Conversation]) -> Iterator[Conversation]:
        for conv in conversations:
            report.conversations += 1
            if "merged_turns" in conv.extra:
                report.repaired_conversations += 1
            yield conv

    for line, record in records:
        report.lines_read += 1
        if record is BLANK:
            report.blank_lines += 1
            continue
        if isinstance(record, ParseFailure):
            bad(line, record.reason)
            continue
        if isinstance(record, Conversation):  # a userloop Parquet file
            report.records_parsed += 1
            report.formats.setdefault(file, "userloop")
            yield from emit([record])
            continue
        if file_format is None:
            file_format = formats.detect(record)
            if file_format is None:
                bad(line, _unrecognised(record))
                continue
            report.formats[file] = file_format
        report.formats.setdefault(file, file_format)
        where = f"{file}:{line}"
        try:
            if file_format == "oasst" and formats.is_flat_oasst(record):
                if flat_lines and record.get("message_tree_id") != flat_trees.tree_id:
                    yield from emit(flush_flat())
                flat_trees.add(record)
                flat_lines.append(line)
                continue
            conversations = formats.CONVERTERS[file_format](record, where)
        except formats.BadRecord as err:
            bad(line, str(err))
            continue
        report.records_parsed += 1
        yield from emit(conversations)
    if flat_lines:
        yield from emit(flush_flat())


def _unrecognised(record: Any) -> str:
    if isinstance(record, dict):
        keys = ", ".join(sorted(record)[:6])
        return f"unrecognised record layout: keys {keys} (use --format)"
    return f"not a JSON object: {type(record).__name__}"
