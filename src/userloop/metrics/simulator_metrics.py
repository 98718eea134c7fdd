"""The user-simulator metrics of "Flipping the Dialogue" (arXiv 2510.06552, Table 2) as plain functions.

* :func:`first_turn_diversity` (higher is better; defined in :mod:`userloop.statistics`).
* :func:`intent_decomposition` (lower is better): how much of a user turn is copied from the intent.
* :func:`termination_scores` (F1 of the "end" class, higher is better): does the simulator end the
  conversation where the real user did.

The other metrics need a detector, probes or a replay: :mod:`~userloop.metrics.naturalness`,
:mod:`~userloop.metrics.adherence`, :mod:`~userloop.metrics.fidelity`; :mod:`~userloop.metrics.evalsim`
runs them all. Every score here is on a 0-100 scale, as the paper reports them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from userloop.statistics import first_turn_diversity

__all__ = ["STOPWORDS", "content_words", "first_turn_diversity", "intent_decomposition", "intent_overlap",
           "termination_scores"]

# A small English stopword list (function words, pronouns, auxiliaries, and the words of the intent
# prefix "You are a user chatting with an assistant language model to"), so that only content words
# count as copied from the intent.
_STOPWORD_TEXT = """
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself yourselves
s t d ll m re ve don didn doesn isn wasn aren weren won wouldn shouldn couldn can't i'm it's let let's
please also get want need like one
user chatting assistant language model
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def content_words(text: str) -> list[str]:
    """Lower-cased words, punctuation stripped, :data:`STOPWORDS` removed."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def intent_overlap(turn: str, intent: str) -> float | None:
    """Share of ``turn``'s content words that also occur in ``intent`` (None: the turn has no content word)."""
    words = content_words(turn)
    if not words:
        return None
    in_intent = set(content_words(intent))
    return sum(w in in_intent for w in words) / len(words)


def intent_decomposition(turns: Sequence[str], intents: Sequence[str]) -> float:
    """Intent decomposition ("Flipping the Dialogue", Table 2; lower is better): for each user turn,
    the share of its words (lower-cased, punctuation and stopwords removed) that occur in its intent,
    averaged over turns, x100. Paper: Human 1.68, UserLM-8b 2.69, GPT-4o 7.68.

    Turns without a content word (empty, or an ending turn) have no share and are left out of the
    mean; :func:`intent_overlap` returns None for them so callers can count them.
    """
    if len(turns) != len(intents):
        raise ValueError("one intent per turn is needed")
    shares = [s for s in map(intent_overlap, turns, intents) if s is not None]
    if not shares:
        raise ValueError("no turn has a content word")
    return 100.0 * sum(shares) / len(shares)


def termination_scores(predicted_end: Sequence[bool], gold_end: Sequence[bool]) -> dict[str, float | int]:
    """Dialogue termination ("Flipping the Dialogue", Table 2): precision, recall and F1 (x100) of the
    "end" class over decision points (after each real assistant turn: did the simulator end, did the
    real user end). Paper F1: UserLM-8b 63.54, GPT-4o 1.38. With no predicted (or no gold) end,
    precision (or recall) is 0, as is F1 when both are 0. Also returns the confusion counts.
    """
    if len(predicted_end) != len(gold_end):
        raise ValueError("one gold label per prediction is needed")
    tp = sum(p and g for p, g in zip(predicted_end, gold_end))
    fp = sum(p and not g for p, g in zip(predicted_end, gold_end))
    fn = sum(g and not p for p, g in zip(predicted_end, gold_end))
    tn = len(gold_end) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": 100.0 * f1, "precision": 100.0 * precision, "recall": 100.0 * recall,
            "true_positives": tp, "false_positives": fp, "false_negatives": fn, "true_negatives": tn}
