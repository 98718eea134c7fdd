"""The offline follow-up classifier: two logistic-regression heads plus span rules.

Features of a follow-up (:meth:`OfflineClassifier.features`): the phrasing-independent cue families and
context measures of :mod:`userloop.rlhi.features` (did the assistant ask a question, how much of the turn
repeats the request or the answer, is it a correction, a revision order, a question about the answer, "what
about X", thanks, ...), plus TF-IDF of the turn's words (1-2 grams) scaled down by :data:`LEXICAL_WEIGHT`
so that, under the same L2 penalty, template words of the testbed cannot outweigh the cues. One
logistic-regression head predicts ``relation``, another ``feedback_type``; ``feedback_text`` comes from
rules (:func:`feedback_span`), always a slice of the turn. A third head reads a conversation's first user
turn and predicts the testbed interest domain (for personas).

Training data: the testbed population of :data:`TRAIN_USERS` users with seed :data:`TRAIN_SEED` (never the
default testbed, seed 0, that evaluations and ``rlhi build`` run on) plus the hand-made development set
(:data:`HANDMADE_FOLLOWUPS`: invented WildChat/OASST-style follow-ups), weighted so that it counts as
:data:`HANDMADE_SHARE` of the testbed. Classes are then re-weighted to real-log priors
(:data:`RELATION_PRIOR`, :data:`FEEDBACK_PRIOR`) instead of the testbed's, where most follow-ups are
re-attempts. The trained model is cached as a pickle in ``$USERLOOP_CACHE`` (named by model version,
training population and scikit-learn's version) and retrained when absent (docs/rlhi.md has the timing).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from userloop.cache import cache_dir, cached_pickle
from userloop.errors import UserError, missing_dependency
from userloop.rlhi.features import context_features
from userloop.rlhi.followups import FollowUp, Labels, extract_followups
from userloop.rlhi.taxonomy import REASON_CUES, TESTBED_FEEDBACK_TYPE, TESTBED_RELATION, validate_labels
from userloop.testbed import generate
from userloop.testbed.population import TESTBED_VERSION

TRAIN_USERS = 600
TRAIN_SEED = 1001
MODEL_VERSION = 2   # names the cached model: bump it when the features, weights or the hand-made set change
HANDMADE_FOLLOWUPS = Path(__file__).resolve().parent / "data" / "handmade_followups.jsonl"
LEXICAL_WEIGHT = 0.5      # scale of the word TF-IDF columns against the cue and context features
HANDMADE_SHARE = 1.0      # the hand-made examples together weigh this many times the testbed examples
# Class priors the heads are re-weighted to: real logs, not the testbed. Relation: extend is the most common
# relation in naturalistic-ai's WildChat study and in OASST, re-attempts come second. Feedback: about 30% of
# real chats carry feedback (Don-Yehiya et al., 2024), so most follow-ups carry none.
RELATION_PRIOR = {"extend": 0.40, "re_attempt": 0.25, "new_variation": 0.10, "new_request": 0.10,
                  "answer_to_question": 0.08, "none": 0.07}
FEEDBACK_PRIOR = {"none": 0.55, "make_aware_with_correction": 0.17, "positive": 0.12, "ask_for_clarification": 0.08,
                  "make_aware_without_correction": 0.05, "repeat_rephrase": 0.03}

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
POSITIVE_CUES = re.compile(r"thank|thx|\bty\b|great|perfect|awesome|helpful|that works|exactly what|nice|cool|"
                           r"excellent|amazing|love it|good job|well done|\bi (?:really )?(?:like|love)\b|haha|\blol\b|"
                           r"good one|\bworked\b|gracias|merci|wonderful|brilliant", re.IGNORECASE)
NEGATIVE_CUES = re.compile("|".join(f"(?:{pattern})" for _, pattern in REASON_CUES) +
                           r"|\bno\b|\bnope\b|not what|doesn'?t|didn'?t|does not|did not|can'?t you|why did you|"
                           r"what do you mean|explain|clarify|\bhuh\b",
                           re.IGNORECASE)


def _require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise missing_dependency("scikit-learn", "rlhi") from None


def feedback_span(text: str, feedback_type: str) -> str | None:
    """The feedback span of a turn by rules: None for ``none``; the whole turn for a rephrase; for
    positive feedback the first sentence with a thanks/praise cue; otherwise the run of sentences from
    the first to the last with a criticism cue. Without a cue, the whole turn. Always a slice of ``text``."""
    if feedback_type == "none":
        return None
    stripped = text.strip()
    if feedback_type == "repeat_rephrase" or not stripped:
        return stripped or None
    sentences = [m for m in _SENTENCE.finditer(text) if m.group(0).strip()]
    if feedback_type == "positive":
        cued = [m for m in sentences if POSITIVE_CUES.search(m.group(0))][:1]
    else:
        cued = [m for m in sentences if NEGATIVE_CUES.search(m.group(0))]
    if not cued:
        return stripped
    return text[cued[0].start():cued[-1].end()].strip()


@dataclass
class OfflineClassifier:
    """Trained vectorizers and heads; :meth:`classify` labels follow-ups, :meth:`domains` first turns."""

    word_vectorizer: Any
    context_vectorizer: Any
    relation_head: Any
    feedback_head: Any
    domain_vectorizer: Any
    domain_head: Any
    trained_on: str

    def features(self, followups: Sequence[FollowUp]):
        from scipy.sparse import hstack

        return hstack([LEXICAL_WEIGHT * self.word_vectorizer.transform([f.text for f in followups]),
                       self.context_vectorizer.transform([context_features(f) for f in followups])]).tocsr()

    def classify(self, followups: Sequence[FollowUp], on_progress: Callable[[int], None] | None = None) -> list[Labels]:
        out: list[Labels] = []
        for start in range(0, len(followups), 4096):
            batch = followups[start:start + 4096]
            if batch:
                x = self.features(batch)
                for f, relation, feedback in zip(batch, self.relation_head.predict(x), self.feedback_head.predict(x),
                                                  strict=True):
                    out.append(Labels(str(relation), str(feedback), feedback_span(f.text, str(feedback))))
            if on_progress:
                on_progress(len(batch))
        return out

    def domains(self, first_turns: Sequence[str]) -> list[str]:
        """The testbed interest domain each conversation's first user turn is most likely about."""
        if not first_turns:
            return []
        return [str(d) for d in self.domain_head.predict(self.domain_vectorizer.transform(first_turns))]


