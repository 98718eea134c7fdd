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
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from userloop import __version__
from userloop.conversation import Conversation, parquet_schema, to_arrow
from userloop.data import dedupe
from userloop.data.formats import FORMATS, language_name
from userloop.data.readers import ReadReport, read_conversations
from userloop.data.sources import BadLine
from userloop.data.users import SPLIT_NAMES, USER_IDENTITIES, assign_splits, parse_ratios, user_key
from userloop.errors import UserError

DROP_REASONS = (
    "language", "toxic", "redacted", "synthetic", "deleted",
    "too_few_user_turns", "too_many_user_turns", "turn_too_long",
    "exact_duplicate", "near_duplicate",
)
BATCH_SIZE = 2048
MAX_BAD_LINES_IN_REPORT = 100


def _option(default: Any, help: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class PrepareConfig:
    """Options of ``userloop data prepare``; the CLI flags are generated from the help texts."""

    language: str | None = _option("English", "keep conversations in this language ('any' keeps all; name or ISO code); conversations with no recorded language are kept and counted")
    drop_toxic: bool = _option(True, "drop conversations flagged toxic")
    drop_redacted: bool = _option(False, "drop conversations whose PII was redacted")
    drop_synthetic: bool = _option(True, "drop conversations a source marks as model-written or deleted (OpenAssistant)")
    min_user_turns: int = _option(1, "drop conversations with fewer user turns")
    max_user_turns: int = _option(100, "drop conversations with more user turns (0: no limit)")
    max_turn_chars: int = _option(10_000, "drop conversations with a turn longer than this many characters (0: no limit)")
    exact_dedupe: bool = _option(True, "drop conversations whose user turns repeat an earlier conversation exactly")
    near_dedupe: bool = _option(True, "drop near-duplicate conversations (MinHash-LSH over the user turns)")
    near_dup_threshold: float = _option(0.8, "estimated Jaccard similarity of user-turn word 3-grams at or above which two conversations are near duplicates")
    user_identity: str = _option("user+agent", "how conversations are grouped into users: 'user+agent' (WildChat: hashed_ip plus user-agent) or 'user'")
    splits: str = _option("90/5/5", "train/validation/test shares of users, stratified by country")
    seed: int = _option(0, "seed of the user split")
    format: str | None = _option(None, f"force the input format ({', '.join(FORMATS)}); detected per file by default")
    strict: bool = _option(False, "stop at the first bad line instead of reporting it")

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
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return PrepareResult(out, report)


def _run(inputs, out: Path, work: Path, config: PrepareConfig, on_progress) -> dict[str, Any]:
    import pyarrow.parquet as pq

    wanted = None if config.language is None or config.language.lower() == "any" else language_name(config.language).lower()
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

    bad_file = open(out / "bad_lines.jsonl", "wb")

    def on_bad(bad: BadLine) -> None:
        bad_file.write(orjson.dumps(bad.to_dict()) + b"\n")
        if len(bad_examples) < MAX_BAD_LINES_IN_REPORT:
            bad_examples.append(bad.to_dict())

    temp_path = work / "kept.parquet"
    batch: list[Conversation] = []

    def flush(writer) -> None:
        if not batch:
            return
        if pending_write:  # one write in flight: Parquet encoding runs beside parsing
            pending_write.pop().result()
        pending_write.append(background.submit(writer.write_table, to_arrow(batch)))
        conv_users.append(np.fromiter((_user_index(c) for c in batch), dtype=np.int64, count=len(batch)))
        if config.near_dedupe:
            sig, words = dedupe.signatures(["\n".join(c.user_turns) for c in batch], minhash)
            signatures.append(sig.astype(np.uint32))
            has_words.append(words)
        batch.clear()

    def _user_index(conv: Conversation) -> int:
        key = user_key(conv, config.user_identity)
        index = user_index.get(key)
        if index is None:
            index = user_index[key] = len(user_index)
            user_country[key] = conv.country
        return index

    pending_progress = 0
    background = ThreadPoolExecutor(max_workers=1)
    pending_write: list[Future] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the stream makes millions of short-lived acyclic objects; collection only costs time
    try:
        with pq.ParquetWriter(str(temp_path), parquet_schema(), compression="lz4") as writer:
            for conv in read_conversations(inputs, fmt=config.format, strict=config.strict, report=read, on_bad=on_bad):
                pending_progress += 1
                if on_progress is not None and pending_progress >= 1000:
                    on_progress(pending_progress)
                    pending_progress = 0
                if conv.language is None:
                    language_unknown += 1
                reason = drop_reason(conv, config, wanted)
                if reason is None and config.exact_dedupe:
                    key = dedupe.exact_key(conv.user_turns)
                    if key in seen_exact:
                        reason = "exact_duplicate"
                    else:
                        seen_exact.add(key)
                if reason is not None:
                    dropped[reason] += 1
                    continue
                if not conv.user_id:
                    no_user_id += 1
                batch.append(conv)
                if len(batch) >= BATCH_SIZE:
                    flush(writer)
            flush(writer)
            for future in pending_write:
                future.result()
    finally:
        background.shutdown()
        bad_file.close()
        if gc_was_enabled:
            gc.enable()
    if on_progress is not None and pending_progress:
        on_progress(pending_progress)

    users_of_rows = np.concatenate(conv_users) if conv_users else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(users_of_rows), dtype=bool)
    if config.near_dedupe and signatures:
        near = dedupe.near_duplicates(np.concatenate(signatures), np.concatenate(has_words), minhash)
        dropped["near_duplicate"] = int(near.sum())
        keep &= ~near

    kept_users = np.unique(users_of_rows[keep])
    keys = list(user_index)
    split_of_user_key = assign_splits({keys[i]: user_country[keys[i]] for i in kept_users}, parse_ratios(config.splits), config.seed)
    split_of_user = np.full(len(keys), -1, dtype=np.int8)
    for i in kept_users:
        split_of_user[i] = split_of_user_key[keys[i]]
    split_of_row = np.where(keep, split_of_user[users_of_rows], -1)

    splits_report = _write_splits(temp_path, out, split_of_row, users_of_rows)
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
            "language_not_recorded_kept": language_unknown,
            "without_user_id": no_user_id,
            "dropped": {reason: dropped.get(reason, 0) for reason in DROP_REASONS},
            "kept": kept_total,
        },
        "near_dedupe": {"num_perm": minhash.num_perm, "bands_rows": list(minhash.bands_rows), "ngram": minhash.ngram,
                        "threshold": minhash.threshold} if config.near_dedupe else None,
        "splits": splits_report,
    }


def _write_splits(temp_path: Path, out: Path, split_of_row: np.ndarray, users_of_rows: np.ndarray) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writers = [pq.ParquetWriter(str(out / f"{name}.parquet"), parquet_schema(), compression="zstd") for name in SPLIT_NAMES]
    try:
        offset = 0
        for record_batch in pq.ParquetFile(str(temp_path)).iter_batches(batch_size=BATCH_SIZE):
            rows = split_of_row[offset : offset + record_batch.num_rows]
            offset += record_batch.num_rows
            for index, writer in enumerate(writers):
                selected = record_batch.filter(pa.array(rows == index))
                if selected.num_rows:
                    writer.write_batch(selected)
    finally:
        for writer in writers:
            writer.close()
    report = {}
    for index, name in enumerate(SPLIT_NAMES):
        mask = split_of_row == index
        report[name] = {"conversations": int(mask.sum()), "users": int(len(np.unique(users_of_rows[mask]))),
                        "file": f"{name}.parquet"}
    return report
