"""Phrasing-independent features of a follow-up: cue families and the turn's relation to its context.

The testbed writes each class from a few templates, so word n-grams learned there do not carry over to real
users. What does carry over (docs/rlhi.md, "Offline classifier"):

* the context: whether the assistant asked the user a specific question (and the turn is short), whether
  it refused, how much of the turn repeats the previous request or the answer, how much is new (a topic
  shift), the turn's length;
* cue families that mean the same thing however a user words them: thanks or praise, a correction or
  negation, a revision order ("make it shorter", "add ...", "without ..."), "I meant" / "I asked for", a
  question about the answer ("what does X mean", "why", "how do I"), a request for more ("another",
  "give me an example", "elaborate"), "what about X" / "now do the same for Y", a new topic announced
  ("next question", "unrelated, but"), a bare imperative, a turn that is a question at all.

:func:`context_features` returns them as a name -> value dict (binary cues, overlaps in [0, 1]).
"""

from __future__ import annotations

import math
import re

from userloop.rlhi.followups import FollowUp

_WORDS = re.compile(r"[a-z0-9']+")
# Words that say nothing about topic (left out of the topic-shift measure).
_STOPWORDS = (
    "a an the and or but if so to of in on at for with from by about as is are was were be been am do does did "
    "i me my you your it its this that these those there here what which who how why when where can could "
    "would will should please pls just also now then than too very more some any no not yes ok okay thanks "
    "thank make give write tell show one ones again same other another")
STOPWORDS = frozenset(_STOPWORDS.split())

CUES: dict[str, str] = {
    "thanks": r"\bthanks?\b|\bthank (?:you|u)\b|\bthx\b|\bty\b|\bgracias\b|\bmerci\b|appreciate",
    "praise": (r"\b(?:great|perfect|awesome|excellent|amazing|nice|cool|wonderful|brilliant|helpful|love it|"
               r"i like|good job|well done|works?|worked|exactly what|haha|lol)\b"),
    "negation": (r"\b(?:no|nope|not|isn'?t|wasn'?t|aren'?t|doesn'?t|don'?t|didn'?t|won'?t|can'?t|never|"
                 r"wrong|incorrect|false|untrue)\b|n't\b"),
    "error": (r"\b(?:wrong|incorrect|mistake|error|errors|typo|fails?|failing|doesn'?t work|"
              r"not work|still|same (?:error|problem|issue)|are you sure|not true|not right|meh|boring|"
              r"too (?:long|short|formal|casual|basic|generic|technical|complicated|simple|salesy)|way too)\b"),
    "should_be": r"\bshould (?:be|have)\b|\bit'?s actually\b|\bactually\b|\bnot\b[^.?!]{1,40}\bbut\b|, not\b|\binstead\b",
    "revise": (r"\b(?:make|rewrite|re-write|redo|change|fix|shorten|shorter|longer|simpler|add|remove|"
               r"include|mention|convert|round|format|rephrase|tone|use|without|less|more formal|more casual|"
               r"put (?:it|this|that)|turn (?:it|this))\b"),
    "meant": r"\bi (?:meant|mean|asked|said|wanted|need(?:ed)?)\b|\bnot what i\b|\bthat'?s not\b|\bi typed\b",
    "clarify": (r"\bwhat (?:does|do|is|are|'?s) (?:a |an |the )?[\w'\-\[\]:.]+(?: [\w'\-]+)? ?(?:mean|stand for)?\b|"
                r"\bwhat do you mean\b|\bexplain\b|\bunderstand\b|\bdon'?t get\b|\bconfus|\bclarify\b|"
                r"\bwhat'?s (?:a|an|the)?\b|\bmeaning of\b|\bhow (?:does|do|did) (?:that|this|it|you)\b|"
                r"\bwhy (?:did|do|does|is|are|would) (?:you|we|it|that|this|they)\b|\belaborate\b|\bmore details?\b"),
    "why": r"\bwhy\b|\bhow come\b",
    "more": (r"\b(?:more|another|other|others|else|example|examples|elaborate|expand|details?|deeper|"
             r"further|continue|go on|next step|compare|alternatives?)\b"),
    "what_about": (r"^\W*(?:and|what about|how about|what if|same|now|ok now|okay now|do the same|same thing|"
                   r"and (?:in|for|with|what about))\b|\bthe same (?:for|but|with)\b|\bdo (?:the same|one|it) for\b|"
                   r"\bnow (?:do|one|write|make|for|try)\b"),
    "wh_start": r"^\W*(?:what|how|why|when|where|who|which|is|are|can|could|would|should|do|does|did|will)\b",
    "imperative": (r"^\W*(?:write|make|give|tell|list|create|generate|translate|explain|summari[sz]e|describe|"
                   r"rewrite|draft|compose|show|find|recommend|suggest|help|provide|plan|design|solve|"
                   r"calculate|convert|build|code|implement)\b"),
    "polite_request": r"\b(?:can|could|would|will) (?:you|u)\b|\bplease\b|\bpls\b|\bi need\b|\bi want\b|\bi'?d like\b",
    "affirm": r"^\W*(?:yes|yeah|yep|yup|sure|ok|okay|no|nah|maybe|not sure|definitely|correct|right)\b",
    "new_topic": (r"\b(?:new|next|another|different|unrelated|other) (?:question|topic|task|thing)\b|"
                  r"^\W*(?:next|unrelated|changing the subject|on another note|switching gears)\b"),
    "also": r"^\W*(?:also|oh and|and also|btw|by the way|one more|i forgot|forgot|in addition)\b",
}
_CUES = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in CUES.items())
# The assistant asked the user for something it needs to do the task (a question, or "I need to know ...",
# "please specify ..."), not a generic offer of more help ("anything else?", "let me know if ...").
_ASKS = re.compile(r"\?|\bi (?:would )?need to know\b|\bplease (?:provide|specify|share|tell me)\b|"
                   r"\blet me know (?:what|which|how|whether|your|the)\b", re.IGNORECASE)