def testbed_examples(population) -> tuple[list[FollowUp], list[Labels], list[str], list[str]]:
    """Follow-ups with their true labels, and (first turn, task domain) pairs, from a testbed population."""
    truth = population.conversation_truth()
    followups, labels, first_turns, domains = [], [], [], []
    for conversation in population.conversations():
        record = truth[conversation.id]
        first_turns.append(conversation.messages[0].content)
        domains.append(record["tasks"][0]["domain"])
        for followup in extract_followups(conversation):
            label = record["turns"][followup.index]
            followups.append(followup)
            labels.append(Labels(TESTBED_RELATION[label["relation"]], TESTBED_FEEDBACK_TYPE[label["feedback_type"]],
                                 label["feedback_text"]))
    return followups, labels, first_turns, domains


def read_handmade(path: Path = HANDMADE_FOLLOWUPS) -> tuple[list[FollowUp], list[Labels]]:
    """The hand-made development set: one JSON object per line with ``id``, ``previous_user``,
    ``previous_assistant``, ``text``, ``relation``, ``feedback_type`` and ``feedback_text`` (verbatim in ``text``)."""
    if not path.is_file():
        raise UserError(f"hand-made follow-ups not found at {path} (they come with the repository checkout)")
    followups, labels = [], []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            row = orjson.loads(line)
            error = validate_labels(row["relation"], row["feedback_type"])
            span = row["feedback_text"]
            if error or (span is not None and span not in row["text"]):
                raise UserError(f"{path}:{number}: {error or 'feedback_text does not occur in text'}")
            followups.append(FollowUp(row["id"], None, 2, row["text"], row["previous_assistant"], row["previous_user"]))
            labels.append(Labels(row["relation"], row["feedback_type"], span))
    return followups, labels


