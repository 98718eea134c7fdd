"""The user simulator's wire format: chat completions from the harness's point of view.

A harness (the program that runs the assistant under test) asks for the simulated user's next turn
with an ordinary chat-completions request: the conversation as the harness sees it (the simulated
user's earlier turns as ``user``, its assistant's replies as ``assistant``) and the user's intent as
the first message, with role ``system``. Extension fields: ``intent`` (the intent, when the system
messages are the assistant's own prompt: those are then left out, the user never saw them),
``persona`` (a persona-conditioned user LM's persona), ``perspective`` and ``end_text`` (below). The
answer is a ``chat.completion`` whose message is the user's next turn (role ``assistant``, as the wire
format requires) and whose ``finish_reason`` is ``"end_conversation"`` when the user ended the
conversation (``"stop"`` otherwise); the text never contains ``<|endconversation|>``. An extension
field on the response (on the finish chunk of a stream) carries the same and the events:
``"userloop": {"ended": bool, "events": [{"guardrail", "action", "detail"}, ...]}``.

Harnesses built around a prompted user (tau2-bench) call their user model differently; the server's
:class:`HarnessOptions` (``userloop serve --simulator --perspective/--end-text/--intent-tag``) and the
request fields of the same names adapt to them:

* **perspective** ``"user"``: the roles are the prompted user's, swapped (the assistant's turns as
  ``user``, the simulated user's own as ``assistant``); they are swapped back before the user LM sees them.
* **an opening assistant turn** (a greeting before the user's first turn) is left out, in either
  perspective: a user LM's conversation opens with the user ("Flipping the Dialogue" trains the first
  turn on the intent alone), so the greeting would put it off its training distribution. An event
  ``{"guardrail": "opening_assistant_turn", "action": "drop"}`` says so.
* **end text**: when the user ends the conversation, the text is the user's last words followed by
  the end text (``"###STOP###"``), or the end text alone; ``finish_reason`` and ``userloop`` as always.
* **intent tag**: the intent is the text inside ``<TAG>...</TAG>`` of the system message (tau2's
  ``<scenario>``), the rest (role-play guidelines written for a prompted model) left out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from userloop.errors import UserError
from userloop.models.base import END_CONVERSATION_REASON, SIMULATOR_FIELD, SIMULATOR_KIND
from userloop.models.serve.protocol import (
    MAX_LIST_ITEMS,
    MAX_MESSAGES,
    ChatMessage,
    ServingError,
    StreamOptions,
    completion_id,
)

SYSTEM_ROLES = ("system", "developer")  # OpenAI's newer name for the system message
OPENING_TURN_GUARDRAIL = "opening_assistant_turn"
USER_TOOLS_GUARDRAIL = "user_tools"
Perspective = Literal["assistant", "user"]
EndText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _tag_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][\w.-]{0,63}", value):
        raise ValueError("give a tag's name, such as scenario for <scenario>...</scenario> (a letter, then letters, "
                         "digits, '_', '.' or '-')")
    return value


IntentTag = Annotated[str, AfterValidator(_tag_name)]


class HarnessOptions(BaseModel):
    """How the harnesses of a server call it (``userloop serve --simulator --perspective --end-text
    --intent-tag``): the roles' perspective, the text that marks the end, where the intent is. The
    defaults are this protocol's own; a request's ``perspective`` and ``end_text`` override the server's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    perspective: Perspective = "assistant"
    end_text: EndText | None = None
    intent_tag: IntentTag | None = None


def harness_options(perspective: str = "assistant", end_text: str | None = None,
                    intent_tag: str | None = None) -> HarnessOptions:
    """:class:`HarnessOptions` from the server's options; a bad value raises :class:`UserError` naming the option."""
    try:
        return HarnessOptions(perspective=perspective, end_text=end_text, intent_tag=intent_tag)
    except ValidationError as err:
        first = err.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-")
        raise UserError(f"{option}: {first['msg'].removeprefix('Value error, ')} (got {first['input']!r})") from None


