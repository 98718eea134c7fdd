"""``userloop data prepare``: the UserLM paper's data filters, dedupe and user-level splits.

Pipeline (two passes, memory bounded by the batch size plus a few hundred bytes per kept
conversation for the dedupe index):

1. Stream every input; each conversation meets the filters in a fixed order and is dropped with
   the first reason that applies (:data:`DROP_REASONS`). Exact duplicates are dropped as they
   come (first occurrence kept). Survivors are written to a temporary Parquet file, and their
   MinHash signatures and users are kept.
2. Near duplicates are found over all survivors at once (:mod:`userloop.data.dedupe`), users are
   assigned to splits (:mod:`userloop.data.users`), and the temporary file is copied into one
   Parquet file per split with Arrow (no per-row Python work).

``DIR/report.json`` accounts for every input line and every conversation; ``DIR/bad_lines.jsonl``
lists each unusable line with its file, line number and reason.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from userloop.config import option
from userloop.conversation import Conversation, parquet_schema, to_arrow
from userloop.data import dedupe
from userloop.data.formats import FORMATS, detect, is_flat_oasst, language_name
from userloop.data.readers import ReadReport, read_records
from userloop.data.sources import (
    BLANK,
    BadLine,
    ParseFailure,
    Source,
    byte_ranges,
    expand_inputs,
    parse_lines,
    range_lines,
    raw_line_chunks,
)
from userloop.data.users import SPLIT_NAMES, USER_IDENTITIES, assign_splits, parse_ratios, user_key
from userloop.errors import UserError
from userloop.files import write_atomic
from userloop.version import __version__

DROP_REASONS = (
    "language", "toxic", "redacted", "synthetic", "deleted",
    "too_few_user_turns", "too_many_user_turns", "turn_too_long",
    "exact_duplicate", "near_duplicate",
)
BATCH_SIZE = 2048
PARALLEL_MIN_BYTES = 32 * 2**20
RANGE_BYTES = 8 * 2**20  # about 1,500 WildChat conversations
MAX_BAD_LINES_IN_REPORT = 100


@dataclass
class PrepareConfig:
    """Options of ``userloop data prepare``; the CLI flags are generated from the help texts."""

    language: str | None = option("English", "keep conversations in this language ('any' keeps all; name or ISO code); conversations with no recorded language pass and are counted")
    drop_toxic: bool = option(True, "drop conversations flagged toxic")
    drop_redacted: bool = option(False, "drop conversations whose PII was redacted")
    drop_synthetic: bool = option(True, "drop conversations a source marks as model-written or deleted (OpenAssistant)")
    min_user_turns: int = option(1, "drop conversations with fewer user turns")
    max_user_turns: int = option(100, "drop conversations with more user turns (0: no limit)")
    max_turn_chars: int = option(10_000, "drop conversations with a turn longer than this many characters (0: no limit)")
    exact_dedupe: bool = option(True, "drop conversations whose user turns repeat an earlier conversation exactly")
    near_dedupe: bool = option(True, "drop near-duplicate conversations (MinHash-LSH over the user turns)")
    near_dup_threshold: float = option(0.8, "estimated Jaccard similarity of user-turn word 3-grams at or above which two conversations are near duplicates")
    user_identity: str = option("user+agent", "how conversations are grouped into users: 'user+agent' (WildChat: hashed_ip plus user-agent) or 'user'")
    splits: str = option("90/5/5", "train/validation/test shares of users, stratified by country")
    seed: int = option(0, "seed of the user split")
    format: str | None = option(None, "force the input format (wildchat, openai, sharegpt, oasst, prompts); detected per "
                                     "file by default")
    strict: bool = option(False, "stop at the first bad line instead of reporting it")
    workers: int = option(0, "processes that parse JSON-lines input (0: one per core for inputs over 32 MiB, else 1)")

    def validate(self) -> None:
        if self.language is not None and not self.language.strip():
            raise UserError("--language must be a language name, an ISO code or 'any'")
        if self.min_user_turns < 0 or self.max_user_turns < 0 or self.max_turn_chars < 0:
            raise UserError("--min-user-turns, --max-user-turns and --max-turn-chars must be >= 0")
        if self.max_user_turns and self.max_user_turns < self.min_user_turns:
            raise UserError("--max-user-turns is below --min-user-turns: nothing would be kept")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise UserError("--near-dup-threshold must be in (0, 1]")
        if self.user_identity not in USER_IDENTITIES:
            raise UserError(f"--user-identity must be one of {', '.join(USER_IDENTITIES)}")
        if self.workers < 0:
            raise UserError("--workers must be >= 0")
        if self.format is not None and self.format not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}")
        parse_ratios(self.splits)


@dataclass
class PrepareResult:
    out: Path
    report: dict[str, Any]


def drop_reason(conv: Conversation, config: PrepareConfig, language: str | None) -> str | None:
    """The first filter ``conv`` fails, or None. ``language`` is the normalised wanted language."""
    if language is not None and conv.language is not None and conv.language.lower() != language:
        return "language"
    if config.drop_toxic and conv.toxic:
        return "toxic"
    if config.drop_redacted and conv.redacted:
        return "redacted"
    if config.drop_synthetic:
        if conv.extra.get("synthetic") is True:
            return "synthetic"
        if conv.extra.get("deleted") is True:
            return "deleted"
    n_user = conv.n_user_turns
    if n_user < config.min_user_turns:
        return "too_few_user_turns"
    if config.max_user_turns and n_user > config.max_user_turns:
        return "too_many_user_turns"
    if config.max_turn_chars and any(len(m.content) > config.max_turn_chars for m in conv.messages):
        return "turn_too_long"
    return None


def prepare(
    inputs: list[str],
    out: str | Path,
    config: PrepareConfig | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PrepareResult:
    """Filter, dedupe and split ``inputs`` into ``out/{train,validation,test}.parquet``.

    ``on_progress`` is called with the number of conversations read since the last call.
    """
    config = config or PrepareConfig()
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".prepare-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.perf_counter()
    try:
        report = _run(inputs, out, work, config, on_progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - started, 3)
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return PrepareResult(out, report)


@dataclass
class _Chunk:
    """What pass 1 learns from one stretch of input, kept in input order."""

    part: str  # Parquet file holding the conversations that passed the filters
    exact_keys: np.ndarray
    signatures: np.ndarray | None  # uint32 MinHash signatures (near dedupe on)
    has_words: np.ndarray | None
    user_keys: list[str]
    countries: list[str | None]
    without_user_id: np.ndarray
    dropped: Counter[str]
    language_unknown: int
    read: ReadReport = field(default_factory=ReadReport)
    bad_lines: list[BadLine] = field(default_factory=list)


def _wanted_language(config: PrepareConfig) -> str | None:
    if config.language is None or config.language.lower() == "any":
        return None
    return (language_name(config.language) or config.language).lower()


def _summarise(conversations: list[Conversation], config: PrepareConfig, part: str) -> _Chunk:
    """Filter a batch of conversations, write the survivors to the Parquet file ``part`` and
    return what dedupe and splitting need."""
    import pyarrow.parquet as pq

    wanted = _wanted_language(config)
    dropped: Counter[str] = Counter()
    kept: list[Conversation] = []
    language_unknown = 0
    for conv in conversations:
        language_unknown += conv.language is None
        reason = drop_reason(conv, config, wanted)
        if reason is None:
            kept.append(conv)
        else:
            dropped[reason] += 1
    signatures = has_words = None
    if config.near_dedupe:
        minhash = dedupe.MinHashConfig(threshold=config.near_dup_threshold)
        sig, has_words = dedupe.signatures(["\n".join(c.user_turns) for c in kept], minhash)
        signatures = sig.astype(np.uint32)
    pq.write_table(to_arrow(kept), part, compression="lz4")
    return _Chunk(
        part=part,
        exact_keys=np.fromiter((dedupe.exact_key(c.user_turns) for c in kept), dtype=np.uint64, count=len(kept)),
        signatures=signatures,
        has_words=has_words,
        user_keys=[user_key(c, config.user_identity) for c in kept],
        countries=[c.country for c in kept],
        without_user_id=np.fromiter((not c.user_id for c in kept), dtype=bool, count=len(kept)),
        dropped=dropped,
        language_unknown=language_unknown,
    )


def _parse_chunk(file: str, lines: list | tuple[int, int], fmt: str | None, config: PrepareConfig, part: str) -> _Chunk:
    """Worker entry point: parse the raw JSON lines of one file (given, or a byte range to read),
    then :func:`_summarise` them. Bad lines are returned, never raised: with a byte range their
    line numbers count from the range's start, and the caller puts them right."""
    gc.disable()  # many short-lived acyclic objects: collection only costs time
    if isinstance(lines, tuple):
        lines = range_lines(file, *lines)
    read = ReadReport()
    bad_lines: list[BadLine] = []
    conversations = list(read_records(file, parse_lines(lines), fmt, False, read, bad_lines.append))
    chunk = _summarise(conversations, config, part)
    chunk.read, chunk.bad_lines = read, bad_lines
    return chunk


