"""The label vocabularies of RLHI's follow-up classification, and what a feedback span asks for.

Two axes per user turn that follows an assistant turn (RLHI, "The Era of Real-World Human Interaction",
section 2):

* ``relation`` to the previous exchange, after the naturalistic-ai taxonomy: ``new_request`` (an
  unrelated request), ``re_attempt`` (the same request again: revised, corrected, completed with missing
  details), ``new_variation`` (a new request of the same kind as the last one), ``extend`` (build on the
  answer: more on it, a question about it), ``answer_to_question`` (the reply to a question the
  assistant asked), plus ``none`` for a turn that asks nothing (a pure thank-you).
* ``feedback_type``, after "Naturally Occurring Feedback" (Don-Yehiya et al., 2024):
  ``repeat_rephrase``, ``make_aware_with_correction``, ``make_aware_without_correction``,
  ``ask_for_clarification``, ``positive``, ``none``.

The testbed labels user turns with exactly these two vocabularies (``docs/testbed.md``: its
``relation`` and ``feedback_type`` fields), so the mapping from testbed labels is the identity on both
axes; the testbed's own mapping choices (revealing another piece of the task is a ``re_attempt``;
"too long", "use bullet points", "more formal", "more technical" and corrections are
``make_aware_with_correction``; "explain more", "explain it more simply" are ``ask_for_clarification``)
are the ones the guidelines in ``docs/rlhi.md`` follow for real data.

:func:`feedback_reasons` reads what a feedback span asks for in the testbed's reason vocabulary
(``too_long``, ``wants_structure``, ...): personas and the testbed rewriter both use it.
"""

from __future__ import annotations

import re

RELATIONS: tuple[str, ...] = ("new_request", "re_attempt", "new_variation", "extend", "answer_to_question", "none")
FEEDBACK_TYPES: tuple[str, ...] = ("repeat_rephrase", "make_aware_with_correction", "make_aware_without_correction",
                                   "ask_for_clarification", "positive", "none")
# Feedback that says the answer fell short: these follow-ups (and every re_attempt) get a rewrite.
NEGATIVE_FEEDBACK: frozenset[str] = frozenset(("repeat_rephrase", "make_aware_with_correction",
                                               "make_aware_without_correction", "ask_for_clarification"))

# The testbed's names for both axes are the names (identity mapping, written out so a change in
# either vocabulary fails loudly in the tests).
TESTBED_RELATION: dict[str, str] = {name: name for name in RELATIONS}
TESTBED_FEEDBACK_TYPE: dict[str, str] = {name: name for name in FEEDBACK_TYPES}

# What a span asks for, in the testbed's reason vocabulary: cue patterns, checked in this order (the
# first reason of an axis wins, so "no bullet points" is wants_prose before "bullet" is wants_structure).
REASON_CUES: tuple[tuple[str, str], ...] = (
    ("wants_prose", (r"no (?:bullet|list)|instead of (?:a )?(?:list|bullet)|rather than (?:a )?(?:list|bullet)|"
                    r"as (?:a )?paragraph|as (?:continuous )?prose|less listy|write it normally|normal text|no lists")),
    ("wants_structure", r"bullet|numbered|\bsteps\b|as a list|in a list|into a list|a table|\blist\b"),
    ("too_long", (r"too long|shorter|\bshorten|condense|brief(?:er)?\b|tl;?dr|cut it down|more concise|"
                 r"keep it short|short answer|less detail|too much|more than i need")),
    ("too_short", (r"more detail|in detail|elaborate|expand on|go deeper|more depth|too short|kinda short|"
                  r"thorough|explain more|a little brief")),
    ("too_casual", r"keep it professional|more professional|too casual|less casual|more formal|formal tone|formally|informal|chatty"),
    ("too_formal", r"keep it casual|no need to be formal|too formal|more casual|casually|less stiff|more relaxed|friendlier|\bstiff\b|\bchill\b"),
    ("too_technical", (r"simpler|more simply|plain language|normal words|eli5|too complicated|don'?t get it|"
                      r"do not understand|don'?t understand|too technical|easier to understand")),
    ("too_simple", (r"more technical|technical details|technical version|technical explanation|skip the basics|"
                   r"know the basics|familiar with the basics|more advanced")),
    ("wrong_answer", (r"wrong|not correct|incorrect|mistake|\berror\b|not right|check (?:it )?again|are you sure|"
                     r"should be|doesn'?t look right|does not (?:seem|look) right")),
    ("off_topic", r"not what i asked|let me rephrase|to be clear|i meant\b|i mean\b|that's not what"),
)
_REASON_PATTERNS = tuple((reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in REASON_CUES)
# The persona axis each style reason is about, and the preference it reveals.
REASON_PREFERENCE: dict[str, tuple[str, str]] = {
    "too_long": ("detail", "brief"), "too_short": ("detail", "detailed"),
    "wants_structure": ("structure", "structured"), "wants_prose": ("structure", "prose"),
    "too_casual": ("tone", "formal"), "too_formal": ("tone", "casual"),
    "too_technical": ("expertise", "novice"), "too_simple": ("expertise", "expert"),
}


def feedback_reasons(text: str | None) -> list[str]:
    """The reasons a feedback span gives (testbed reason vocabulary), at most one per persona axis."""
    if not text:
        return []
    found: list[str] = []
    axes: set[str] = set()
    for reason, pattern in _REASON_PATTERNS:
        axis = REASON_PREFERENCE.get(reason, (reason, ""))[0]
        if axis not in axes and pattern.search(text):
            found.append(reason)
            axes.add(axis)
    return found


def normalise_label(value: object) -> object:
    """A model's label in vocabulary spelling: "Make aware with correction" / "RE-ATTEMPT" -> snake case;
    anything that is not a string comes back as is (and fails validation)."""
    if not isinstance(value, str):
        return value
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def validate_labels(relation: object, feedback_type: object) -> str | None:
    """None when both labels are in the vocabularies, else what is wrong (one line)."""
    if relation not in RELATIONS:
        return f"relation {relation!r} is not one of {', '.join(RELATIONS)}"
    if feedback_type not in FEEDBACK_TYPES:
        return f"feedback_type {feedback_type!r} is not one of {', '.join(FEEDBACK_TYPES)}"
    return None