def training_weights(classes: Sequence[str], handmade: Sequence[bool], prior: dict[str, float]) -> list[float]:
    """Per-example weights: the hand-made examples together weigh :data:`HANDMADE_SHARE` times the testbed
    ones, then every class is scaled so its share of the total weight is its ``prior``."""
    n_handmade = sum(handmade)
    extra = HANDMADE_SHARE * (len(classes) - n_handmade) / n_handmade if n_handmade else 0.0
    source = [extra if h else 1.0 for h in handmade]
    mass: Counter = Counter()
    for c, w in zip(classes, source, strict=True):
        mass[c] += w
    total = sum(mass.values())
    return [w * prior[c] * total / mass[c] for c, w in zip(classes, source, strict=True)]


def fit_followup_heads(followups: Sequence[FollowUp], labels: Sequence[Labels], handmade: Sequence[bool],
                       trained_on: str) -> OfflineClassifier:
    """The vectorizers and the two follow-up heads (no domain head) fitted on ``followups``; ``handmade``
    marks the hand-made examples (:func:`training_weights`)."""
    _require_sklearn()
    from scipy.sparse import hstack
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    word = TfidfVectorizer(min_df=2, sublinear_tf=True)
    context = DictVectorizer()
    x = hstack([LEXICAL_WEIGHT * word.fit_transform([f.text for f in followups]),
                context.fit_transform([context_features(f) for f in followups])]).tocsr()
    heads = []
    for classes, prior in (([label.relation for label in labels], RELATION_PRIOR),
                           ([label.feedback_type for label in labels], FEEDBACK_PRIOR)):
        weights = training_weights(classes, handmade, prior)
        heads.append(LogisticRegression(C=1.0, max_iter=3000, tol=1e-3).fit(x, classes, sample_weight=weights))
    return OfflineClassifier(word, context, heads[0], heads[1], None, None, trained_on)


def train(population, handmade: tuple[Sequence[FollowUp], Sequence[Labels]] | None = None,
          trained_on: str = "") -> OfflineClassifier:
    """Fit the classifier on a testbed population's labels plus, when given, hand-made examples."""
    _require_sklearn()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    followups, labels, first_turns, domains = testbed_examples(population)
    is_handmade = [False] * len(followups)
    if handmade is not None:
        followups, labels = followups + list(handmade[0]), labels + list(handmade[1])
        is_handmade += [True] * len(handmade[0])
    name = trained_on or (f"testbed users={len(population.users)} seed={population.seed}"
                          + (f" + {sum(is_handmade)} hand-made follow-ups" if handmade is not None else ""))
    model = fit_followup_heads(followups, labels, is_handmade, name)
    model.domain_vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    model.domain_head = LogisticRegression(C=4.0, max_iter=3000, tol=1e-3).fit(
        model.domain_vectorizer.fit_transform(first_turns), domains)
    return model


def cached_path(cache: Path | None = None) -> Path:
    import sklearn

    name = (f"rlhi-classifier-v{MODEL_VERSION}-testbed-v{TESTBED_VERSION}-users{TRAIN_USERS}-seed{TRAIN_SEED}"
            f"-sklearn{sklearn.__version__}.pkl")
    return (cache or cache_dir()) / name


def loaded_offline(offline: OfflineClassifier) -> OfflineClassifier:
    """The ``offline:classifier`` provider: the offline classifier its caller has loaded (which also gives
    an LLM judge its fallback and the personas their domains)."""
    return offline


def load_offline(cache: Path | None = None) -> OfflineClassifier:
    """The default offline classifier: read from the cache, or trained on the training population
    (:data:`TRAIN_USERS` users, seed :data:`TRAIN_SEED`) and cached."""
    _require_sklearn()
    return cached_pickle(cached_path(cache), lambda: train(generate(TRAIN_USERS, TRAIN_SEED), read_handmade()))
