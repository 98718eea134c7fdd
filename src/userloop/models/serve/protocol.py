"""The OpenAI chat-completions wire format: request validation and response bodies.

Requests are validated strictly: an unknown field is an error (400), never silently ignored, except
the few that clients send with their no-op defaults (``user``, ``frequency_penalty``/``presence_penalty``
of 0, ``logprobs`` false). Two extension fields, ``banned_tokens`` and ``banned_first_tokens``, carry
:class:`~userloop.models.GenerationParams`' bans. Roles are OpenAI's (``system``, ``developer``, ``user``,
``assistant``, ``tool``); lists are bounded (:data:`MAX_MESSAGES` messages, as OpenAI's API, and
:data:`MAX_LIST_ITEMS` stop strings, bans or biased tokens), so what the event loop does per request stays small.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from userloop.models.base import Completion

MAX_SAMPLES = 128
MAX_MESSAGES = 2048
MAX_LIST_ITEMS = 256
ROLES = ("system", "developer", "user", "assistant", "tool")


class ServingError(Exception):
    """An HTTP error answered in OpenAI's format: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def body(self) -> dict:
        return error_body(self.status, self.message, self.code)


ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 408: "timeout_error"}


def error_body(status: int, message: str, code: str | None = None) -> dict:
    error_type = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "internal_error")
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("role")
    @classmethod
    def _openai_role(cls, value: str) -> str:
        if value not in ROLES:
            raise ValueError(f"unknown role {value[:40]!r} (roles: {', '.join(ROLES)})")
        return value

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=MAX_SAMPLES)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    banned_tokens: list[str] | None = None
    banned_first_tokens: list[str] | None = None
    # sent by some clients with their defaults; only the no-op values are accepted
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None

    @field_validator("stop", "logit_bias", "banned_tokens", "banned_first_tokens")
    @classmethod
    def _bounded(cls, value: str | list | dict | None) -> str | list | dict | None:
        if value is not None and not isinstance(value, str) and len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"at most {MAX_LIST_ITEMS} items, got {len(value):,}")
        return value

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value:
            raise ValueError("penalties are not supported by this server (only 0)")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("logprobs are not supported by this server")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return value


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_completion(completion: Completion, model: str) -> dict:
    """The ``chat.completion`` body for one :class:`Completion`."""
    return {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": choice.text},
                     "finish_reason": choice.finish_reason, "logprobs": None}
                    for i, choice in enumerate(completion.choices)],
        "usage": usage(completion),
    }


def chat_completion_chunks(completion: Completion, model: str, include_usage: bool) -> list[dict]:
    """``chat.completion.chunk`` bodies: per choice a role chunk, a content chunk and a finish chunk."""
    head = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    chunks = []
    for i, choice in enumerate(completion.choices):
        for delta, finish in (({"role": "assistant", "content": ""}, None), ({"content": choice.text}, None),
                              ({}, choice.finish_reason)):
            chunks.append({**head, "choices": [{"index": i, "delta": delta, "finish_reason": finish,
                                                "logprobs": None}]})
    if include_usage:
        chunks.append({**head, "choices": [], "usage": usage(completion)})
    return chunks


def usage(completion: Completion) -> dict:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def model_list(model: str) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "userloop"}]}
