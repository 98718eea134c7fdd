"""``mock:NAME``: an in-memory chat model for tests and library code, no file and no model at all.

Its replies are a list, used in order and cycled (each sample takes the next one, counted per model
instance, as ``scripted:`` does), or a function ``reply(messages, **settings) -> str`` called once per
sample with the conversation (``{"role", "content"}`` dicts) and the generation settings as keywords
(``max_new_tokens``, ``temperature``, ``seed``, ``n``, ..., and ``tools`` when the caller gave tools).
A reply may also be a tool-calling answer, ``{"content": "...", "tool_calls": [{"name": ..., "arguments":
{...}}]}`` (``arguments`` a dict, or text that is kept as the call's ``raw`` when it is not a JSON object;
an optional ``id``, else ``call_<n>``). Every conversation it is asked about is kept in
:attr:`MockModel.calls` with its :class:`GenerationParams`, and :attr:`MockModel.closed` counts its releases,
so a test can check what a model was sent and that it was let go.
Tokens are whitespace-separated words; ``max_new_tokens`` and stop strings cut a reply as they cut a model's.

    model = MockModel(replies=["Sure.", "Anything else?"])          # or load_model("mock:helper", replies=[...])
    model = MockModel(replies=lambda messages, **settings: messages[-1]["content"].upper())
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence

from userloop.errors import UserError
from userloop.models.base import (
    Capabilities,
    ChatMessages,
    ChatModel,
    Choice,
    Completion,
    GenerationParams,
    cut_at_stop,
)
from userloop.models.tools import ToolCall

DEFAULT_REPLY = "This is a reply from the mock model."
Reply = Callable[..., str | dict]   # (messages, **settings) -> the reply text, or a tool-calling answer
_WORD = re.compile(r"\S+")


class MockModel(ChatModel):
    """Replies from a list (cycled) or a function; records every conversation and its parameters, and closes."""

    def __init__(self, name: str = "mock", *, replies: Sequence[str | dict] | Reply = (DEFAULT_REPLY,),
                 supports: Capabilities | None = None) -> None:
        if callable(replies):
            self._reply: Reply = replies
        else:
            listed = [replies] if isinstance(replies, (str, dict)) else list(replies)
            if not listed or not all(isinstance(reply, (str, dict)) for reply in listed):
                raise UserError("a mock model's replies must be a function or at least one string (or "
                                "{'content', 'tool_calls'} dict), all strings or such dicts")
            for reply in listed:
                tool_answer(reply)  # a malformed dict is an error now, not at the first call
            self._reply = _cycled(listed)
        self.name = f"mock:{name}"
        self.supports = supports if supports is not None else Capabilities(tools=True)
        self.calls: list[tuple[ChatMessages, GenerationParams]] = []
        self.closed = 0

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams,
                         tools: list[dict] | None = None) -> list[Completion]:
        settings = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
        if tools:
            settings["tools"] = tools
        completions = []
        for messages in conversations:
            started = time.perf_counter()
            self.calls.append((messages, params))
            choices = [word_choice(self._reply(messages, **settings), params) for _ in range(params.n)]
            completions.append(Completion(
                choices=choices, prompt_tokens=sum(count_words(m["content"]) for m in messages),
                completion_tokens=sum(c.completion_tokens for c in choices),
                seconds=time.perf_counter() - started, model=self.name,
            ))
        return completions

    async def aclose(self) -> None:
        self.closed += 1


def _cycled(replies: list[str | dict]) -> Reply:
    """A reply function that gives ``replies`` in order, again and again."""
    position = 0

    def reply(messages: ChatMessages, **settings) -> str | dict:
        nonlocal position
        position += 1
        return replies[(position - 1) % len(replies)]

    return reply


def count_words(text: str) -> int:
    """Tokens as the fake models count them: whitespace-separated words."""
    return sum(1 for _ in _WORD.finditer(text))


def word_choice(reply: str | dict, params: GenerationParams) -> Choice:
    """``reply`` (text, or a tool-calling answer: :func:`tool_answer`) as a model's sample: its text cut to
    ``max_new_tokens`` words (``"length"``) and at stop strings; a call's arguments count as words too."""
    reply, calls = tool_answer(reply)
    words = list(_WORD.finditer(reply))
    too_long = len(words) > params.max_new_tokens
    text = reply[:words[params.max_new_tokens - 1].end()] if too_long else reply
    text, stopped = cut_at_stop(text, params.stop)
    finish = "length" if too_long and not stopped else "stop"
    call_words = sum(count_words(call.name) + count_words(call.to_message()["function"]["arguments"]) for call in calls)
    return Choice(text=text, finish_reason=finish, completion_tokens=count_words(text) + call_words, tool_calls=calls)


def tool_answer(reply: str | dict) -> tuple[str, tuple[ToolCall, ...]]:
    """A fake model's reply as (text, tool calls): a string is text; a dict is ``{"content": TEXT (optional),
    "tool_calls": [{"name", "arguments", "id" (optional)}]}``. Anything else raises :class:`UserError`."""
    if isinstance(reply, str):
        return reply, ()
    if not isinstance(reply, dict) or set(reply) - {"content", "tool_calls"}:
        raise UserError(f"a tool-calling reply is {{'content': TEXT, 'tool_calls': [...]}}, got {reply!r:.100}")
    content, listed = reply.get("content") or "", reply.get("tool_calls") or []
    if not isinstance(content, str) or not isinstance(listed, list):
        raise UserError(f"a tool-calling reply needs text 'content' and a list 'tool_calls', got {reply!r:.100}")
    calls = []
    for number, call in enumerate(listed):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
            raise UserError(f"a tool call in a reply needs a 'name' (and 'arguments'), got {call!r:.100}")
        calls.append(ToolCall.parsed(str(call.get("id") or f"call_{number}"), call["name"], call.get("arguments")))
    return content, tuple(calls)
