"""Naturalness: the probability that a simulator's first turns were written by a human.

"Flipping the Dialogue" (arXiv 2510.06552, Table 2) scores first turns with a commercial AI-text
detector (Pangram): naturalness = mean P(human) over the turns, x100 (higher is better). Any object
with ``p_human(texts) -> list[float]`` is a :class:`Detector`.

The default, :class:`TrainedDetector`, is a proxy that needs no service: TF-IDF of word 1-2-grams and
character 2-4-grams with a logistic regression, trained to tell the data's real **user** turns
(human) from its **assistant** turns (model-written) on the train split, and tested on the
evaluation split (its held-out accuracy is reported with every score). Its bias: it learns "user
turn vs assistant turn" as much as "human vs model" (length, register, formatting, the topics
users raise), so a simulator that writes short, casual, assistant-free text scores high even if a
real AI-text detector would flag it; and on the testbed both sides are templated text. Read it as
"how much do these turns look like the data's user turns rather than its assistant turns".
"""

from __future__ import annotations

import hashlib
import importlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from userloop.cache import cache_dir, cached_pickle
from userloop.conversation import Conversation
from userloop.errors import UserError, missing_dependency

DETECTOR_VERSION = 2            # names the cached detector: bump it when the features or the model change
MAX_EXAMPLES_PER_CLASS = 5000   # user and assistant turns sampled (each) to train on
MAX_CHARS = 2000                # turns are cut to their first characters (assistant turns can be very long)


@runtime_checkable
class Detector(Protocol):
    """Anything that gives, for each text, the probability that a human wrote it."""

    def p_human(self, texts: Sequence[str]) -> list[float]:
        ...


@dataclass
class TrainedDetector:
    """The default detector: a scikit-learn pipeline trained on the data's user (human) vs assistant turns."""

    pipeline: Any
    trained_on: str
    train_examples: int
    heldout_examples: int = 0
    heldout_accuracy: float | None = None

    def p_human(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        human = list(self.pipeline.classes_).index(1)
        return [float(p) for p in self.pipeline.predict_proba([t[:MAX_CHARS] for t in texts])[:, human]]


def labelled_turns(conversations: Sequence[Conversation], seed: int = 0,
                   per_class: int = MAX_EXAMPLES_PER_CLASS) -> tuple[list[str], list[int]]:
    """Non-empty user turns (label 1, human) and assistant turns (label 0), at most ``per_class`` of each,
    the same number of each (the smaller class sets it), sampled with ``seed``."""
    rng = random.Random(seed)
    user = [m.content for c in conversations for m in c.messages if m.role == "user" and m.content.strip()]
    assistant = [m.content for c in conversations for m in c.messages if m.role == "assistant" and m.content.strip()]
    k = min(len(user), len(assistant), per_class)
    user, assistant = rng.sample(user, k), rng.sample(assistant, k)
    return [t[:MAX_CHARS] for t in user + assistant], [1] * k + [0] * k


def train_detector(train: Sequence[Conversation], heldout: Sequence[Conversation] = (), seed: int = 0,
                   trained_on: str = "") -> TrainedDetector:
    """Fit the default detector on ``train``; its accuracy on ``heldout`` (balanced user/assistant turns) is kept."""
    try:
        import numpy
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union
    except ImportError:
        raise missing_dependency("scikit-learn", "eval") from None
    texts, labels = labelled_turns(train, seed)
    if len(set(labels)) < 2:
        raise UserError("the naturalness detector needs user and assistant turns to train on; the data has "
                        f"{sum(labels)} user and {len(labels) - sum(labels)} assistant turns")
    # float32 features: the fit's peak memory falls by a third (177 to 122 MiB on the demo's testbed), the
    # probabilities agree with float64's to 1e-7
    features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, lowercase=False,
                                          dtype=numpy.float32),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2,
                                          dtype=numpy.float32))
    pipeline = make_pipeline(features, LogisticRegression(C=2.0, max_iter=2000)).fit(texts, labels)
    detector = TrainedDetector(pipeline, trained_on, len(texts))
    held_texts, held_labels = labelled_turns(heldout, seed)
    if held_texts:
        predicted = [p >= 0.5 for p in detector.p_human(held_texts)]
        detector.heldout_examples = len(held_texts)
        detector.heldout_accuracy = 100.0 * sum(p == bool(y) for p, y in zip(predicted, held_labels)) / len(held_texts)
    return detector


def cached_detector(data: str | Path, train: Sequence[Conversation], heldout: Sequence[Conversation],
                    heldout_split: str, seed: int = 0, cache: Path | None = None) -> TrainedDetector:
    """The default detector for prepared folder ``data``: read from the cache (``$USERLOOP_CACHE``), or
    trained and cached. The cache key covers the folder, its Parquet files' sizes and times, the
    held-out split, the seed, :data:`DETECTOR_VERSION` and scikit-learn's version."""
    import sklearn

    folder = Path(data).resolve()
    stamp = [str(folder), heldout_split, str(seed), str(DETECTOR_VERSION), sklearn.__version__]
    stamp += [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.glob("*.parquet"))]
    key = hashlib.sha256("|".join(stamp).encode()).hexdigest()[:16]
    path = (cache or cache_dir()) / "naturalness" / f"detector-v{DETECTOR_VERSION}-{key}.pkl"
    return cached_pickle(path, lambda: train_detector(train, heldout, seed,
                                                      trained_on=f"{folder} (train split; held out: {heldout_split})"))


def import_detector(spec: str) -> Detector:
    """A detector named ``MODULE:ATTRIBUTE``: an object with ``p_human``, or a class or factory called
    without arguments to make one."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"a detector is 'default' or MODULE:ATTRIBUTE (an object with p_human, or a factory), got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise UserError(f"cannot import detector {spec!r}: {err}") from None
    is_instance = isinstance(target, Detector) and not isinstance(target, type)
    detector = target if is_instance else target() if callable(target) else target
    if not isinstance(detector, Detector):
        raise UserError(f"detector {spec!r} has no p_human(texts) method")
    return detector


def naturalness(detector: Detector, texts: Sequence[str]) -> float:
    """Naturalness ("Flipping the Dialogue", Table 2; higher is better): mean P(human) over ``texts``, x100.

    An empty (or whitespace) text scores 0 without asking the detector: no human writes an empty
    message, and a detector's guess on nothing (the default one gives it 0.83) would reward a
    simulator that writes nothing or ends at once.
    """
    if not texts:
        raise ValueError("no text to score")
    written = [t for t in texts if t.strip()]
    scores = detector.p_human(written) if written else []
    if len(scores) != len(written) or not all(0.0 <= s <= 1.0 for s in scores):
        raise UserError("the detector must return one probability in [0, 1] per text")
    return 100.0 * sum(scores) / len(texts)
