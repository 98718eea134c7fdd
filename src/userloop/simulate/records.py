"""The typed record of a simulated conversation: what the engine produces and a run folder stores.

A :class:`SimulatedConversation` is a :class:`~userloop.conversation.Conversation` whose messages are
:class:`SimulatedMessage` (a :class:`~userloop.conversation.Message` with what the engine measured and
judged for that turn: guardrail events, latency, tokens, the reply's classification and score), plus
the run's facts about the conversation: scenario, sample, how and why it ended, seed, timings, tokens,
and the two models. The engine builds one per finished conversation; ``conversations.jsonl`` holds one
:meth:`SimulatedConversation.to_dict` per line and :func:`userloop.simulate.runs.read_records` returns them.

The JSON form is the run-record layout userloop has always written (so older run folders load as they
are): keys in a fixed order, per-message keys present only where the engine sets them. Keys it does
not know are kept in ``extra`` (conversation and message level) and written back after the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from userloop.conversation import ROLES, Conversation, Message
from userloop.simulate.answer_check import Score

TOKEN_ROLES = ("user", "assistant")
_MESSAGE_KEYS = frozenset(("role", "content", "events", "finish_reason", "latency_s", "tokens", "ended",
                           "classification", "score"))
_RECORD_KEYS = ("scenario_id", "sample", "kind", "intent", "setting", "messages", "end_reason", "error", "end_events",
                "solved", "user_turns", "max_user_turns", "seed", "timings", "tokens", "user", "assistant")


class RecordError(ValueError):
    """A run record that is not one; the message ("without 'kind'", "with ...") says what is wrong."""


@dataclass(slots=True)
class TokenCount:
    """Prompt and completion tokens of one model call, or summed over a conversation."""

    prompt: int = 0
    completion: int = 0

    def add(self, prompt: int, completion: int) -> None:
        self.prompt += prompt
        self.completion += completion

    def to_dict(self) -> dict[str, int]:
        return {"prompt": self.prompt, "completion": self.completion}

    @classmethod
    def from_dict(cls, data: Any) -> TokenCount:
        return cls(_integer(data, "prompt"), _integer(data, "completion"))


@dataclass(slots=True, kw_only=True)
class SimulatedMessage(Message):
    """One turn of a simulated conversation with what the engine recorded about it.

    User turns: the guardrail ``events`` of the user simulator (``UserTurn.events``), ``tokens`` (none in the
    single-turn setting, where the turn is the scenario's prompt) and ``ended`` when the turn also ended the
    conversation. Assistant turns: ``finish_reason``, ``tokens``, the reply's ``classification``
    (:data:`~userloop.simulate.reply_kinds.REPLY_KINDS`; none when the classifier failed) and, for answer
    attempts of scenarios with a checker, its ``score``."""

    events: list[dict[str, str]] = field(default_factory=list)
    latency_s: float = 0.0
    tokens: TokenCount | None = None
    finish_reason: str | None = None
    ended: bool = False
    classification: str | None = None
    score: Score | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content, "events": self.events}
        if self.role == "assistant":  # always written for replies, null when the model gave none
            data["finish_reason"] = self.finish_reason
        data["latency_s"] = self.latency_s
        if self.tokens is not None:
            data["tokens"] = self.tokens.to_dict()
        if self.ended:
            data["ended"] = True
        if self.classification is not None:
            data["classification"] = self.classification
        if self.score is not None:
            data["score"] = self.score.to_dict()
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> SimulatedMessage:
        if not isinstance(data, dict):
            raise RecordError(f"with a message that is not an object: {_excerpt(data)}")
        role, content = data.get("role"), data.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise RecordError(f"with a message without a role and text content: {_excerpt(data)}")
        score = data.get("score")
        try:
            score = None if score is None else Score(**score)
        except TypeError:
            raise RecordError(f"with a message whose score is not one: {_excerpt(score)}") from None
        return cls(role, content, {k: v for k, v in data.items() if k not in _MESSAGE_KEYS},
                   events=_list(data, "events"), latency_s=data.get("latency_s", 0.0),
                   tokens=None if data.get("tokens") is None else TokenCount.from_dict(data["tokens"]),
                   finish_reason=data.get("finish_reason"), ended=bool(data.get("ended", False)),
                   classification=data.get("classification"), score=score)


@dataclass(slots=True, kw_only=True)
class SimulatedConversation(Conversation):
    """One finished conversation of a simulation run (module docstring).

    Of the :class:`~userloop.conversation.Conversation` fields it sets ``messages`` (:class:`SimulatedMessage`,
    user and assistant turns), ``intent`` (the scenario's), ``model`` (the assistant's name) and ``id``
    (``scenario_id#sample``); ``n_user_turns`` is written as ``user_turns``, ``user_model`` as ``user`` and
    ``model`` as ``assistant``. ``end_reason`` is one of the engine's end reasons; ``error`` the model error
    that ended it (else None); ``end_events`` the guardrail events of a user turn that only ended the
    conversation (no message); ``solved`` None for scenarios without a checker; ``timings`` the seconds of the
    whole conversation (``wall_s``) and of each phase (``user_s``, ``assistant_s``, ``classify_s``,
    ``scoring_s``); ``tokens`` per role (``user``, ``assistant``)."""

    scenario_id: str
    sample: int
    kind: str
    setting: str
    end_reason: str
    error: str | None = None
    end_events: list[dict[str, str]] = field(default_factory=list)
    solved: bool | None = None
    max_user_turns: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, TokenCount] = field(default_factory=lambda: {role: TokenCount() for role in TOKEN_ROLES})
    user_model: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"{self.scenario_id}#{self.sample}"

    @property
    def key(self) -> tuple[str, int]:
        """What identifies the conversation in its run: (scenario id, sample)."""
        return self.scenario_id, self.sample

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id, "sample": self.sample, "kind": self.kind, "intent": self.intent,
            "setting": self.setting, "messages": [m.to_dict() for m in self.messages], "end_reason": self.end_reason,
            "error": self.error, "end_events": self.end_events, "solved": self.solved, "user_turns": self.n_user_turns,
            "max_user_turns": self.max_user_turns, "seed": self.seed, "timings": self.timings,
            "tokens": {role: count.to_dict() for role, count in self.tokens.items()},
            "user": self.user_model, "assistant": self.model, **self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SimulatedConversation:
        """The record of one ``conversations.jsonl`` line; :class:`RecordError` names what is missing or wrong."""
        if not isinstance(data, dict):
            raise RecordError(f"that is not a JSON object: {_excerpt(data)}")
        missing = [key for key in _RECORD_KEYS if key not in data]
        if missing:
            raise RecordError(f"without {', '.join(map(repr, missing))}")
        if not isinstance(data["sample"], int) or isinstance(data["sample"], bool):
            raise RecordError(f"with sample {_excerpt(data['sample'])} (not an integer)")
        if data["solved"] is not None and not isinstance(data["solved"], bool):
            raise RecordError(f"with solved {_excerpt(data['solved'])} (not true, false or null)")
        tokens = data["tokens"]
        if not isinstance(tokens, dict) or set(tokens) != set(TOKEN_ROLES):
            raise RecordError(f"with tokens {_excerpt(tokens)} (not the user's and the assistant's counts)")
        record = cls([SimulatedMessage.from_dict(m) for m in _list(data, "messages")],
                     scenario_id=data["scenario_id"], sample=data["sample"], kind=data["kind"], intent=data["intent"],
                     setting=data["setting"], end_reason=data["end_reason"], error=data["error"],
                     end_events=_list(data, "end_events"), solved=data["solved"],
                     max_user_turns=data["max_user_turns"], seed=data["seed"], timings=data["timings"],
                     tokens={role: TokenCount.from_dict(tokens[role]) for role in TOKEN_ROLES},
                     user_model=data["user"], model=data["assistant"],
                     extra={k: v for k, v in data.items() if k not in _RECORD_KEYS})
        if data["user_turns"] != record.n_user_turns:
            raise RecordError(f"with user_turns {_excerpt(data['user_turns'])} but {record.n_user_turns} user messages")
        return record


def _excerpt(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise RecordError(f"with {key} {_excerpt(value)} (not a list)")
    return value


def _integer(data: Any, key: str) -> int:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"with token count {_excerpt(data)} (no integer {key!r})")
    return value
