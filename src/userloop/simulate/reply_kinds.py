"""Classify each assistant reply as an answer attempt, a clarification question, discussion or a refusal.

The four kinds follow the Lost-in-Conversation reply categories (Laban et al. 2025, §3: "answer
attempt", "clarification", "discussion", "refusal"), used by the UserLM paper (arXiv 2510.06552, §5)
to decide when an attempt is scored. Two classifiers share one interface (``aclassify``):
:class:`RuleReplyClassifier` (the default, pattern rules) and :class:`ModelReplyClassifier`
(an LLM judge through :class:`~userloop.models.base.ChatModel`, falling back to the rules on an
answer it cannot read).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from userloop.models import load_model
from userloop.models.base import ChatModel, GenerationParams
from userloop.models.registry import load_role
from userloop.simulate.answer_check import extract_final_number
from userloop.simulate.scenarios import Scenario

REPLY_KINDS = ("answer_attempt", "clarification", "discussion", "refusal")

DEFINITIONS = {
    "answer_attempt": "the reply gives a complete answer to the task: a final result (math: a final "
                      "number; code: a function in a code block), even if it also asks something",
    "clarification": "the reply does not answer yet and asks the user a question to get information "
                     "that is missing to solve the task",
    "refusal": "the reply declines to help with the task",
    "discussion": "anything else: partial work, explanations, restating the problem, small talk",
}

_REFUSAL = re.compile(
    r"\bI\s*(?:can(?:not|'t|’t)|(?:am|'m|’m)\s+(?:unable|not\s+able)|won(?:'|’)t|will\s+not)\s+(?:to\s+)?"
    r"(?:help|assist|provide|do|answer|comply|fulfil+|complete|write|share|create|generate|give|support)\b|"
    r"\bI\s+must\s+decline\b",
    re.IGNORECASE,
)
_CLARIFY = re.compile(
    r"\b(?:could|can|would)\s+you\s+(?:please\s+)?(?:clarify|specify|tell|provide|share|confirm|give|let\s+me\s+know)|"
    r"\bplease\s+(?:clarify|specify|provide|share|confirm)|\bwhat\s+(?:do|did)\s+you\s+mean|"
    r"\b(?:which|what|how\s+(?:many|much))\b[^.?!\n]*\?",
    re.IGNORECASE,
)
_ANSWER_MATH = re.compile(r"\\boxed\{|####|\banswer\s+(?:is|=|:)|\b(?:total|result)\s+(?:is|=)\s*\$?-?\d", re.IGNORECASE)
_CODE = re.compile(r"```|^\s*def\s+\w+\s*\(", re.MULTILINE)


def classify_reply(scenario: Scenario, reply: str) -> str:
    """The rule-based kind of one reply (the order matters: refusal, answer attempt, clarification).

    * refusal (in the first 400 characters): "I can't/cannot/am unable to/won't help|answer|write|...",
      "I must decline";
    * answer attempt: code scenarios: a fenced block or a ``def``; math: ``\\boxed{}``, ``####``,
      "the answer is", "total is N", or a final number in a last sentence that does not end in "?";
      open scenarios: never (nothing to score), so they are clarification or discussion;
    * clarification: the reply's last sentence is a question, or it says "could you clarify/specify/
      tell me", "which ...?", "how many ...?";
    * discussion: anything else.
    """
    text = reply.strip()
    if _REFUSAL.search(text[:400]):
        return "refusal"
    asks = text.endswith("?") or bool(_CLARIFY.search(text))
    if scenario.kind == "code" and _CODE.search(text):
        return "answer_attempt"
    if scenario.kind == "math" and (_ANSWER_MATH.search(text) or (not asks and extract_final_number(_last_sentence(text)))):
        return "answer_attempt"
    return "clarification" if asks else "discussion"


def _last_sentence(text: str) -> str:
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return parts[-1] if parts else ""


class RuleReplyClassifier:
    """The default classifier: :func:`classify_reply` on each reply (no model)."""

    name = "rules"

    async def aclassify(self, scenarios: Sequence[Scenario], histories: Sequence[list[dict]],
                        replies: Sequence[str]) -> list[str]:
        _same_length(scenarios, histories, replies)
        return [classify_reply(scenario, reply) for scenario, reply in zip(scenarios, replies)]


class ModelReplyClassifier:
    """An LLM judge: one prompt per reply with the four definitions, sent as one batch; the answer must
    be one of :data:`REPLY_KINDS` (bare or as ``{"label": ...}``). An unreadable answer falls back to
    the rules and is counted in :attr:`fallbacks` (and listed in :attr:`events`)."""

    def __init__(self, model: ChatModel | str, params: GenerationParams | None = None) -> None:
        if isinstance(model, str):
            model = load_model(model)
        self.model = model
        self.name = model.name
        self.params = params or GenerationParams(max_new_tokens=16, temperature=0)
        self.rules = RuleReplyClassifier()
        self.fallbacks = 0
        self.events: list[dict] = []

    async def aclassify(self, scenarios: Sequence[Scenario], histories: Sequence[list[dict]],
                        replies: Sequence[str]) -> list[str]:
        _same_length(scenarios, histories, replies)
        prompts = [judge_prompt(s, h, r) for s, h, r in zip(scenarios, histories, replies)]
        completions = await self.model.agenerate(prompts, self.params)
        labels = []
        for scenario, reply, completion in zip(scenarios, replies, completions):
            label = parse_label(completion.text)
            if label is None:
                label = classify_reply(scenario, reply)
                self.fallbacks += 1
                self.events.append({"type": "classifier_fallback", "scenario_id": scenario.id,
                                    "answer": completion.text[:200], "label": label})
            labels.append(label)
        return labels


def judge_prompt(scenario: Scenario, history: list[dict], reply: str) -> list[dict[str, str]]:
    """The judge's chat: the definitions, the task, the last user turn and the reply to classify."""
    definitions = "\n".join(f"- {kind}: {text}" for kind, text in DEFINITIONS.items())
    last_user = next((m["content"] for m in reversed(history) if m.get("role") == "user"), "")
    system = ("You classify an assistant's reply in a conversation with a user who has a task. "
              f"The categories:\n{definitions}\nAnswer with exactly one label: {', '.join(REPLY_KINDS)}.")
    user = (f"Task kind: {scenario.kind}\nUser's last message:\n{last_user}\n\nAssistant's reply:\n{reply}\n\n"
            "Label:")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_label(text: str) -> str | None:
    """The label in a judge's answer: a bare label (any case, ``-`` or space for ``_``) or a JSON
    object with a ``label`` key; ``None`` when it is neither."""
    stripped = text.strip().strip("`").strip()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        value = stripped
    if isinstance(value, dict):
        value = value.get("label")
    if not isinstance(value, str):
        return None
    label = re.sub(r"[\s-]+", "_", value.strip().strip(".\"'").lower())
    return label if label in REPLY_KINDS else None


def _same_length(*sequences: Sequence) -> None:
    if len({len(s) for s in sequences}) != 1:
        raise ValueError("scenarios, histories and replies must have the same length")


def load_reply_classifier(spec: str | None) -> RuleReplyClassifier | ModelReplyClassifier:
    """``None`` or ``rules:classifier``: the rule-based default; any chat model spec: an LLM judge through that model."""
    return load_role("reply_classifier", "rules:classifier" if spec is None else spec, ModelReplyClassifier)
