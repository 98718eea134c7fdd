"""``userloop data stats``: a readable summary of any supported input or prepared folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from userloop.data.readers import ReadReport, read_conversations
from userloop.data.sources import prepared_splits
from userloop.data.users import user_key


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    array = np.asarray(values)
    return {"mean": round(float(array.mean()), 2), "median": round(float(np.median(array)), 1),
            "p95": round(float(np.percentile(array, 95)), 1), "max": int(array.max())}


def stats(inputs: list[str], fmt: str | None = None, on_progress=None) -> dict[str, Any]:
    """Counts, turns, lengths, languages and users of ``inputs``; a prepared folder is
    summarised per split."""
    groups = _groups(inputs)
    return {name: _stats(paths, fmt, on_progress) for name, paths in groups.items()}


def _groups(inputs: list[str]) -> dict[str, list[str]]:
    splits = prepared_splits(Path(inputs[0])) if len(inputs) == 1 else {}
    return {name: [file] for name, file in splits.items()} or {"all": inputs}


def _stats(inputs: list[str], fmt: str | None, on_progress) -> dict[str, Any]:
    report = ReadReport()
    user_turns: list[int] = []
    turn_chars: list[int] = []
    languages: Counter[str] = Counter()
    countries: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    users: set[str] = set()
    ends_with_user = 0
    for conv in read_conversations(inputs, fmt=fmt, report=report):
        user_turns.append(conv.n_user_turns)
        turn_chars.extend(len(m.content) for m in conv.messages if m.role == "user")
        languages[conv.language or "(not recorded)"] += 1
        countries[conv.country or "(not recorded)"] += 1
        sources[conv.source or "(unknown)"] += 1
        users.add(user_key(conv))
        ends_with_user += conv.messages[-1].role == "user"
        if on_progress is not None:
            on_progress(1)
    read = report.to_dict()
    return {
        "conversations": read["conversations_read"],
        "users": len(users),
        "lines_read": read["lines_read"],
        "bad_lines": read["bad_lines"],
        "bad_lines_by_reason": read["bad_lines_by_reason"],
        "user_turns_per_conversation": _summary(user_turns),
        "characters_per_user_turn": _summary(turn_chars),
        "conversations_ending_on_a_user_turn": ends_with_user,
        "languages": dict(languages.most_common(10)),
        "countries": dict(countries.most_common(10)),
        "sources": dict(sources.most_common()),
    }
