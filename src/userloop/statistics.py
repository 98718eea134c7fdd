"""Statistics that several layers share: intervals, standard errors and the diversity of a set of texts.

* :func:`wilson_interval`: the Wilson score interval of a binomial proportion (Wilson 1927).
* :func:`binomial_se`: the standard error of a proportion, sqrt(p (1 - p) / n).
* :func:`mean_se`: the standard error of a mean, the sample standard deviation (n - 1) over sqrt(n).
* :func:`mean_with_bootstrap_interval`: a mean and its percentile bootstrap interval (Efron and Tibshirani 1993,
  ch. 13).
* :func:`spearman`, :func:`kendall_tau_b`: rank correlations of two paired samples (Spearman 1904: Pearson's r of
  the average ranks; Kendall 1945: tau-b, ties corrected); ``None`` when one side is constant.
* :func:`bootstrap_resamples`, :func:`percentile_interval`: shared resamples of units and the 95% percentile
  bootstrap interval of any statistic's replicates on them.
* :func:`first_turn_diversity`: "Flipping the Dialogue" (arXiv 2510.06552, Table 2): 1 - the mean pairwise
  Jaccard similarity of the unigram sets of N first turns, x100 (the paper uses N = 2,000; real WildChat users
  score 94.01, UserLM-8b 94.55, GPT-4o 74.42). Unigrams are lower-cased word tokens (``\\w+``). Vectorised
  (:func:`mean_pairwise_jaccard`): with X the sparse binary turn-by-word matrix, the pairwise intersections
  are X X^T and the unions |a| + |b| - |a & b| (2,000 turns in well under a second).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

_TOKEN = re.compile(r"\w+")


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for the default ``z``); (0, 0) for no trials."""
    if trials == 0:
        return (0.0, 0.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_se(successes: int, trials: int) -> float:
    """The standard error of the proportion ``successes / trials`` (``trials`` at least 1)."""
    p = successes / trials
    return math.sqrt(p * (1 - p) / trials)


def mean_se(values: Sequence[float]) -> float:
    """The standard error of the mean of ``values`` (at least two): sample standard deviation / sqrt(n)."""
    return statistics.stdev(values) / math.sqrt(len(values))


def mean_with_bootstrap_interval(values: Sequence[float], samples: int, seed: int) -> tuple[float, tuple[float, float]]:
    """The mean of ``values`` (at least one) and its 95% percentile bootstrap interval: the 2.5% and 97.5%
    quantiles of the means of :func:`bootstrap_resamples` (``samples`` of them, seeded)."""
    import numpy as np

    array = np.asarray(values, dtype=float)
    means = array[np.asarray(bootstrap_resamples(len(array), samples, seed))].mean(axis=1)
    return float(array.mean()), percentile_interval(means.tolist())


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of paired ``x`` and ``y``: Pearson's r of their average ranks (ties
    handled); ``None`` with fewer than two pairs or when either side is constant."""
    if len(x) != len(y):
        raise ValueError("spearman needs paired samples of the same length")
    rx, ry = average_ranks(x), average_ranks(y)
    n = len(rx)
    if n < 2:
        return None
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of paired ``x`` and ``y``: (concordant - discordant) / sqrt((n0 - tx)(n0 - ty)) over all
    pairs, tx and ty the pairs tied in x and in y; ``None`` with fewer than two pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError("kendall_tau_b needs paired samples of the same length")
    concordant = discordant = tied_x = tied_y = pairs = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            pairs += 1
            dx, dy = x[i] - x[j], y[i] - y[j]
            tied_x += dx == 0
            tied_y += dy == 0
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def bootstrap_resamples(units: int, samples: int, seed: int) -> list[list[int]]:
    """``samples`` resamples of ``units`` units (index lists drawn with replacement by a seeded NumPy generator),
    for statistics that must share their resamples (Efron and Tibshirani 1993, ch. 6)."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, units, size=(samples, units)).tolist()


def percentile_interval(replicates: Sequence[float | None]) -> tuple[float, float] | None:
    """The 95% percentile bootstrap interval (Efron and Tibshirani 1993, ch. 13): the 2.5% and 97.5% quantiles of
    a statistic's bootstrap replicates, those where it is undefined (``None``) left out; ``None`` if all are."""
    import numpy as np

    values = [value for value in replicates if value is not None]
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def unigram_sets(texts: Sequence[str]) -> list[set[str]]:
    return [set(_TOKEN.findall(text.lower())) for text in texts]


def mean_pairwise_jaccard(texts: Sequence[str]) -> float:
    """Mean Jaccard similarity of unigram sets over all unordered pairs of ``texts`` (two empty sets are equal)."""
    import numpy as np
    from scipy.sparse import csr_matrix

    sets = unigram_sets(texts)
    n = len(sets)
    if n < 2:
        raise ValueError("need at least two texts")
    vocabulary: dict[str, int] = {}
    columns = [vocabulary.setdefault(token, len(vocabulary)) for s in sets for token in s]
    sizes = np.fromiter((len(s) for s in sets), dtype=np.int64, count=n)
    rows = np.repeat(np.arange(n), sizes)
    incidence = csr_matrix((np.ones(len(columns), dtype=np.int32), (rows, columns)), shape=(n, max(len(vocabulary), 1)))
    intersections = (incidence @ incidence.T).toarray().astype(np.float64)
    unions = sizes[:, None] + sizes[None, :] - intersections
    upper = np.triu_indices(n, k=1)
    inter, union = intersections[upper], unions[upper]
    similarity = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    return float(similarity.mean())


def first_turn_diversity(first_turns: Sequence[str]) -> float:
    """1 - mean pairwise unigram Jaccard similarity, x100 (higher is more diverse)."""
    return 100.0 * (1.0 - mean_pairwise_jaccard(first_turns))
