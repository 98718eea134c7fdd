"""One progress protocol for the whole library.

A long function takes ``progress: Progress`` and, for each long step, works inside ``with progress(description,
total) as task:``, reporting to the yielded :class:`Task`. The default, :func:`no_progress`, shows nothing; the
command line's (:mod:`userloop.display`) draws the bars on stderr. Functions that report a plain count take an
``on_progress(n)`` callback instead: a task is one (calling it advances it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Task:
    """What a long step reports to its progress bar; this one shows nothing."""

    def start(self, total: int | None, note: str = "", completed: int = 0) -> None:
        """A new phase of the step: ``total`` items (None: unknown), ``completed`` of them done, ``note`` names it."""

    def advance(self, n: int = 1) -> None:
        """``n`` more items done."""

    def set(self, completed: int, total: int | None) -> None:
        """``completed`` of ``total`` items done (a trainer's step callback)."""

    def count(self, n: int) -> None:
        """``n`` more turns done inside the items (conversations): the bar shows their rate."""

    def __call__(self, n: int = 1) -> None:
        """A task is an ``on_progress(n)`` callback: calling it advances it."""
        self.advance(n)


class Progress(Protocol):
    """``progress(description, total)``: a context for one long step, yielding its :class:`Task`."""

    def __call__(self, description: str, total: int | None = None) -> AbstractContextManager[Task]: ...


@contextmanager
def no_progress(description: str, total: int | None = None) -> Iterator[Task]:
    """The :class:`Progress` that shows nothing."""
    yield Task()
