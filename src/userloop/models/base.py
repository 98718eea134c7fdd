"""The one interface to chat models: :class:`ChatModel`, :class:`GenerationParams`, :class:`Completion`.

Every provider takes a batch of conversations (lists of :class:`~userloop.conversation.Message` or
``{"role", "content"}`` dicts) and returns one :class:`Completion` per conversation, in order.
Providers are async first; :meth:`ChatModel.generate` is the blocking wrapper.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from userloop.conversation import Message
from userloop.errors import UserError
from userloop.models.tools import ToolCall

# ``{"role", "content"}`` dicts; an assistant message may add ``tool_calls`` and a ``tool`` message has
# ``tool_call_id`` and ``name`` (OpenAI's shapes, see :mod:`userloop.models.tools`).
ChatMessages = list[dict[str, Any]]


# How long a request to a model server may take and how often a failed one is retried, unless set otherwise
# (see :func:`userloop.models.registry.request_limits`).
REQUEST_TIMEOUT_S = 120.0
REQUEST_RETRIES = 4


class ModelError(UserError):
    """A model or server failed in a way the user has to act on (unreachable after retries, rejected request,
    a reply that is not what the API promises): ``ModelError(model, server, problem)``, shown as one line
    ``MODEL at SERVER: PROBLEM`` (``MODEL: PROBLEM`` without a server)."""

    def __init__(self, model: str, server: str | None, problem: str) -> None:
        super().__init__(model, server, problem)
        self.model, self.server, self.problem = model, server, problem

    def __str__(self) -> str:
        where = f"{self.model} at {self.server}" if self.server else self.model
        return f"{where}: {self.problem}"


class ContextLengthError(UserError):
    """A conversation too long for a model's context (its prompt plus ``max_new_tokens``). The simulation
    engine ends such a conversation with the end reason ``context``."""


CONTEXT_LENGTH_CODE = "context_length_exceeded"  # the error code OpenAI's API (and `userloop serve`) answers it with


def checked_timeout(value, name: str = "timeout") -> float:
    """``value`` as seconds per request (a finite number > 0); anything else raises :class:`UserError` naming ``name``."""
    if not _is_number(value) or value <= 0:
        raise UserError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def checked_retries(value, name: str = "max_retries") -> int:
    """``value`` as a retry count (an integer >= 0); anything else raises :class:`UserError` naming ``name``."""
    if not _is_int(value) or value < 0:
        raise UserError(f"{name} must be an integer >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class GenerationParams:
    """How to generate; validated on construction (a bad value raises :class:`UserError`).

    ``temperature`` and ``top_p`` left at ``None`` mean "the model's own default" (an ``hf`` checkpoint's
    generation config, a server's default); ``temperature=0`` is greedy decoding. ``stop`` strings end a
    completion early: the text is cut before the first one and ``finish_reason`` is ``"stop"``.
    ``banned_tokens`` may never be generated, ``banned_first_tokens`` never as the first token; both are
    strings (a word such as ``"I"`` is banned with and without a leading space). ``logit_bias`` maps token
    ids to a bias in [-100, 100] added to their logits. Not every model can enforce every field: see
    :attr:`ChatModel.supports`; a model given a field it cannot enforce raises :class:`UserError`.
    """

    max_new_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    banned_tokens: tuple[str, ...] = ()
    banned_first_tokens: tuple[str, ...] = ()
    logit_bias: Mapping[int, float] | tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalise lists and dicts into hashable tuples
        set_field(self, "stop", _strings("stop", self.stop))
        set_field(self, "banned_tokens", _strings("banned_tokens", self.banned_tokens))
        set_field(self, "banned_first_tokens", _strings("banned_first_tokens", self.banned_first_tokens))
        set_field(self, "logit_bias", _logit_bias(self.logit_bias))
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not _is_int(self.n) or self.n < 1:
            raise UserError(f"n must be an integer >= 1, got {self.n!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise UserError(f"seed must be an integer, got {self.seed!r}")
        if self.temperature is not None and not (_is_number(self.temperature) and 0 <= self.temperature <= 100):
            raise UserError(f"temperature must be a number in [0, 100], got {self.temperature!r}")
        if self.top_p is not None and not (_is_number(self.top_p) and 0 < self.top_p <= 1):
            raise UserError(f"top_p must be a number in (0, 1], got {self.top_p!r}")

    @property
    def bans(self) -> bool:
        return bool(self.banned_tokens or self.banned_first_tokens)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strings(name: str, value) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v for v in values):
        raise UserError(f"{name} must be a list of non-empty strings, got {value!r}")
    return tuple(values)


def _logit_bias(value) -> tuple[tuple[int, float], ...]:
    pairs = value.items() if isinstance(value, Mapping) else value
    try:
        normalised = {int(token): float(bias) for token, bias in pairs}
    except (TypeError, ValueError):
        raise UserError(f"logit_bias must map token ids to numbers, got {value!r}") from None
    for token, bias in normalised.items():
        if token < 0 or not (math.isfinite(bias) and -100 <= bias <= 100):
            raise UserError(f"logit_bias needs token ids >= 0 and biases in [-100, 100], got {token}: {bias}")
    return tuple(sorted(normalised.items()))


@dataclass(frozen=True)
class Capabilities:
    """Which :class:`GenerationParams` fields a model enforces (the others are rejected, never ignored), and
    whether it takes ``tools=`` (a model without ``tools`` given tools raises :class:`UserError`)."""

    banned_tokens: bool = False
    banned_first_tokens: bool = False
    logit_bias: bool = False
    tools: bool = False


# A user-simulator server's wire format (docs/integrations.md): the finish reason of a turn in which the
# simulated user ended the conversation, the extension field of its replies and model list, and the kind
# that field names in the model list.
END_CONVERSATION_REASON = "end_conversation"
SIMULATOR_FIELD = "userloop"
SIMULATOR_KIND = "user_simulator"


@dataclass(frozen=True)
class Choice:
    """One sample: its text, why it ended (``"stop"`` or ``"length"``; from a user-simulator server,
    ``"end_conversation"`` when the simulated user ended) and how many tokens it took. ``events`` are a
    user-simulator server's guardrail events for the turn (docs/integrations.md); none from a language model.
    ``tool_calls`` are the calls the sample asked for when the model was given ``tools`` (its ``text`` is then
    what it said besides, often empty)."""

    text: str
    finish_reason: str
    completion_tokens: int
    events: tuple[Mapping[str, str], ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Completion:
    """The samples for one conversation, with token counts and wall-clock seconds."""

    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    model: str

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self.choices[0].tool_calls


class ChatModel(ABC):
    """A chat model behind one interface; made by :func:`userloop.models.load_model` from a spec string.

    Use ``async with model:`` (or call :meth:`aclose`) to release connections and the batching worker;
    the model can be used again afterwards. Model weights stay loaded until the object is dropped.
    """

    name: str
    supports: Capabilities = Capabilities()

    async def agenerate(self, conversations: Sequence[Sequence[Message | Mapping[str, Any]]],
                        params: GenerationParams | None = None, tools: list[dict] | None = None) -> list[Completion]:
        """One :class:`Completion` per conversation, in order. ``tools`` (OpenAI function schemas) let the
        model answer with :attr:`Choice.tool_calls`; only a model whose ``supports.tools`` is set takes them."""
        params = params or GenerationParams()
        self._check_supported(params)
        batch = [chat_messages(conversation) for conversation in conversations]
        if not batch:
            return []
        if tools:
            if not self.supports.tools:
                raise UserError(f"{self.name} cannot call tools; use an hf:, openai:, scripted: or mock assistant")
            return await self._agenerate(batch, params, tools=checked_tools(tools))
        return await self._agenerate(batch, params)

    def generate(self, conversations: Sequence[Sequence[Message | Mapping[str, Any]]],
                 params: GenerationParams | None = None, tools: list[dict] | None = None) -> list[Completion]:
        """Blocking :meth:`agenerate`, for scripts; inside a running event loop, await ``agenerate``."""
        import asyncio  # here: the command line imports this module for every command, and --help runs no model

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop running: the one case where blocking is allowed
        else:
            raise RuntimeError("ChatModel.generate() blocks, so it cannot run inside an event loop: "
                               "use 'await model.agenerate(...)'")
        return asyncio.run(self._generate_once(conversations, params, tools))

    async def _generate_once(self, conversations, params, tools) -> list[Completion]:
        try:
            return await self.agenerate(conversations, params, tools)
        finally:
            await self.aclose()

    @abstractmethod
    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams) -> list[Completion]:
        """Generate for validated conversations (each a non-empty list of role/content dicts). A model whose
        ``supports.tools`` is set also takes ``tools=`` (checked OpenAI function schemas), passed only when given."""

    async def aclose(self) -> None:
        """Release connections and background tasks bound to the running event loop."""

    async def simulator_settings(self) -> Mapping | None:
        """When this model is a user simulator behind a server (``userloop serve --simulator``), its settings
        (guardrails, sampling); ``None`` for a language model. A :class:`~userloop.userlm.simulator.UserSimulator`
        takes such a model's answers as finished user turns instead of applying its own guardrails again."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    def _check_supported(self, params: GenerationParams) -> None:
        for field_name in ("banned_tokens", "banned_first_tokens", "logit_bias"):
            if getattr(params, field_name) and not getattr(self.supports, field_name):
                raise UserError(f"{self.name} cannot enforce {field_name} (see model.supports); "
                                "leave it empty and check the output instead")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def chat_messages(conversation: Sequence[Message | Mapping[str, Any]]) -> ChatMessages:
    """Validate one conversation and turn it into ``[{"role", "content"}]`` dicts, keeping an assistant
    message's ``tool_calls`` and a tool message's ``tool_call_id`` and ``name``."""
    if isinstance(conversation, (str, bytes, Mapping)) or not isinstance(conversation, Sequence):
        raise UserError(f"a conversation must be a list of messages, got {type(conversation).__name__}")
    if not conversation:
        raise UserError("a conversation needs at least one message")
    messages = []
    for message in conversation:
        if isinstance(message, Message):
            role, content = message.role, message.content
        elif isinstance(message, Mapping):
            role, content = message.get("role"), message.get("content")
        else:
            raise UserError(f"a message must be a Message or a {{'role', 'content'}} dict, got {message!r:.80}")
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise UserError(f"a message needs a non-empty string 'role' and a string 'content', got {message!r:.80}")
        messages.append({"role": role, "content": content} | _tool_fields(message))
    return messages


def _tool_fields(message) -> dict[str, Any]:
    """An assistant message's ``tool_calls`` and a tool message's ``tool_call_id`` and ``name`` (OpenAI's
    shapes), checked; nothing for any other message."""
    if not isinstance(message, Mapping):
        return {}
    fields: dict[str, Any] = {}
    if message.get("role") == "assistant" and message.get("tool_calls"):
        calls = message["tool_calls"]
        if not isinstance(calls, (list, tuple)) or not all(isinstance(call, (Mapping, ToolCall)) for call in calls):
            raise UserError(f"a message's 'tool_calls' must be a list of calls, got {calls!r:.80}")
        fields["tool_calls"] = [(call if isinstance(call, ToolCall) else ToolCall.from_message(call)).to_message()
                                for call in calls]
    if message.get("role") == "tool":
        for name in ("tool_call_id", "name"):
            if not isinstance(message.get(name), str):
                raise UserError(f"a tool message needs a string {name!r}, got {message!r:.80}")
            fields[name] = message[name]
    return fields


def checked_tools(tools) -> list[dict]:
    """``tools`` as a list of OpenAI function schemas (``{"type": "function", "function": {"name", ...}}``);
    anything else raises :class:`UserError`."""
    if not isinstance(tools, (list, tuple)):
        raise UserError(f"tools must be a list of function schemas, got {type(tools).__name__}")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
            raise UserError('a tool must look like {"type": "function", "function": {"name": ..., "parameters": ...}}, '
                            f"got {tool!r:.80}")
    return [dict(tool) for tool in tools]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
