"""Exact and near-duplicate detection over the user side of conversations.

* **Exact**: 64-bit xxhash of the user turns (each stripped of surrounding whitespace, joined
  by a unit separator). The first occurrence in input order is kept.
* **Near**: MinHash-LSH over word n-gram shingles (default 3-grams of lower-cased word tokens)
  of the user turns, with estimated Jaccard similarity >= ``threshold`` (default 0.8) counted as a
  duplicate. Signatures use one-permutation hashing with rotation densification (Li et al. 2012;
  Shrivastava & Li 2014), an unbiased MinHash estimator that hashes each shingle once instead of
  once per permutation, so a whole batch is a few numpy passes. Candidates come from LSH banding
  (bands x rows chosen for the threshold as datasketch does) and are verified on the full
  signature; duplicates are grouped into connected components and each component keeps its
  first conversation in input order, as text-dedup and datatrove do.

Everything is deterministic: token hashes are computed from the bytes, never with Python's
salted ``hash``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xxhash

_U64 = np.uint64
_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD)
# bytes that belong to a word: ASCII letters and digits, '_' and every byte of a multi-byte UTF-8 character
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[*range(48, 58), *range(65, 91), *range(97, 123), 95, *range(128, 256)]] = True


def exact_key(user_turns: list[str]) -> int:
    """64-bit key of the user turns for exact duplicate detection."""
    return xxhash.xxh64_intdigest("\x1f".join(t.strip() for t in user_turns).encode("utf-8", "surrogatepass"))


def _token_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash of each token ``data[start:end]`` from its length and its first, middle and last
    eight bytes: exact for tokens up to 24 bytes, and cheap (no per-byte arithmetic)."""
    padded = np.concatenate((data, np.zeros(8, dtype=np.uint8)))
    # every byte offset read as a little-endian uint64 (an unaligned, overlapping view)
    words = np.ndarray(shape=(len(data),), dtype="<u8", buffer=padded, strides=(1,))
    lengths = ends - starts
    keep = _BYTE_MASKS[np.minimum(lengths, 8)]
    first = words[starts] & keep
    middle = words[starts + np.maximum(lengths - 8, 0) // 2] & keep
    last = words[np.maximum(ends - 8, starts)] & keep
    h = _mix64(first ^ lengths.astype(np.uint64))
    h = _mix64(h ^ middle)
    return _mix64(h ^ last)


_BYTE_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads token and shingle hashes over all 64 bits."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(30))
        x = x * _U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U64(27))
        x = x * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


@dataclass(frozen=True)
class MinHashConfig:
    """``num_perm`` signature slots (a power of two), ``ngram`` words per shingle."""

    threshold: float = 0.8
    num_perm: int = 64
    ngram: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("near-duplicate threshold must be in (0, 1]")
        if self.num_perm < 8 or self.num_perm & (self.num_perm - 1):
            raise ValueError("num_perm must be a power of two >= 8")
        if self.ngram < 1:
            raise ValueError("ngram must be >= 1")

    @property
    def bands_rows(self) -> tuple[int, int]:
        return optimal_bands(self.threshold, self.num_perm)


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positive + false negative probability mass around
    ``threshold`` (equal weights), as datasketch's ``MinHashLSH`` does."""
    grid = np.linspace(0.0, 1.0, 201)
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1.0 - (1.0 - grid**rows) ** bands
            fp = np.trapezoid(np.where(grid < threshold, p, 0.0), grid)
            fn = np.trapezoid(np.where(grid >= threshold, 1.0 - p, 0.0), grid)
            if fp + fn < best_err:
                best, best_err = (bands, rows), fp + fn
    return best


