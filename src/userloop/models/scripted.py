"""``scripted:FILE.json``: deterministic replies for tests and demos, no model at all.

The file holds either a JSON list of replies, used in order and cycled (each sample takes the next
one, counted per model instance), or a JSON object mapping a substring of the last message to a reply:
the first key, in file order, found in the last message's content wins; the key ``"*"`` is the reply
when no other key matches (without it, an unmatched message is an error). Tokens are counted as
whitespace-separated words; ``max_new_tokens`` cuts a reply to that many words (``finish_reason``
``"length"``) and stop strings cut it as a model's would. A reply may also be a tool-calling answer,
``{"content": "...", "tool_calls": [{"name": ..., "arguments": {...}}]}``, as for ``mock``
(:func:`userloop.models.mock.tool_answer`).
"""

from __future__ import annotations

import time
from pathlib import Path

from userloop.errors import UserError
from userloop.files import read_user_json
from userloop.models.base import Capabilities, ChatMessages, ChatModel, Completion, GenerationParams
from userloop.models.mock import count_words, tool_answer, word_choice

DEFAULT_KEY = "*"


class ScriptedChatModel(ChatModel):
    """Replies read from a JSON file (a list cycled in order, or last-message substring -> reply)."""

    supports = Capabilities(tools=True)

    def __init__(self, path: str) -> None:
        self.name = f"scripted:{path}"
        self._replies, self._by_substring = _read_script(Path(path))
        self._next = 0

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams,
                         tools: list[dict] | None = None) -> list[Completion]:
        completions = []
        for messages in conversations:
            started = time.perf_counter()
            choices = [word_choice(self._reply(messages[-1]["content"]), params) for _ in range(params.n)]
            completions.append(Completion(
                choices=choices, prompt_tokens=sum(count_words(m["content"]) for m in messages),
                completion_tokens=sum(c.completion_tokens for c in choices),
                seconds=time.perf_counter() - started, model=self.name,
            ))
        return completions

    def _reply(self, last_message: str) -> str | dict:
        if self._replies is not None:
            reply = self._replies[self._next % len(self._replies)]
            self._next += 1
            return reply
        for key, reply in self._by_substring.items():
            if key != DEFAULT_KEY and key in last_message:
                return reply
        if DEFAULT_KEY in self._by_substring:
            return self._by_substring[DEFAULT_KEY]
        raise UserError(f"{self.name}: no key matches the last message {last_message[:60]!r} "
                        f"(add a {DEFAULT_KEY!r} key for a default reply)")


def _read_script(path: Path) -> tuple[list[str | dict] | None, dict[str, str | dict] | None]:
    data = read_user_json(path, "scripted model file")
    if isinstance(data, list):
        if not data or not all(_is_reply(reply) for reply in data):
            raise UserError(f"scripted model file {path}: a list must hold at least one reply, all strings "
                            "(or {'content', 'tool_calls'} objects)")
        return data, None
    if isinstance(data, dict):
        if not data or not all(_is_reply(reply) for reply in data.values()):
            raise UserError(f"scripted model file {path}: an object must map substrings to reply strings "
                            "(or {'content', 'tool_calls'} objects)")
        if "" in data:
            raise UserError(f"scripted model file {path}: an empty key matches everything; use {DEFAULT_KEY!r}")
        return None, data
    raise UserError(f"scripted model file {path}: expected a JSON list of replies or an object, "
                    f"got {type(data).__name__}")


def _is_reply(reply) -> bool:
    """Whether ``reply`` is a reply string or a well-formed tool-calling answer."""
    try:
        tool_answer(reply)
    except UserError:
        return False
    return True