_GENERIC_OFFER = re.compile(r"anything else|how (?:else )?can i (?:help|assist)|help you with|any (?:other |more )?questions|"
                            r"let me know if|hope (?:this|that) helps|what can i do for you|is there anything",
                            re.IGNORECASE)
_REFUSAL = re.compile(r"\b(?:i'?m sorry|i apologi[sz]e|i (?:can(?:no|')t|am unable|am not able|won'?t)|as an ai)\b",
                      re.IGNORECASE)


def tokens(text: str | None) -> set[str]:
    return set(_WORDS.findall(text.lower())) if text else set()


def _overlap(turn: set[str], other: set[str]) -> float:
    """Share of the turn's words that occur in ``other``."""
    return len(turn & other) / len(turn) if turn else 0.0


def assistant_asked(answer: str) -> bool:
    """The answer ends (last 300 characters) by asking the user for something specific."""
    sentences = re.findall(r"[^.?!\n]+[.?!]*", answer[-300:])
    return any(_ASKS.search(s) and not _GENERIC_OFFER.search(s) for s in sentences)


def context_features(followup: FollowUp) -> dict[str, float]:
    """Cue families (binary) and context measures of a follow-up (module docstring)."""
    text = followup.text
    turn = tokens(text)
    content = turn - STOPWORDS
    previous = tokens(followup.previous_user)
    answer = tokens(followup.previous_assistant)
    words = len(text.split())
    asked = assistant_asked(followup.previous_assistant)
    features = {f"cue_{name}": float(bool(pattern.search(text))) for name, pattern in _CUES}
    features.update({
        "assistant_asked": float(asked),
        "assistant_asked_short_reply": float(asked and words <= 15 and "?" not in text),
        "assistant_refused": float(bool(_REFUSAL.search(followup.previous_assistant[:200]))),
        "overlap_previous_user": _overlap(turn, previous),
        "overlap_answer": _overlap(turn, answer),
        "content_overlap_answer": _overlap(content, answer),
        "content_overlap_previous_user": _overlap(content, previous),
        "new_content": len(content - answer - previous) / len(content) if content else 0.0,
        "topic_shift": float(len(content) >= 3 and not (content & (answer | previous))),
        "question": float("?" in text),
        "log_words": math.log1p(words) / 5,   # about 0-1, like the other features
        "short": float(words <= 4),
        "has_number": float(any(ch.isdigit() for ch in text)),
        "has_code": float("```" in text or "\n" in text.strip()),
    })
    return features
