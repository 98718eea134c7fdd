"""``mock:NAME``: an in-memory chat model for tests and library code, no file and no model at all.

Its replies are a list, used in order and cycled (each sample takes the next one, counted per model
instance, as ``scripted:`` does), or a function ``reply(messages, **settings) -> str`` called once per
sample with the conversation (``{"role", "content"}`` dicts) and the generation settings as keywords
(``max_new_tokens``, ``temperature``, ``seed``, ``n``, ...). Every conversation it is asked about is kept in
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

DEFAULT_REPLY = "This is a reply from the mock model."
Reply = Callable[..., str]   # (messages, **settings) -> the reply text
_WORD = re.compile(r"\S+")


class MockModel(ChatModel):
    """Replies from a list (cycled) or a function; records every conversation and its parameters, and closes."""

    def __init__(self, name: str = "mock", *, replies: Sequence[str] | Reply = (DEFAULT_REPLY,),
                 supports: Capabilities | None = None) -> None:
        if callable(replies):
            self._reply: Reply = replies
        else:
            listed = [replies] if isinstance(replies, str) else list(replies)
            if not listed or not all(isinstance(reply, str) for reply in listed):
                raise UserError("a mock model's replies must be a function or at least one string, all strings")
            self._reply = _cycled(listed)
        self.name = f"mock:{name}"
        self.supports = supports if supports is not None else Capabilities()
        self.calls: list[tuple[ChatMessages, GenerationParams]] = []
        self.closed = 0

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams) -> list[Completion]:
        settings = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
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


def _cycled(replies: list[str]) -> Reply:
    """A reply function that gives ``replies`` in order, again and again."""
    position = 0

    def reply(messages: ChatMessages, **settings) -> str:
        nonlocal position
        position += 1
        return replies[(position - 1) % len(replies)]

    return reply


def count_words(text: str) -> int:
    """Tokens as the fake models count them: whitespace-separated words."""
    return sum(1 for _ in _WORD.finditer(text))


def word_choice(reply: str, params: GenerationParams) -> Choice:
    """``reply`` as a model's sample: cut to ``max_new_tokens`` words (``"length"``) and at stop strings."""
    words = list(_WORD.finditer(reply))
    too_long = len(words) > params.max_new_tokens
    text = reply[:words[params.max_new_tokens - 1].end()] if too_long else reply
    text, stopped = cut_at_stop(text, params.stop)
    finish = "length" if too_long and not stopped else "stop"
    return Choice(text=text, finish_reason=finish, completion_tokens=count_words(text))
