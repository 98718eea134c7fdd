import random

import pytest

from userloop.metrics.diversity import first_turn_diversity, mean_pairwise_jaccard


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