class SimulatorRequest(BaseModel):
    """A request for the simulated user's next turn; fields outside this list are refused (400)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage] = Field(default_factory=list, max_length=MAX_MESSAGES)
    intent: str | None = None
    persona: str | None = None
    perspective: Perspective | None = None
    end_text: EndText | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = 1
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # tools a harness offers its simulated user (tau2-bench's mock and telecom domains): a user LM never calls them
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
    tool_choice: Any = None
    # sent by some clients with their defaults; only the no-op values are accepted
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None

    @field_validator("n")
    @classmethod
    def _one_turn(cls, value: int) -> int:
        if value != 1:
            raise ValueError("the user simulator writes one user turn per request (n must be 1)")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tools_optional(cls, value):
        if value not in (None, "auto", "none"):
            raise ValueError("the simulated user never calls tools: only 'auto' or 'none' (or leave it out)")
        return value

    @field_validator("frequency_penalty", "presence_penalty", "logprobs")
    @classmethod
    def _no_op_only(cls, value):
        if value:
            raise ValueError("not supported by the user simulator (leave it out)")
        return value

    def sampling(self) -> dict[str, Any]:
        """The sampling fields the request sets (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``)."""
        fields = {"max_new_tokens": self.max_completion_tokens or self.max_tokens, "temperature": self.temperature,
                  "top_p": self.top_p, "seed": self.seed}
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class UserTurnInput:
    """What the user LM gets from one request: the intent, the history in the user LM's roles (user and
    assistant alternating from the user, ending with the assistant; empty for the opening turn) and the
    events of what was left out (an opening assistant turn)."""

    intent: str
    history: list[dict[str, str]]
    events: list[dict[str, str]] = field(default_factory=list)


def split_conversation(request: SimulatorRequest, harness: HarnessOptions | None = None) -> UserTurnInput:
    """The :class:`UserTurnInput` of the harness's messages, read in the request's perspective (else the
    server's), or a :class:`ServingError` (400) saying what is wrong, in the harness's own roles."""
    harness = harness or HarnessOptions()
    own, other = ("user", "assistant") if (request.perspective or harness.perspective) == "assistant" else (
        "assistant", "user")
    messages = [(message.role, message.text()) for message in request.messages]
    if request.intent is not None:
        intent = request.intent
        turns = [(index, role, text) for index, (role, text) in enumerate(messages) if role not in SYSTEM_ROLES]
    else:
        if not messages:
            raise ServingError(400, "empty conversation: send the user's intent as the first message, with role "
                                    "'system' (or in the 'intent' field), then the conversation so far")
        systems = [index for index, (role, _) in enumerate(messages) if role in SYSTEM_ROLES]
        if not systems:
            raise ServingError(400, "no user-simulator intent: send it as the first message, with role 'system', or "
                                    "in the 'intent' field")
        if systems != [0]:
            where = systems[1] if systems[0] == 0 else systems[0]
            raise ServingError(400, f"messages[{where}] is a system message: the intent is the one system message "
                                    "and comes first (put the assistant's own prompt aside, or send the intent in "
                                    "the 'intent' field, which leaves system messages out)")
        intent = tagged_intent(messages[0][1], harness.intent_tag)
        turns = [(index, role, text) for index, (role, text) in enumerate(messages) if index > 0]
    if not intent.strip():
        raise ServingError(400, "the user-simulator intent is empty")
    events = []
    if request.tools:
        events.append({"guardrail": USER_TOOLS_GUARDRAIL, "action": "ignore",
                       "detail": f"{len(request.tools)} tools offered: a user LM writes text and never calls them"})
    if turns and turns[0][1] == other:
        events.append({"guardrail": OPENING_TURN_GUARDRAIL, "action": "drop",
                       "detail": f"left out messages[{turns[0][0]}], the assistant's turn before the user's first: "
                                 "a user LM's conversation opens with the user"})
        turns = turns[1:]
    check_turn_order(turns, own, other)
    user_lm_role = {own: "user", other: "assistant"}
    return UserTurnInput(intent, [{"role": user_lm_role[role], "content": text} for _, role, text in turns], events)


def tagged_intent(system_text: str, tag: str | None) -> str:
    """The intent in the system message: all of it, or with ``tag`` the text inside its first ``<tag>...</tag>``."""
    if tag is None:
        return system_text
    found = re.search(f"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", system_text, re.DOTALL)
    if found is None:
        raise ServingError(400, f"the system message has no <{tag}>...</{tag}> section: this server reads the "
                                f"user's intent there (--intent-tag {tag}); send it so, or in the 'intent' field")
    return found.group(1).strip()


def check_turn_order(turns: Sequence[tuple[int, str, str]], own: str = "user", other: str = "assistant") -> None:
    """A :class:`ServingError` (400) unless ``(index, role, text)`` turns alternate from ``own`` (the
    simulated user's role in the harness's perspective) and end with ``other`` (the assistant's)."""
    for position, (index, role, _) in enumerate(turns):
        if role not in (own, other):
            raise ServingError(400, f"messages[{index}] has role {role!r}: the simulated user sees only {own!r} "
                                    f"turns (its own) and {other!r} turns (the assistant's; send tool results as "
                                    "the assistant's text)")
        if role != (own if position % 2 == 0 else other):
            raise ServingError(400, f"messages[{index}] is a second {role!r} turn in a row: the simulated user's "
                                    f"({own!r}) and the assistant's ({other!r}) turns alternate (join consecutive "
                                    "turns of one side)")
    if turns and turns[-1][1] != other:
        raise ServingError(400, f"the conversation ends with the simulated user's own turn ({own!r}): it speaks "
                                f"after the assistant ({other!r}), so send the assistant's reply first")


def ending_text(text: str, end_text: str | None) -> str:
    """The text of a turn that ends the conversation: the user's last words followed by ``end_text``, or
    ``end_text`` alone when there are none; without ``end_text``, the words as they are."""
    if end_text is None:
        return text
    return f"{text} {end_text}" if text else end_text


def user_turn_completion(text: str, ended: bool, events: list[Mapping[str, str]], model: str,
                         prompt_tokens: int, completion_tokens: int) -> dict:
    """The ``chat.completion`` body for one user turn."""
    return {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason(ended), "logprobs": None}],
        "usage": _usage(prompt_tokens, completion_tokens),
        SIMULATOR_FIELD: extension(ended, events),
    }


def user_turn_chunks(text: str, ended: bool, events: list[Mapping[str, str]], model: str, prompt_tokens: int,
                     completion_tokens: int, include_usage: bool) -> list[dict]:
    """``chat.completion.chunk`` bodies: a role, a content and a finish chunk (with the extension), then usage."""
    head = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    chunks = [{**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}
              for delta in ({"role": "assistant", "content": ""}, {"content": text})]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason(ended),
                                        "logprobs": None}], SIMULATOR_FIELD: extension(ended, events)})
    if include_usage:
        chunks.append({**head, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)})
    return chunks


def finish_reason(ended: bool) -> str:
    return END_CONVERSATION_REASON if ended else "stop"


def extension(ended: bool, events: list[Mapping[str, str]]) -> dict:
    return {"ended": ended, "events": [dict(event) for event in events]}


def simulator_model_list(model: str, description: Mapping[str, Any]) -> dict:
    """``/v1/models`` for a simulator: the served id, marked as a user simulator with its settings."""
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "userloop",
                                        SIMULATOR_FIELD: {"kind": SIMULATOR_KIND, **description}}]}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
