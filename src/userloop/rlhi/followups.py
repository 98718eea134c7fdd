"""Follow-up turns, their labels, the verbatim-span check, and the LLM-judge backend.

A follow-up is a user turn that comes right after an assistant turn (RLHI section 2: the user's reaction
to an answer). Each gets a :class:`Labels`: its ``relation`` to the previous exchange, its
``feedback_type`` and ``feedback_text``, the span of the turn that criticises, asks for a change or
thanks (``taxonomy`` has the vocabularies). A span must occur verbatim in the turn
(:func:`locate_span`).

Backends: the offline classifier (``userloop.rlhi.followup_classifier``, the default) and
:class:`JudgeClassifier`, any :class:`~userloop.models.ChatModel` prompted with our definitions; its
JSON answers are validated, an invalid one is asked again once, and a second failure falls back to
the offline classifier (all counted; ``userloop.rlhi.llm``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from userloop.conversation import Conversation
from userloop.rlhi.llm import ask_validated, parse_json_object
from userloop.rlhi.taxonomy import normalise_label, validate_labels


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A user turn right after an assistant turn, with the context a classifier reads."""

    conversation_id: str
    user_id: str | None
    index: int                    # position of the turn in the conversation's messages
    text: str
    previous_assistant: str
    previous_user: str | None     # the latest user turn before it (the request the answer answered)


@dataclass(frozen=True, slots=True)
class Labels:
    relation: str
    feedback_type: str
    feedback_text: str | None


class FollowUpClassifier(Protocol):
    def classify(self, followups: Sequence[FollowUp], on_progress: Callable[[int], None] | None = None) -> list[Labels]:
        ...


def extract_followups(conversation: Conversation) -> list[FollowUp]:
    """Every user turn of ``conversation`` whose previous message is an assistant turn."""
    out = []
    previous_user: str | None = None
    messages = conversation.messages
    for i, message in enumerate(messages):
        if message.role == "user":
            if i > 0 and messages[i - 1].role == "assistant":
                out.append(FollowUp(conversation.id, conversation.user_id, i, message.content,
                                    messages[i - 1].content, previous_user))
            previous_user = message.content
    return out


# Characters a model may write for one another when it copies a span (curly and straight quotes, dashes).
_LOOKALIKES = ("'\u2018\u2019\u02bc`", '"\u201c\u201d', "-\u2010\u2011\u2012\u2013\u2014")
_LOOKALIKE_CLASS = {c: "[" + re.escape(group) + "]" for group in _LOOKALIKES for c in group}


def _span_pattern(word: str) -> str:
    return "".join(_LOOKALIKE_CLASS.get(c, re.escape(c)) for c in word)


def locate_span(span: str | None, turn: str) -> str | None:
    """The verbatim occurrence of ``span`` in ``turn``: the span itself if it occurs as is, else the
    turn's own text where it occurs up to whitespace (runs of spaces / newlines) and look-alike quotes and
    dashes (``\u2019`` for ``'``), else None."""
    if not span or not span.strip():
        return None
    if span in turn:
        return span
    words = span.split()
    match = re.search(r"\s+".join(_span_pattern(w) for w in words), turn)
    return match.group(0) if match else None


def followup_record(followup: FollowUp, labels: Labels, backend: str) -> dict[str, Any]:
    """One line of ``followups.jsonl``."""
    return {"conversation_id": followup.conversation_id, "user_id": followup.user_id, "index": followup.index,
            "text": followup.text, **asdict(labels), "backend": backend}


