import random
from collections import Counter

import pytest

from userloop.testbed.persona import (
    DOMAIN_COUNT_DISTRIBUTION,
    LOWERCASE_SHARE,
    PATIENCE_DISTRIBUTION,
    PERSONA_DISTRIBUTION,
    REGISTER_MATCHES_TONE,
    TYPO_FREE_SHARE,
    Persona,
    sample_persona,
)

N = 20_000
TOLERANCE = 0.015  # about 4 standard errors at N = 20,000


@pytest.fixture(scope="module")
def personas():
    rng = random.Random(0)
    return [sample_persona(rng) for _ in range(N)]


@pytest.mark.parametrize("field", sorted(PERSONA_DISTRIBUTION))
def test_categorical_fields_follow_the_spec(personas, field):
    counts = Counter(getattr(p, field) for p in personas)
    for value, p in PERSONA_DISTRIBUTION[field].items():
        assert abs(counts[value] / N - p) < TOLERANCE, (field, value, counts[value] / N)
    assert set(counts) == set(PERSONA_DISTRIBUTION[field])


def test_patience_domains_and_habits_follow_the_spec(personas):
    patience = Counter(p.patience for p in personas)
    assert all(abs(patience[k] / N - v) < TOLERANCE for k, v in PATIENCE_DISTRIBUTION.items())
    n_domains = Counter(len(p.domains) for p in personas)
    assert all(abs(n_domains[k] / N - v) < TOLERANCE for k, v in DOMAIN_COUNT_DISTRIBUTION.items())
    assert all(len(set(p.domains)) == len(p.domains) for p in personas)
    assert abs(sum(p.typo_rate == 0 for p in personas) / N - TYPO_FREE_SHARE) < TOLERANCE
    for tone, share in LOWERCASE_SHARE.items():
        group = [p for p in personas if p.tone == tone]
        assert abs(sum(p.lowercase for p in group) / len(group) - share) < 2 * TOLERANCE
    assert abs(sum(p.register == p.tone for p in personas) / N - REGISTER_MATCHES_TONE) < TOLERANCE
    assert all(0 <= p.politeness <= 1 and 0.4 <= p.feedback_rate <= 1 and p.typo_rate <= 0.08 for p in personas)


def test_persona_round_trips_and_describes_itself(personas):
    p = personas[0]
    assert Persona.from_dict(p.to_dict()) == p
    text = p.describe()
    assert p.detail in text and p.tone in text and all(d in text for d in p.domains)