def _file_format(source: Source, fmt: str | None) -> tuple[str | None, bool]:
    """The format of a JSON-lines file from its first recognisable record, and whether the
    file can be parsed in parallel chunks (flat OASST rows must be read in one piece)."""
    for _, record in parse_lines(next(raw_line_chunks(source.name, 256), [])):
        if isinstance(record, ParseFailure) or record is BLANK:
            continue
        found = fmt or detect(record)
        if found is not None:
            return found, not (found == "oasst" and is_flat_oasst(record))
    return fmt, True


def _quiet_worker() -> None:
    """Workers never print; fresh std streams also avoid locks inherited from a parent thread."""
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker


def _start_pool(workers: int) -> ProcessPoolExecutor | None:
    """Worker processes for parsing, started before any thread of ours (fork is safe then; it
    also spares callers the ``if __name__ == '__main__'`` guard that spawn needs)."""
    if workers <= 1:
        return None
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_quiet_worker)
    pool.submit(int).result()  # start the processes now
    return pool


def _chunks(sources: list[Source], config: PrepareConfig, pool: ProcessPoolExecutor | None, workers: int,
            read: ReadReport, on_bad, work: Path) -> Iterator[_Chunk]:
    """Pass 1 over all sources, in input order, one part file per chunk under ``work``.
    JSON-lines files are parsed by the ``pool``'s ``workers`` processes when there is a pool;
    everything else is read here."""
    parts = (str(work / f"part-{i:07d}.parquet") for i in itertools.count())
    for source in sources:
        fmt, parallel = config.format, False
        if pool is not None and source.is_jsonl:  # workers need the file's format before they start
            fmt, parallel = _file_format(source, config.format)
        if parallel:
            # workers read their own byte ranges of a plain file; a gzipped one is read here in chunks of lines
            pieces = (byte_ranges(source.name, RANGE_BYTES) if source.is_plain_jsonl
                      else raw_line_chunks(source.name, BATCH_SIZE))
            in_flight: deque[Future] = deque()
            lines_before = 0
            for piece in itertools.chain(pieces, [None]):
                if piece is not None:
                    in_flight.append(pool.submit(_parse_chunk, source.name, piece, fmt, config, next(parts)))
                while in_flight and (piece is None or len(in_flight) >= 2 * workers):
                    chunk = in_flight.popleft().result()
                    if source.is_plain_jsonl:  # line numbers counted from the start of the range
                        chunk.bad_lines = [BadLine(b.file, b.line + lines_before, b.reason) for b in chunk.bad_lines]
                    lines_before += chunk.read.lines_read
                    if config.strict and chunk.bad_lines:
                        raise UserError(f"bad input at {chunk.bad_lines[0]} (--strict)")
                    yield chunk
            continue
        batch: list[Conversation] = []
        for conv in read_records(source.name, source.records(), fmt, config.strict, read, on_bad):
            batch.append(conv)
            if len(batch) >= BATCH_SIZE:
                yield _summarise(batch, config, next(parts))
                batch = []
        yield _summarise(batch, config, next(parts))