# ----------------------------------------------------------------------------- the LLM judge
JUDGE_SYSTEM = """You label how a user reacts to a chat assistant's answer. You get the user's previous request, the assistant's answer, and the user's next message (the follow-up). Label the follow-up on two axes and quote its feedback span.

relation (how the follow-up relates to the previous exchange):
- new_request: a request unrelated to the previous one. Example: after a recipe, "What is the capital of Peru?"
- re_attempt: the same request again, revised, corrected, rephrased, or completed with details it was missing; complaints that ask for the answer to be redone count here. Example: "That's too long, make it shorter." or "Also, it has to be under 100 words."
- new_variation: a new request of the same kind as the previous one, with different content. Example: after a poem about cats, "Now one about dogs."
- extend: builds on a satisfying answer: asks for more on it, or a question about its content. Example: "Tell me more about the second option."
- answer_to_question: answers a question the assistant asked. Example: the assistant asked "Which city?", the user says "Lisbon."
- none: asks for nothing. Example: "Thanks, that's perfect."

feedback_type (what the follow-up says about the answer):
- repeat_rephrase: repeats or rephrases the request because the answer missed or refused it. Example: "No, I asked for a poem, not an essay. Write a poem about rain."
- make_aware_with_correction: says the answer is wrong or unsuitable AND says what it should be or how to change it. Example: "The total should be 52, not 57." or "Use bullet points."
- make_aware_without_correction: says the answer is wrong or unsuitable without saying how to fix it. Example: "That doesn't look right."
- ask_for_clarification: asks the assistant to explain its answer, or to explain it more, more simply or in more depth. Example: "I don't get it, can you explain it more simply?"
- positive: thanks or praise for the answer. Example: "Great, thank you!"
- none: no feedback on the answer.

feedback_text: the shortest part of the follow-up that carries the feedback, copied exactly, character for character, from the follow-up; null when feedback_type is none.

Answer with one JSON object and nothing else: {"relation": "...", "feedback_type": "...", "feedback_text": "..." or null}"""

JUDGE_RETRY = ("Your answer was not usable: {error}. Answer again with one JSON object "
               '{{"relation", "feedback_type", "feedback_text"}}, labels from the lists, feedback_text copied exactly '
               "from the follow-up or null.")
CONTEXT_CHARS = 2000   # previous turns are cut to this many characters (head and tail) in prompts


def clip(text: str, limit: int = CONTEXT_CHARS) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and tail."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[...]\n{text[-half:]}"


def judge_messages(followup: FollowUp) -> list[dict[str, str]]:
    request = clip(followup.previous_user) if followup.previous_user is not None else "(none)"
    user = (f"Previous user request:\n<<<\n{request}\n>>>\n\nAssistant answer:\n<<<\n{clip(followup.previous_assistant)}\n>>>\n\n"
            f"Follow-up:\n<<<\n{followup.text}\n>>>")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_judgement(answer: str, turn: str) -> tuple[Labels | None, str | None]:
    """Validated labels from a judge's answer, or (None, why it is invalid)."""
    data = parse_json_object(answer)
    if data is None:
        return None, "no JSON object"
    relation, feedback_type = normalise_label(data.get("relation")), normalise_label(data.get("feedback_type"))
    span = data.get("feedback_text")
    error = validate_labels(relation, feedback_type)
    if error:
        return None, error
    if span is not None and not isinstance(span, str):
        return None, "feedback_text must be a string or null"
    if feedback_type == "none" or span is None or not span.strip():
        return Labels(relation, feedback_type, None), None
    located = locate_span(span, turn)
    if located is None:
        return None, "feedback_text does not occur verbatim in the follow-up"
    return Labels(relation, feedback_type, located), None


@dataclass
class JudgeClassifier:
    """Follow-up labels from a chat model (our prompt, JSON answers), batched through ``generate``.

    ``counts`` records ``valid`` (first answer usable), ``retried`` (second answer usable), ``invalid``
    (both unusable) and ``fallback`` (labelled by ``fallback`` instead), plus first-round errors by reason."""

    model: Any                         # a ChatModel
    fallback: FollowUpClassifier
    batch_size: int = 256
    max_new_tokens: int = 200
    counts: Counter = field(default_factory=Counter)

    def classify(self, followups: Sequence[FollowUp], on_progress: Callable[[int], None] | None = None) -> list[Labels]:
        out: list[Labels] = []
        for start in range(0, len(followups), self.batch_size):
            batch = followups[start:start + self.batch_size]
            turns = [f.text for f in batch]
            labels = ask_validated(self.model, [judge_messages(f) for f in batch],
                                   lambda i, answer, turns=turns: parse_judgement(answer, turns[i]),
                                   JUDGE_RETRY, self.max_new_tokens, self.counts)
            failed = [i for i, label in enumerate(labels) if label is None]
            if failed:
                self.counts["fallback"] += len(failed)
                for i, label in zip(failed, self.fallback.classify([batch[i] for i in failed]), strict=True):
                    labels[i] = label
            out.extend(labels)
            if on_progress:
                on_progress(len(batch))
        return out
