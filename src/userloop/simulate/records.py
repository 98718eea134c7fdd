"""The typed record of a simulated conversation: what the engine produces and a run folder stores.

A :class:`SimulatedConversation` is a :class:`~userloop.conversation.Conversation` whose messages are
:class:`SimulatedMessage` (a :class:`~userloop.conversation.Message` with what the engine measured and
judged for that turn: guardrail events, latency, tokens, the reply's classification and score, and the
tool calls the assistant made before it replied), plus the run's facts about the conversation: scenario,
sample, how and why it ended, seed, timings, tokens, and the two models (and, for a tool scenario, the
final database's hash and the task's score). The engine builds one per finished conversation;
``conversations.jsonl`` holds one :meth:`SimulatedConversation.to_dict` per line and :func:`userloop.simulate.runs.read_records` returns them.

The JSON form is the run-record layout userloop has always written (so older run folders load as they
are): keys in a fixed order, per-message keys present only where the engine sets them (``tool_steps``,
``final_state_hash`` and ``task_score`` only in tool scenarios). Keys it does not know are kept in ``extra``
(conversation and message level) and written back after the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from userloop.conversation import ROLES, Conversation, Message
from userloop.models.tools import ToolCall
from userloop.simulate.answer_check import Score

TOKEN_ROLES = ("user", "assistant")
_MESSAGE_KEYS = frozenset(("role", "content", "events", "finish_reason", "latency_s", "tokens", "ended",
                           "classification", "score", "tool_steps"))
_RECORD_KEYS = ("scenario_id", "sample", "kind", "intent", "setting", "messages", "end_reason", "error", "end_events",
                "solved", "user_turns", "max_user_turns", "seed", "timings", "tokens", "user", "assistant")
_TOOL_RECORD_KEYS = ("final_state_hash", "task_score")  # written only for tool scenarios


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


@dataclass(slots=True)
class ToolCallRecord:
    """One tool call of an assistant turn: the call (``raw``: its argument text when that was not a JSON object)
    and the ``result`` the engine sent back as the ``tool`` message, the tool's JSON result or ``error: ...``
    (``ok`` False)."""

    id: str
    name: str
    arguments: dict
    result: str
    ok: bool
    raw: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"id": self.id, "name": self.name, "arguments": self.arguments, "result": self.result, "ok": self.ok}
        return data | ({"raw": self.raw} if self.raw is not None else {})

    @classmethod
    def from_dict(cls, data: Any) -> ToolCallRecord:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("id", "name", "result")) \
                or not isinstance(data.get("arguments"), dict) or not isinstance(data.get("ok"), bool):
            raise RecordError(f"with a tool call that is not one: {_excerpt(data)}")
        return cls(data["id"], data["name"], data["arguments"], data["result"], data["ok"], data.get("raw"))


@dataclass(slots=True)
class ToolStep:
    """One model call of an assistant turn that asked for tools: the text it wrote besides them (often none) and
    its calls, in order. To the assistant it was one ``assistant`` message with ``tool_calls`` followed by one
    ``tool`` message per call."""

    text: str
    calls: list[ToolCallRecord]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "calls": [call.to_dict() for call in self.calls]}

    @classmethod
    def from_dict(cls, data: Any) -> ToolStep:
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise RecordError(f"with a tool step that is not one: {_excerpt(data)}")
        return cls(data["text"], [ToolCallRecord.from_dict(call) for call in _list(data, "calls")])

    def chat(self) -> list[dict[str, Any]]:
        """The step as the assistant saw it: its message with ``tool_calls`` and a ``tool`` message per call."""
        calls = [ToolCall(call.id, call.name, call.arguments, call.raw).to_message() for call in self.calls]
        return [{"role": "assistant", "content": self.text, "tool_calls": calls},
                *({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": call.result}
                  for call in self.calls)]


@dataclass(slots=True, kw_only=True)
class SimulatedMessage(Message):
    """One turn of a simulated conversation with what the engine recorded about it.

    User turns: the guardrail ``events`` of the user simulator (``UserTurn.events``), ``tokens`` (none in the
    single-turn setting, where the turn is the scenario's prompt) and ``ended`` when the turn also ended the
    conversation. Assistant turns: ``finish_reason``, ``tokens``, the reply's ``classification``
    (:data:`~userloop.simulate.reply_kinds.REPLY_KINDS`; none when the classifier failed) and, for answer
    attempts of scenarios with a checker, its ``score``; in a tool scenario, the ``tool_steps`` that came before
    the reply (the calls, their results, and the events ``{"tool", "action": "call" | "result" | "error" | "cap",
    "detail"}`` of each in ``events``)."""

    events: list[dict[str, str]] = field(default_factory=list)
    latency_s: float = 0.0
    tokens: TokenCount | None = None
    finish_reason: str | None = None
    ended: bool = False
    classification: str | None = None
    score: Score | None = None
    tool_steps: list[ToolStep] = field(default_factory=list)

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
        if self.tool_steps:
            data["tool_steps"] = [step.to_dict() for step in self.tool_steps]
        data.update(self.extra)
        return data

    def assistant_chat(self) -> list[dict[str, Any]]:
        """The message as the assistant saw it: its tool steps' messages, then the message itself."""
        return [*(m for step in self.tool_steps for m in step.chat()), {"role": self.role, "content": self.content}]

    @classmethod
    def from_dict(cls, data: Any) -> SimulatedMessage:
        if not isinstance(data, dict):
            raise RecordError(f"with a message that is not an object: {_excerpt(data)}")
        role, content = data.get("role"), data.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise RecordError(f"with a message without a role and text content: {_excerpt(data)}")
        return cls(role, content, {k: v for k, v in data.items() if k not in _MESSAGE_KEYS},
                   events=_list(data, "events"), latency_s=data.get("latency_s", 0.0),
                   tokens=None if data.get("tokens") is None else TokenCount.from_dict(data["tokens"]),
                   finish_reason=data.get("finish_reason"), ended=bool(data.get("ended", False)),
                   classification=data.get("classification"), score=_score(data.get("score"), "a message"),
                   tool_steps=[ToolStep.from_dict(step) for step in _list(data, "tool_steps")])


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
    ``scoring_s``); ``tokens`` per role (``user``, ``assistant``). A tool scenario's record also has
    ``final_state_hash`` (:func:`~userloop.simulate.domains.state_hash` of the database when it ended) and
    ``task_score`` (goal state reached and outputs told: what ``solved`` is)."""

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
    final_state_hash: str | None = None
    task_score: Score | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"{self.scenario_id}#{self.sample}"

    @property
    def key(self) -> tuple[str, int]:
        """What identifies the conversation in its run: (scenario id, sample)."""
        return self.scenario_id, self.sample

    def to_dict(self) -> dict[str, Any]:
        tool_fields = {} if self.final_state_hash is None and self.task_score is None else {
            "final_state_hash": self.final_state_hash,
            "task_score": self.task_score.to_dict() if self.task_score is not None else None}
        return {
            "scenario_id": self.scenario_id, "sample": self.sample, "kind": self.kind, "intent": self.intent,
            "setting": self.setting, "messages": [m.to_dict() for m in self.messages], "end_reason": self.end_reason,
            "error": self.error, "end_events": self.end_events, "solved": self.solved, "user_turns": self.n_user_turns,
            "max_user_turns": self.max_user_turns, "seed": self.seed, "timings": self.timings,
            "tokens": {role: count.to_dict() for role, count in self.tokens.items()},
            "user": self.user_model, "assistant": self.model, **tool_fields, **self.extra,
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
                     user_model=data["user"], model=data["assistant"], final_state_hash=data.get("final_state_hash"),
                     task_score=_score(data.get("task_score"), "a task score"),
                     extra={k: v for k, v in data.items() if k not in _RECORD_KEYS and k not in _TOOL_RECORD_KEYS})
        if data["user_turns"] != record.n_user_turns:
            raise RecordError(f"with user_turns {_excerpt(data['user_turns'])} but {record.n_user_turns} user messages")
        return record


def _score(data: Any, what: str) -> Score | None:
    try:
        return None if data is None else Score(**data)
    except TypeError:
        raise RecordError(f"with {what} whose score is not one: {_excerpt(data)}") from None


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
