import math
import random
import statistics

import pytest

from userloop.statistics import (
    binomial_se,
    first_turn_diversity,
    mean_pairwise_jaccard,
    mean_se,
    mean_with_bootstrap_interval,
    wilson_interval,
)


def _reference(texts):
    sets = [set(t.lower().split()) for t in texts]
    sims = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    return sum(sims) / len(sims)


def test_hand_computed_case():
    # {a,b} vs {b,c}: 1/3; {a,b} vs {d}: 0; {b,c} vs {d}: 0 -> mean 1/9
    assert mean_pairwise_jaccard(["a b", "B c", "d"]) == pytest.approx(1 / 9)
    assert first_turn_diversity(["a b", "B c", "d"]) == pytest.approx(100 * (1 - 1 / 9))
    assert first_turn_diversity(["same words", "same words"]) == 0.0


def test_matches_a_plain_loop_on_random_texts():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(60)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(1, 12))) for _ in range(150)]
    assert mean_pairwise_jaccard(texts) == pytest.approx(_reference(texts), rel=1e-9)


def test_needs_two_texts():
    with pytest.raises(ValueError):
        mean_pairwise_jaccard(["only one"])


def test_wilson_interval():
    assert wilson_interval(2, 4) == pytest.approx((0.1500, 0.8500), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35     # never below 0 even with no success


def test_standard_errors():
    assert binomial_se(1, 4) == pytest.approx(math.sqrt(0.25 * 0.75 / 4))
    assert binomial_se(0, 5) == 0.0
    # values 1, 2, 3, 4: sample variance 5/3, standard error sqrt(5/3 / 4)
    assert mean_se([1, 2, 3, 4]) == pytest.approx(math.sqrt(5 / 3 / 4))
    with pytest.raises(statistics.StatisticsError):
        mean_se([1.0])


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [1.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.5]
    mean, (low, high) = mean_with_bootstrap_interval(values, 2000, seed=3)
    assert mean == pytest.approx(statistics.fmean(values))
    assert low < mean < high
    assert mean_with_bootstrap_interval(values, 2000, seed=3) == (mean, (low, high))
    assert mean_with_bootstrap_interval([0.5] * 5, 100, seed=0) == (0.5, (0.5, 0.5))
