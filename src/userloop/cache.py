"""The user's cache folder and pickled values kept in it (the default testbed, trained detectors and classifiers)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from userloop.files import write_atomic

T = TypeVar("T")


def cache_dir() -> Path:
    """Where userloop caches what it builds once: ``$USERLOOP_CACHE`` or ``~/.cache/userloop``."""
    return Path(os.environ.get("USERLOOP_CACHE") or Path.home() / ".cache" / "userloop")


def cached_pickle(path: Path, build: Callable[[], T]) -> T:
    """The object pickled at ``path``, or ``build()``'s result, pickled there first (written atomically,
    so an interrupted write never leaves a truncated cache). A pickle that no longer loads (written by a
    userloop whose modules had other names, or damaged) is built again and replaced."""
    if path.is_file():
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except (pickle.UnpicklingError, EOFError, ImportError, AttributeError):
            pass
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, pickle.dumps(value))
    return value
