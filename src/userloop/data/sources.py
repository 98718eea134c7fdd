"""Where records come from: files, folders of shards, and Hugging Face datasets.

Every source yields ``(file, line, value)`` where ``value`` is the parsed record or a
:class:`BadLine`. ``line`` is the 1-based line number for JSON lines, the 1-based row for Parquet
and datasets, and the 1-based element for a JSON array file. Reading is streamed: JSON lines,
Parquet and datasets are never loaded whole (a ``.json`` array file is, as the format requires).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from userloop.conversation import from_arrow, is_userloop_schema
from userloop.errors import UserError, missing_dependency
from userloop.files import open_user_file

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
SUPPORTED_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".json.gz", ".parquet")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(slots=True, frozen=True)
class BadLine:
    """A record that could not be used, with where it was and why."""

    file: str
    line: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(slots=True, frozen=True)
class Source:
    """One input: a local file, or a dataset on the Hugging Face Hub (``hub_split`` set)."""

    name: str
    hub_split: str | None = None

    @property
    def is_jsonl(self) -> bool:
        return self.hub_split is None and self.name.lower().endswith(JSONL_SUFFIXES)

    @property
    def is_plain_jsonl(self) -> bool:
        """JSON lines that can be read from any byte offset (not gzipped)."""
        return self.is_jsonl and not self.name.lower().endswith(".gz")

    def records(self) -> Iterator[tuple[int, Any]]:
        """Yield ``(line, record)``; a line that cannot be parsed comes as a :class:`ParseFailure`,
        an empty line as :data:`BLANK`."""
        if self.hub_split is not None:
            return _hub_rows(self.name, self.hub_split)
        name = self.name.lower()
        if name.endswith(".parquet"):
            return _parquet_rows(self.name)
        if name.endswith((".json", ".json.gz")):
            return _json_array(self.name)
        return _jsonl_lines(self.name)  # .jsonl, .ndjson (gzipped or not) and any other file


@dataclass(slots=True, frozen=True)
class ParseFailure:
    """A line that is not JSON, with the reason."""

    reason: str


BLANK = object()  # an empty line: not a record, counted apart from bad lines


def parse_line(raw: bytes) -> Any:
    """One JSON line: the record, :data:`BLANK`, or a :class:`ParseFailure` with the reason."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return BLANK if not raw.strip() else ParseFailure(_json_error_reason(raw, err))


def parse_lines(lines: Iterable[tuple[int, bytes | ParseFailure]]) -> Iterator[tuple[int, Any]]:
    """Parse numbered raw lines (from :func:`raw_line_chunks` or :func:`range_lines`)."""
    for number, raw in lines:
        yield number, raw if isinstance(raw, ParseFailure) else parse_line(raw)


def _without_byte_order_mark(first_line: bytes) -> bytes:
    return first_line[3:] if first_line.startswith(b"\xef\xbb\xbf") else first_line


def raw_line_chunks(path: str, size: int) -> Iterator[list[tuple[int, bytes | ParseFailure]]]:
    """The raw lines of a JSON-lines file in lists of ``size`` ``(line, bytes)``, for parsing
    elsewhere; a file that cannot be read to its end gets a final :class:`ParseFailure`."""
    chunk: list[tuple[int, bytes | ParseFailure]] = []
    number = 0
    with open_user_file(path, "input file") as f:
        try:
            for number, raw in enumerate(f, 1):
                chunk.append((number, _without_byte_order_mark(raw) if number == 1 else raw))
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        except (OSError, EOFError) as err:  # a truncated or corrupt .gz ends the file here
            chunk.append((number + 1, ParseFailure(f"unreadable file: stops after line {number} ({err})")))
    if chunk:
        yield chunk


def byte_ranges(path: str, size: int) -> Iterator[tuple[int, int]]:
    """Split an uncompressed file into ranges of about ``size`` bytes that end at line ends,
    so that each range can be read and parsed by another process."""
    total = os.path.getsize(path)
    with open_user_file(path, "input file") as f:
        start = 0
        while start < total:
            f.seek(min(start + size, total))
            f.readline()
            end = min(f.tell(), total)
            yield start, end
            start = end


