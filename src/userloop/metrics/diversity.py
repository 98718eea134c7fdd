"""First-turn diversity ("Flipping the Dialogue", Table 2).

Definition: 1 - the mean pairwise Jaccard similarity of the unigram sets of N first turns, x100
(the paper uses N = 2,000; real WildChat users score 94.01, UserLM-8b 94.55, GPT-4o 74.42).
Unigrams are lower-cased word tokens (``\\w+``). Vectorised: the pairwise intersections come from one
matrix product over the words that occur in at least two turns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r"\w+")


def unigram_sets(texts: Sequence[str]) -> list[set[str]]:
    return [set(_TOKEN.findall(text.lower())) for text in texts]


def mean_pairwise_jaccard(texts: Sequence[str]) -> float:
    """Mean Jaccard similarity of unigram sets over all unordered pairs of ``texts``."""
    sets = unigram_sets(texts)
    n = len(sets)
    if n < 2:
        raise ValueError("need at least two texts")
    document_frequency: dict[str, int] = {}
    for s in sets:
        for token in s:
            document_frequency[token] = document_frequency.get(token, 0) + 1
    shared = {token: i for i, token in enumerate(t for t, df in document_frequency.items() if df > 1)}
    incidence = np.zeros((n, len(shared)), dtype=np.float32)
    for row, s in enumerate(sets):
        columns = [shared[t] for t in s if t in shared]
        incidence[row, columns] = 1.0
    intersections = incidence @ incidence.T  # exact: counts below 2^24
    sizes = np.fromiter((len(s) for s in sets), dtype=np.float64, count=n)
    unions = sizes[:, None] + sizes[None, :] - intersections
    upper = np.triu_indices(n, k=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = np.where(unions[upper] > 0, intersections[upper] / unions[upper], 1.0)  # two empty sets are equal
    return float(similarity.mean())


def first_turn_diversity(first_turns: Sequence[str]) -> float:
    """1 - mean pairwise unigram Jaccard similarity, x100 (higher is more diverse)."""
    return 100.0 * (1.0 - mean_pairwise_jaccard(first_turns))