def signatures(texts: list[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of ``texts``: ``(sig, has_shingles)`` with ``sig`` of shape
    ``(len(texts), num_perm)`` (uint64) and a mask of texts that have at least one word."""
    n, k = len(texts), config.num_perm
    if n == 0:
        return np.zeros((0, k), dtype=np.uint64), np.zeros(0, dtype=bool)
    encoded = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    data = np.frombuffer(b"\x00".join(encoded), dtype=np.uint8)
    text_starts = np.concatenate(([0], np.cumsum([len(e) + 1 for e in encoded])[:-1]))
    # word tokens: maximal runs of word bytes; hash = polynomial over the bytes (mod 2**64)
    is_word = _WORD_BYTE[data]
    edges = np.diff(np.concatenate(([False], is_word, [False])).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    has_shingles = np.zeros(n, dtype=bool)
    sig = np.full((n, k), np.iinfo(np.uint64).max, dtype=np.uint64)
    if len(starts) == 0:
        return sig, has_shingles
    with np.errstate(over="ignore"):
        tokens = _token_hashes(data, starts, ends)
        token_doc = np.searchsorted(text_starts, starts, side="right") - 1

        # shingles: ngram consecutive tokens of one text; a text shorter than ngram is one shingle
        m = len(tokens)
        shingles = np.zeros(m, dtype=np.uint64)
        for j in range(config.ngram):
            shifted = np.zeros(m, dtype=np.uint64)
            same_doc = np.zeros(m, dtype=bool)
            shifted[: m - j] = tokens[j:]
            same_doc[: m - j] = token_doc[j:] == token_doc[: m - j]
            shingles += np.where(same_doc, shifted, _U64(0)) * _U64(_MIX[j % len(_MIX)] | 1) + _U64(j)
        last_ok = np.zeros(m, dtype=bool)
        tail = config.ngram - 1
        last_ok[: m - tail] = token_doc[tail:] == token_doc[: m - tail] if tail else True
        first_of_doc = np.concatenate(([True], token_doc[1:] != token_doc[:-1]))
        valid = last_ok | first_of_doc
        shingles, shingle_doc = _mix64(shingles[valid]), token_doc[valid]

        # one-permutation hashing: the top bits pick the slot, the rest is the value
        bits = k.bit_length() - 1
        slot = (shingles >> _U64(64 - bits)).astype(np.int64)
        value = shingles & _U64((1 << (64 - bits)) - 1)
        flat = sig.reshape(-1)
        np.minimum.at(flat, shingle_doc * k + slot, value)
    has_shingles[shingle_doc] = True
    _densify(sig, has_shingles)
    return sig, has_shingles


def _densify(sig: np.ndarray, has_shingles: np.ndarray) -> None:
    """Rotation densification: an empty slot takes the value of the next non-empty slot to its
    right (cyclically) plus an offset per step, so empty slots agree exactly when the texts do."""
    empty_value = np.iinfo(np.uint64).max
    rows = sig[has_shingles]
    if not (rows == empty_value).any():
        return
    k = rows.shape[1]
    doubled = np.concatenate((rows, rows), axis=1)
    position = np.where(doubled != empty_value, np.arange(2 * k), 2 * k)
    next_filled = np.minimum.accumulate(position[:, ::-1], axis=1)[:, ::-1][:, :k]
    steps = (next_filled - np.arange(k)).astype(np.uint64)
    with np.errstate(over="ignore"):
        filled = np.take_along_axis(doubled, next_filled, axis=1) + steps * _U64(1 << 60)
    sig[has_shingles] = filled


def band_keys(sig: np.ndarray, config: MinHashConfig) -> np.ndarray:
    """One 64-bit key per (text, band): texts sharing a key in any band are candidates."""
    bands, rows = config.bands_rows
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            acc = np.full(sig.shape[0], _U64(b + 1), dtype=np.uint64)
            for r in range(rows):
                acc = _mix64(acc ^ sig[:, b * rows + r])
            keys[:, b] = acc
    return keys


def near_duplicates(sig: np.ndarray, eligible: np.ndarray, config: MinHashConfig) -> np.ndarray:
    """Boolean mask of texts that are near duplicates of an earlier text (input order).

    ``eligible`` marks the rows that take part (texts with words, not already exact duplicates).
    """
    n = sig.shape[0]
    index = np.flatnonzero(eligible)
    duplicate = np.zeros(n, dtype=bool)
    if len(index) < 2:
        return duplicate
    keys = band_keys(sig[index], config)
    sources, targets = [], []
    for b in range(keys.shape[1]):
        order = np.argsort(keys[:, b], kind="stable")
        sorted_keys = keys[order, b]
        run_start = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
        first = order[np.maximum.accumulate(np.where(run_start, np.arange(len(order)), 0))]
        pair = ~run_start
        sources.append(first[pair])
        targets.append(order[pair])
    src, dst = np.concatenate(sources), np.concatenate(targets)
    if len(src) == 0:
        return duplicate
    pairs = np.unique(np.stack([src, dst], axis=1), axis=0)
    src, dst = pairs[:, 0], pairs[:, 1]
    similarity = (sig[index[src]] == sig[index[dst]]).mean(axis=1)
    keep = similarity >= config.threshold
    src, dst = src[keep], dst[keep]
    label = np.arange(len(index))
    while True:  # connected components by min-label propagation
        before = label.copy()
        np.minimum.at(label, dst, label[src])
        np.minimum.at(label, src, label[dst])
        label = label[label]
        if np.array_equal(label, before):
            break
    duplicate[index[label != np.arange(len(index))]] = True
    return duplicate