def range_lines(path: str, start: int, end: int) -> list[tuple[int, bytes]]:
    """The lines of ``path[start:end]``, numbered from 1 within the range."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if start == 0 and lines:
        lines[0] = _without_byte_order_mark(lines[0])
    return list(enumerate(lines, 1))


def _jsonl_lines(path: str) -> Iterator[tuple[int, Any]]:
    for chunk in raw_line_chunks(path, 1024):
        yield from parse_lines(chunk)


def _json_error_reason(raw: bytes, err: Exception) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8"
    return f"invalid JSON: {str(err).split(':', 1)[0]}"


def _json_array(path: str) -> Iterator[tuple[int, Any]]:
    try:
        with open_user_file(path, "input file") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # a truncated or corrupt .json.gz
        yield 1, ParseFailure(f"unreadable file: {err} (the whole .json file)")
        return
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        yield 1, ParseFailure(_json_error_reason(raw, err) + " (the whole .json file)")
        return
    if isinstance(data, list):
        yield from enumerate(data, 1)
    else:
        yield 1, data


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Rows from Parquet or datasets may hold datetimes and bytes; make them JSON values as
    the JSON releases have them (RFC 3339 strings), so every source gives the same records."""
    return orjson.loads(orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS, default=_json_default))


def _json_default(value: Any) -> Any:
    # orjson writes datetime itself; subclasses it hands over (pandas.Timestamp, which pyarrow
    # gives for timestamp[ns]) must come out in the same ISO form, not str()'s "YYYY-MM-DD hh:mm".
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)


def _parquet_rows(path: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise UserError(f"{path}: not a readable Parquet file ({err})") from None
    prepared = is_userloop_schema(parquet.schema_arrow)
    number = 0
    for batch in parquet.iter_batches(batch_size=2048):
        rows = from_arrow(batch) if prepared else batch.to_pylist()
        for row in rows:
            number += 1
            yield number, row if prepared else _jsonable(row)


def _hub_rows(name: str, split: str) -> Iterator[tuple[int, Any]]:
    try:
        import datasets
    except ImportError:
        raise missing_dependency("datasets", "hub") from None
    try:
        dataset = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as err:  # noqa: BLE001 - datasets raises many types for a missing or unreachable dataset
        raise UserError(f"cannot load dataset '{name}' (split {split}): {err}") from None
    for number, row in enumerate(dataset, 1):
        yield number, _jsonable(row)


def prepared_splits(path: Path) -> dict[str, str]:
    """The split files of a folder written by ``userloop data prepare`` (empty for any other path)."""
    if not ((path / "report.json").is_file() and (path / "train.parquet").is_file()):
        return {}
    return {split: str(path / f"{split}.parquet") for split in ("train", "validation", "test")
            if (path / f"{split}.parquet").is_file()}


def expand_inputs(inputs: list[str]) -> list[Source]:
    """Resolve files, folders (searched recursively for supported files, sorted) and Hugging
    Face dataset ids (``hf:NAME`` or ``hf:NAME:SPLIT``; the prefix keeps a mistyped local path
    from being looked up on the Hub)."""
    sources: list[Source] = []
    for item in inputs:
        path = Path(item)
        if item.startswith("hf:"):
            name, _, split = item[3:].partition(":")
            sources.append(Source(name, split or "train"))
        elif splits := prepared_splits(path):  # its split files, not its reports
            sources.extend(Source(file) for file in splits.values())
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and _supported(p) and not _hidden(p, path) and not _testbed_side_file(p))
            if not files:
                raise UserError(f"{item}: no supported files in this folder ({', '.join(SUPPORTED_SUFFIXES)})")
            sources.extend(Source(str(p)) for p in files)
        elif path.is_file():
            sources.append(Source(item))
        elif _HUB_ID.match(item) and not _supported(path):
            raise UserError(f"{item}: no such file or folder (for a Hugging Face dataset, write hf:{item})")
        else:
            raise UserError(f"{item}: no such file or folder")
    return sources


def _testbed_side_file(path: Path) -> bool:
    """``truth.jsonl`` and ``summary.json`` of a folder written by ``userloop testbed generate``:
    not conversations, so a folder of testbed output reads as its ``conversations.jsonl``."""
    folder = path.parent
    return (path.name in ("truth.jsonl", "summary.json") and (folder / "truth.jsonl").is_file()
            and (folder / "conversations.jsonl").is_file())


def _supported(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED_SUFFIXES)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
