"""``userloop.data.dedupe``: exact keys, MinHash signatures, LSH near-duplicate detection."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userloop.data import dedupe
from userloop.data.dedupe import MinHashConfig, exact_key, near_duplicates, optimal_bands, signatures

CONFIG = MinHashConfig()
VOCAB = [f"{a}{b}{c}" for a in "bcdfghklmnprstvz" for b in "aeiou" for c in "bdgklmnprst"]


def text(rng: random.Random, n: int, vocab: list[str] = VOCAB) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))


def shingle_set(t: str, n: int = 3) -> set[tuple[str, ...]]:
    """Word n-grams as the module defines them: lower-cased runs of [A-Za-z0-9_] and non-ASCII."""
    tokens = re.findall(r"[A-Za-z0-9_\x80-\U0010ffff]+", t.lower())
    if not tokens:
        return set()
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def estimate(sig: np.ndarray, i: int, j: int) -> float:
    return float((sig[i] == sig[j]).mean())


# --------------------------------------------------------------------------- exact
def test_exact_key():
    assert exact_key(["hello", "world"]) == exact_key(["hello", "world"])
    assert exact_key(["  hello\n", "world "]) == exact_key(["hello", "world"])  # surrounding whitespace
    assert exact_key(["hello", "world"]) != exact_key(["world", "hello"])
    assert exact_key(["hello world"]) != exact_key(["hello", "world"])
    assert exact_key(["Hello"]) != exact_key(["hello"])
    assert isinstance(exact_key(["x"]), int) and 0 <= exact_key(["x"]) < 2**64


# --------------------------------------------------------------------------- signatures
def test_signature_shape_and_types():
    sig, has = signatures(["one two three four", "five"], CONFIG)
    assert sig.shape == (2, CONFIG.num_perm) and sig.dtype == np.uint64
    assert has.dtype == bool and has.tolist() == [True, True]
    sig, has = signatures([], CONFIG)
    assert sig.shape == (0, CONFIG.num_perm) and has.shape == (0,)
    sig, _ = signatures(["a b c d"], MinHashConfig(num_perm=128))
    assert sig.shape == (1, 128)


def test_signatures_are_deterministic_across_calls():
    rng = random.Random(0)
    texts = [text(rng, rng.randint(1, 80)) for _ in range(50)]
    a, wa = signatures(texts, CONFIG)
    b, wb = signatures(list(texts), CONFIG)
    assert np.array_equal(a, b) and np.array_equal(wa, wb)


def test_signatures_are_deterministic_across_processes():
    code = ("from userloop.data.dedupe import signatures, MinHashConfig;"
            "print(signatures(['The quick brown fox jumps over the lazy dog', 'caf\\u00e9 na\\u00efve'],"
            " MinHashConfig())[0].sum(axis=1, dtype='uint64').tolist())")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1
    here, _ = signatures(["The quick brown fox jumps over the lazy dog", "caf\u00e9 na\u00efve"], CONFIG)
    assert outputs.pop().strip() == str(here.sum(axis=1, dtype=np.uint64).tolist())


TEXTS = st.lists(
    st.one_of(
        st.lists(st.sampled_from(VOCAB[:30] + ["Hello", "x", "_", "42", "\u00e9t\u00e9", "\u4f60\u597d", "a" * 30]),
                 max_size=30).map(" ".join),
        st.text(max_size=60),
        st.sampled_from(["", " ", "...", "!?", "\n\n", "\x00", "word\x00word"]),
    ),
    min_size=1, max_size=8,
)


@settings(max_examples=30, deadline=None)
@given(texts=TEXTS, data=st.data())
def test_signature_independent_of_batch_composition(texts, data):
    sig, has = signatures(texts, CONFIG)
    for i, t in enumerate(texts):
        alone, alone_has = signatures([t], CONFIG)
        assert np.array_equal(sig[i], alone[0]), (i, t)
        assert has[i] == alone_has[0]
    order = data.draw(st.permutations(range(len(texts))))
    shuffled, shuffled_has = signatures([texts[i] for i in order], CONFIG)
    assert np.array_equal(shuffled, sig[order]) and np.array_equal(shuffled_has, has[order])


def test_identical_texts_have_identical_signatures():
    rng = random.Random(1)
    t = text(rng, 50)
    other = text(rng, 50)
    sig, _ = signatures([t, other, t, t.upper(), t.replace(" ", " , "), f"  {t}  "], CONFIG)
    for j in (2, 3, 4, 5):  # copies, case and punctuation do not matter
        assert np.array_equal(sig[0], sig[j]), j
    assert not np.array_equal(sig[0], sig[1])
    assert estimate(sig, 0, 1) < 0.2


def test_texts_without_word_characters_have_no_shingles():
    texts = ["", " ", "...", "?! -- ()", "\n\t", "hello", "a", "...x..."]
    _, has = signatures(texts, CONFIG)
    assert has.tolist() == [False, False, False, False, False, True, True, True]
    _, has = signatures(["", "!!!"], CONFIG)
    assert not has.any()


def test_short_texts_are_one_shingle():
    sig, has = signatures(["hello world", "Hello, World!", "world hello", "hello"], CONFIG)
    assert has.all()
    assert np.array_equal(sig[0], sig[1])
    assert not np.array_equal(sig[0], sig[2])
    assert not np.array_equal(sig[0], sig[3])


def test_estimated_jaccard_is_unbiased():
    rng = random.Random(2024)
    pairs = []
    for _ in range(600):
        base = text(rng, rng.randint(10, 150), VOCAB[:200])
        tokens = base.split()
        p = rng.random() * 0.6
        other = " ".join(rng.choice(VOCAB[:200]) if rng.random() < p else w for w in tokens)
        if rng.random() < 0.3:
            other += " " + text(rng, rng.randint(1, 40), VOCAB[:200])
        pairs += [base, other]
    sig, _ = signatures(pairs, CONFIG)
    true = np.array([jaccard(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)])
    est = np.array([estimate(sig, i, i + 1) for i in range(0, len(pairs), 2)])
    assert true.min() < 0.3 and true.max() > 0.9  # the sample covers the range
    assert abs((est - true).mean()) < 0.03
    assert np.abs(est - true).mean() < 0.1  # 64 slots: standard error about 0.06 at J = 0.5


def test_estimate_for_disjoint_texts_is_near_zero():
    rng = random.Random(5)
    texts = [text(rng, 60, VOCAB[i * 100:(i + 1) * 100]) for i in range(8)]
    sig, _ = signatures(texts, CONFIG)
    assert max(estimate(sig, i, j) for i in range(8) for j in range(i + 1, 8)) < 0.15


# --------------------------------------------------------------------------- near_duplicates
def _mutate(t: str, rng: random.Random, n_changes: int) -> str:
    tokens = t.split()
    for _ in range(n_changes):
        tokens[rng.randrange(len(tokens))] = rng.choice(VOCAB)
    return " ".join(tokens)


def test_near_duplicates_keeps_first_of_a_group():
    rng = random.Random(3)
    a = text(rng, 300)
    group = [a, _mutate(a, rng, 1), _mutate(a, rng, 1), _mutate(a, rng, 2)]
    b = text(rng, 300)
    texts = [text(rng, 100), group[1], b, group[0], group[2], text(rng, 100), group[3], _mutate(b, rng, 1)]
    sig, has = signatures(texts, CONFIG)
    dup = near_duplicates(sig, has, CONFIG)
    assert dup.tolist() == [False, False, False, True, True, False, True, True]


def test_near_duplicates_chain_forms_one_group():
    rng = random.Random(4)
    a = text(rng, 400)
    b = _mutate(a, rng, 2)
    c = _mutate(b, rng, 2)
    sig, has = signatures([a, b, c], CONFIG)
    assert near_duplicates(sig, has, CONFIG).tolist() == [False, True, True]


def test_near_duplicates_unrelated_and_dissimilar_texts_kept():
    rng = random.Random(6)
    texts = [text(rng, 80) for _ in range(50)]
    half = texts[0].split()
    texts.append(" ".join(half[:40] + text(rng, 40).split()))  # Jaccard about 1/3 with texts[0]
    sig, has = signatures(texts, CONFIG)
    assert jaccard(texts[0], texts[-1]) < 0.5
    assert not near_duplicates(sig, has, CONFIG).any()


def test_near_duplicates_respects_eligibility():
    rng = random.Random(7)
    a = text(rng, 100)
    sig, has = signatures([a, a, a, "", "", "..."], CONFIG)
    assert has.tolist() == [True, True, True, False, False, False]
    assert near_duplicates(sig, has, CONFIG).tolist() == [False, True, True, False, False, False]
    eligible = np.array([False, True, True, False, False, False])
    assert near_duplicates(sig, eligible, CONFIG).tolist() == [False, False, True, False, False, False]
    assert not near_duplicates(sig[:1], has[:1], CONFIG).any()
    assert near_duplicates(sig[:0], has[:0], CONFIG).shape == (0,)


def test_threshold_decides():
    rng = random.Random(8)
    a = text(rng, 60)
    b = _mutate(a, rng, 4)
    sig, has = signatures([a, b], CONFIG)
    e = estimate(sig, 0, 1)
    assert 0.4 < e < 1.0
    strict = MinHashConfig(threshold=1.0)
    assert near_duplicates(sig, has, strict).tolist() == [False, False]
    lenient = MinHashConfig(threshold=0.3)
    assert near_duplicates(sig, has, lenient).tolist() == [False, True]


def test_works_on_uint32_signatures():
    """prepare keeps signatures as uint32; detection must work on them too."""
    rng = random.Random(9)
    a = text(rng, 200)
    texts = [a, text(rng, 200), _mutate(a, rng, 1)]
    sig, has = signatures(texts, CONFIG)
    assert near_duplicates(sig.astype(np.uint32), has, CONFIG).tolist() == [False, False, True]


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 0.9, 1.0])
@pytest.mark.parametrize("num_perm", [8, 16, 64, 128])
def test_optimal_bands(threshold, num_perm):
    bands, rows = optimal_bands(threshold, num_perm)
    assert isinstance(bands, int) and isinstance(rows, int)
    assert bands >= 1 and rows >= 1 and bands * rows <= num_perm
    assert MinHashConfig(threshold=threshold, num_perm=num_perm).bands_rows == (bands, rows)


def test_optimal_bands_higher_threshold_is_stricter():
    # the LSH S-curve midpoint (1/b)**(1/r) moves up with the threshold
    midpoints = [(1 / b) ** (1 / r) for b, r in (optimal_bands(t, 64) for t in (0.5, 0.7, 0.9))]
    assert midpoints == sorted(midpoints)


@pytest.mark.parametrize("kwargs", [
    {"threshold": 0.0}, {"threshold": -0.1}, {"threshold": 1.5},
    {"num_perm": 0}, {"num_perm": 4}, {"num_perm": 48}, {"num_perm": 100},
    {"ngram": 0}, {"ngram": -1},
])
def test_minhash_config_rejects(kwargs):
    with pytest.raises(ValueError):
        MinHashConfig(**kwargs)


def test_minhash_config_accepts():
    for kwargs in ({"threshold": 1.0}, {"num_perm": 8}, {"num_perm": 256}, {"ngram": 1}, {"ngram": 5}):
        MinHashConfig(**kwargs)


def test_ngram_setting():
    one = MinHashConfig(ngram=1)
    sig, _ = signatures(["alpha beta gamma", "gamma alpha beta"], one)
    assert np.array_equal(sig[0], sig[1])  # same words, order ignored with 1-grams
    sig, _ = signatures(["alpha beta gamma", "gamma alpha beta"], CONFIG)
    assert not np.array_equal(sig[0], sig[1])


def test_band_keys_shape():
    sig, _ = signatures(["a b c d e", "f g h"], CONFIG)
    keys = dedupe.band_keys(sig, CONFIG)
    assert keys.shape == (2, CONFIG.bands_rows[0])
