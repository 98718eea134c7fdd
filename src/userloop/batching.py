"""Cutting work into padded batches under a token budget: the one packer of generation and scoring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")


def token_budget_batches(items: Sequence[Item], length: Callable[[Item], int], max_tokens: int,
                         max_rows: int = 0, rows_per_item: int = 1) -> list[list[Item]]:
    """``items`` sorted by ``length`` (little padding) and cut into the fewest consecutive batches whose padded
    rectangle (items x ``rows_per_item`` x the longest length) stays within ``max_tokens`` and which hold at
    most ``max_rows`` items (0: no limit on either). An item too long for the budget alone is a batch of its own."""
    batches: list[list[Item]] = []
    for item in sorted(items, key=length):  # ascending: the item at hand is the longest of the batch it joins
        if (not batches or (max_rows and len(batches[-1]) == max_rows)
                or (max_tokens and (len(batches[-1]) + 1) * rows_per_item * length(item) > max_tokens)):
            batches.append([])
        batches[-1].append(item)
    return batches
