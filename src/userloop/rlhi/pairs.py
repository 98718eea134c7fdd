"""Preference pairs in TRL's conversational preference format, written as Parquet and as a ``datasets`` dataset.

One row per accepted rewrite: ``prompt`` (the conversation up to and including the user's request, a
list of ``{"role", "content"}`` messages), ``chosen`` (the rewrite) and ``rejected`` (the original), each
a one-message assistant list, as TRL's ``DPOTrainer`` reads them, plus ``user_id``, ``persona`` (the
derived persona text; null for users with too little history), ``feedback`` (the span that asked for
the change) and ``conversation_id``. Pairs from scored candidates (user-based rewards, part 2) add
``chosen_score`` and ``rejected_score`` (``write_pairs(..., scores=True)``); their ``feedback`` is null.
``rlhi build --mirrors`` and ``rlhi loop --mirrors`` add ``mirror`` (true for a persona-contrastive mirror,
:mod:`userloop.rlhi.mirrors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from userloop.errors import missing_dependency
from userloop.rlhi.rewrites import RewriteResult


def pair_record(result: RewriteResult, persona: str | None) -> dict[str, Any]:
    candidate = result.candidate
    return {"prompt": candidate.prompt,
            "chosen": [{"role": "assistant", "content": result.rewrite}],
            "rejected": [{"role": "assistant", "content": candidate.original}],
            "user_id": candidate.followup.user_id, "persona": persona, "feedback": candidate.feedback,
            "conversation_id": candidate.followup.conversation_id}


def features(scores: bool = False, mirrors: bool = False):
    """The dataset's schema (explicit, so an empty dataset has the same columns); ``scores`` adds the
    ``chosen_score`` and ``rejected_score`` columns, ``mirrors`` the ``mirror`` column."""
    from datasets import Features, Value

    message = {"role": Value("string"), "content": Value("string")}
    columns = {"prompt": [message], "chosen": [message], "rejected": [message], "user_id": Value("string"),
               "persona": Value("string"), "feedback": Value("string"), "conversation_id": Value("string")}
    if scores:
        columns |= {"chosen_score": Value("float64"), "rejected_score": Value("float64")}
    if mirrors:
        columns["mirror"] = Value("bool")
    return Features(columns)


def write_pairs(records: Sequence[dict[str, Any]], parquet_path: Path, dataset_dir: Path, scores: bool = False,
                mirrors: bool = False) -> None:
    """``records`` as ``parquet_path`` and as a dataset folder that ``datasets.load_from_disk`` reads
    (``scores``: with the score columns; ``mirrors``: with the ``mirror`` column)."""
    try:
        import datasets
    except ImportError:
        raise missing_dependency("datasets", "rlhi") from None
    datasets.disable_progress_bars()   # the CLI shows its own progress
    schema = features(scores, mirrors)
    # column by column, so that zero pairs still give a dataset (and a Parquet file) with every column
    dataset = datasets.Dataset.from_dict({name: [r[name] for r in records] for name in schema}, features=schema)
    dataset.to_parquet(str(parquet_path))
    dataset.save_to_disk(str(dataset_dir), num_shards=None if len(dataset) else 1)   # an empty one needs its shard named