def _auto_workers(sources: list[Source]) -> int:
    """Worker processes pay off on large JSON-lines inputs only (each costs ~0.5 s to start)."""
    size = sum(Path(s.name).stat().st_size for s in sources if s.is_jsonl)
    return min(os.cpu_count() or 1, 8) if size >= PARALLEL_MIN_BYTES else 1


def _run(inputs, out: Path, work: Path, config: PrepareConfig, on_progress) -> dict[str, Any]:
    started = time.perf_counter()

    sources = expand_inputs(inputs)
    workers = config.workers or _auto_workers(sources)
    pool = _start_pool(workers)
    read = ReadReport()
    dropped: Counter[str] = Counter()
    language_unknown = 0
    no_user_id = 0
    seen_exact: set[int] = set()
    user_index: dict[str, int] = {}
    user_country: dict[str, str | None] = {}
    conv_users: list[np.ndarray] = []
    signatures: list[np.ndarray] = []
    has_words: list[np.ndarray] = []
    minhash = dedupe.MinHashConfig(threshold=config.near_dup_threshold)
    bad_examples: list[dict[str, Any]] = []
    bad_file = open(out / "bad_lines.jsonl", "wb")  # noqa: SIM115 - closed in the finally below

    def on_bad(bad: BadLine) -> None:
        bad_file.write(orjson.dumps(bad.to_dict()) + b"\n")
        if len(bad_examples) < MAX_BAD_LINES_IN_REPORT:
            bad_examples.append(bad.to_dict())

    def user_indices(chunk: _Chunk, mask: np.ndarray) -> np.ndarray:
        """Index of each row's user (-1 for rows already dropped as exact duplicates)."""
        indices = np.full(len(mask), -1, dtype=np.int64)
        for row in np.flatnonzero(mask).tolist():
            key = chunk.user_keys[row]
            index = user_index.get(key)
            if index is None:
                index = user_index[key] = len(user_index)
                user_country[key] = chunk.countries[row]
            indices[row] = index
        return indices

    parts: list[str] = []
    exact_keep: list[np.ndarray] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the stream makes millions of short-lived acyclic objects; collection only costs time
    conversations_before = 0
    try:
        for chunk in _chunks(sources, config, pool, workers, read, on_bad, work):
            read.merge(chunk.read)
            for bad in chunk.bad_lines:
                on_bad(bad)
            dropped.update(chunk.dropped)
            language_unknown += chunk.language_unknown
            mask = np.ones(len(chunk.exact_keys), dtype=bool)
            if config.exact_dedupe:
                for row, key in enumerate(chunk.exact_keys.tolist()):
                    if key in seen_exact:
                        mask[row] = False
                    else:
                        seen_exact.add(key)
                dropped["exact_duplicate"] += int((~mask).sum())
            no_user_id += int(chunk.without_user_id[mask].sum())
            conv_users.append(user_indices(chunk, mask))
            exact_keep.append(mask)
            parts.append(chunk.part)
            if chunk.signatures is not None:
                signatures.append(chunk.signatures)
                has_words.append(chunk.has_words)
            if on_progress is not None:
                on_progress(read.conversations - conversations_before)
                conversations_before = read.conversations
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bad_file.close()
        if gc_was_enabled:
            gc.enable()

    timings = {"read_filter_hash": time.perf_counter() - started}
    users_of_rows = np.concatenate(conv_users) if conv_users else np.zeros(0, dtype=np.int64)
    keep = np.concatenate(exact_keep) if exact_keep else np.zeros(0, dtype=bool)
    if config.near_dedupe and signatures:
        near = dedupe.near_duplicates(np.concatenate(signatures), np.concatenate(has_words) & keep, minhash)
        dropped["near_duplicate"] = int(near.sum())
        keep &= ~near

    kept_users = np.unique(users_of_rows[keep])
    keys = list(user_index)
    split_of_user_key = assign_splits({keys[i]: user_country[keys[i]] for i in kept_users}, parse_ratios(config.splits), config.seed)
    split_of_user = np.full(len(keys), -1, dtype=np.int8)
    for i in kept_users:
        split_of_user[i] = split_of_user_key[keys[i]]
    split_of_row = np.where(keep, split_of_user[users_of_rows], -1)

    timings["near_dedupe_and_splits"] = time.perf_counter() - started - timings["read_filter_hash"]
    splits_report = _write_splits(parts, out, split_of_row, users_of_rows)
    timings["write_splits"] = time.perf_counter() - started - sum(timings.values())
    read_dict = read.to_dict()
    kept_total = sum(s["conversations"] for s in splits_report.values())
    return {
        "userloop_version": __version__,
        "inputs": [str(i) for i in inputs],
        "config": asdict(config),
        "lines": {k: read_dict[k] for k in ("lines_read", "blank_lines", "records_parsed", "bad_lines", "bad_lines_by_reason")},
        "bad_lines_file": "bad_lines.jsonl",
        "bad_line_examples": bad_examples,
        "formats": read_dict["formats"],
        "conversations": {
            "read": read_dict["conversations_read"],
            "with_merged_turns": read_dict["conversations_with_merged_turns"],
            "language_not_recorded": language_unknown,
            "without_user_id": no_user_id,
            "dropped": {reason: dropped.get(reason, 0) for reason in DROP_REASONS},
            "kept": kept_total,
        },
        "near_dedupe": {"num_perm": minhash.num_perm, "bands_rows": list(minhash.bands_rows), "ngram": minhash.ngram,
                        "threshold": minhash.threshold} if config.near_dedupe else None,
        "splits": splits_report,
        "workers": workers,
        "seconds_by_phase": {k: round(v, 3) for k, v in timings.items()},
    }


def _write_splits(parts: list[str], out: Path, split_of_row: np.ndarray, users_of_rows: np.ndarray) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writers = [pq.ParquetWriter(str(out / f"{name}.parquet"), parquet_schema(), compression="zstd") for name in SPLIT_NAMES]
    try:
        offset = 0
        with ThreadPoolExecutor(max_workers=1) as reader:  # decode the next part while this one is written
            upcoming = reader.submit(pq.read_table, parts[0]) if parts else None
            for i in range(len(parts)):
                table = upcoming.result()
                if i + 1 < len(parts):
                    upcoming = reader.submit(pq.read_table, parts[i + 1])
                rows = split_of_row[offset : offset + table.num_rows]
                offset += table.num_rows
                for index, writer in enumerate(writers):
                    selected = table.filter(pa.array(rows == index))
                    if selected.num_rows:
                        writer.write_table(selected)
    finally:
        for writer in writers:
            writer.close()
    report = {}
    for index, name in enumerate(SPLIT_NAMES):
        mask = split_of_row == index
        report[name] = {"conversations": int(mask.sum()), "users": len(np.unique(users_of_rows[mask])),
                        "file": f"{name}.parquet"}
    return report
