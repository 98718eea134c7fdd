"""Tool calls: what an assistant asks a tool to do, and the error a tool raises for a bad call.

Tools are OpenAI function schemas (``{"type": "function", "function": {"name", "description", "parameters"}}``)
passed to :meth:`ChatModel.generate(..., tools=...) <userloop.models.ChatModel.generate>`; a model that calls
them returns :class:`ToolCall` s in :attr:`Choice.tool_calls <userloop.models.Choice>`. In a conversation,
an assistant message that called tools carries them in OpenAI's shape (``"tool_calls": [{"id", "type":
"function", "function": {"name", "arguments": JSON text}}]``, :meth:`ToolCall.to_message`) and each result is a
``{"role": "tool", "tool_call_id", "name", "content"}`` message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ToolCall:
    """One call the assistant asked for: the provider's ``id`` (``"call_<n>"`` when it gives none), the tool's
    ``name`` and its parsed JSON ``arguments``. A call whose arguments are not a JSON object keeps
    ``arguments={}`` and the text it gave in ``raw``; the engine answers such a call with an error."""

    id: str
    name: str
    arguments: dict = field(default_factory=dict)
    raw: str | None = None

    @classmethod
    def parsed(cls, id: str, name: str, arguments) -> ToolCall:
        """A call from a provider's ``arguments``: a dict as is, JSON text parsed, none as ``{}``; anything that
        is not a JSON object is kept as text in ``raw``."""
        if arguments is None:
            return cls(id, name, {})
        if isinstance(arguments, Mapping):
            return cls(id, name, dict(arguments))
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        try:
            value = json.loads(text) if text.strip() else {}
        except ValueError:
            return cls(id, name, {}, text)
        return cls(id, name, value) if isinstance(value, dict) else cls(id, name, {}, text)

    def to_message(self) -> dict:
        """The call in an assistant message's ``tool_calls`` list (OpenAI's shape; arguments as JSON text)."""
        arguments = self.raw if self.raw is not None else json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}

    @classmethod
    def from_message(cls, entry: Mapping) -> ToolCall:
        """The inverse of :meth:`to_message` (also takes ``{"id", "name", "arguments"}``)."""
        function = entry.get("function") if isinstance(entry.get("function"), Mapping) else entry
        return cls.parsed(str(entry.get("id") or ""), str(function.get("name") or ""), function.get("arguments"))


class ToolError(Exception):
    """Raised by a tool for a bad call (a missing order, an invalid argument); its message goes back to the
    assistant as the call's result (``error: MESSAGE``) and the conversation goes on."""


# ---------------------------------------------------------------------- tools in a model's text (hf:)
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
TOOL_BLOCK_INTRO = ("# Tools\n\nYou may call one or more functions to help with the user's request. "
                    "The functions, as JSON schemas:\n<tools>\n")
TOOL_BLOCK_USAGE = ("\n</tools>\n\nTo call a function, answer with one JSON object per call inside "
                    '<tool_call></tool_call> tags:\n<tool_call>\n{"name": "FUNCTION NAME", "arguments": '
                    "{ARGUMENTS}}\n</tool_call>\nEach result comes back in a message with the role 'tool'.")


def tool_block(tools: list[dict]) -> str:
    """The tools as a system-prompt block, for a chat template that takes no ``tools``: the schemas as JSON
    lines and how to call them (``<tool_call>{"name", "arguments"}</tool_call>``)."""
    return TOOL_BLOCK_INTRO + "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools) + TOOL_BLOCK_USAGE


def calls_in_text(text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """The tool calls a model wrote in ``text`` and the text around them: every ``<tool_call>JSON</tool_call>``
    block (an unclosed last one too), else the whole text when it is one bare JSON object with ``name`` and
    ``arguments`` (or ``parameters``). Ids are ``call_<n>``. A block that is not such an object becomes a call
    without a name whose ``raw`` is the block, for the caller to answer with an error."""
    blocks = _TOOL_CALL.findall(text)
    if blocks:
        return _TOOL_CALL.sub("", text).strip(), tuple(_call_in_block(n, block) for n, block in enumerate(blocks))
    try:
        value = json.loads(text)
    except ValueError:
        return text, ()
    named = isinstance(value, dict) and isinstance(value.get("name"), str)
    if named and ("arguments" in value or "parameters" in value):
        return "", (ToolCall.parsed("call_0", value["name"], value.get("arguments", value.get("parameters"))),)
    return text, ()


def _call_in_block(number: int, block: str) -> ToolCall:
    try:
        value = json.loads(block)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return ToolCall(f"call_{number}", "", {}, block)
    return ToolCall.parsed(f"call_{number}", value["name"], value.get("arguments", value.get("parameters")))


def template_messages(messages: list[dict], tools: list[dict] | None, tools_in_template: bool) -> list[dict]:
    """``messages`` for a chat template. When the template takes tools, an assistant message's calls keep
    transformers' shape (``arguments`` a dict). Otherwise :func:`tool_block` is added to the system message
    (a first one is made when there is none), calls are written into the assistant's text as ``<tool_call>``
    blocks, and a tool message keeps only its role and content."""
    shown = []
    for message in messages:
        calls = [ToolCall.from_message(call) for call in message.get("tool_calls") or ()]
        if calls and tools_in_template:
            shown.append({**message, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in calls]})
        elif calls:
            written = "\n".join(f"<tool_call>\n{json.dumps(_written(call), ensure_ascii=False)}\n</tool_call>"
                                for call in calls)
            shown.append({"role": message["role"], "content": "\n".join(filter(None, (message["content"], written)))})
        elif message["role"] == "tool" and not tools_in_template:
            shown.append({"role": "tool", "content": message["content"]})
        else:
            shown.append(message)
    if tools and not tools_in_template:
        if shown and shown[0]["role"] == "system":
            shown[0] = {**shown[0], "content": f"{shown[0]['content']}\n\n{tool_block(tools)}"}
        else:
            shown.insert(0, {"role": "system", "content": tool_block(tools)})
    return shown


def _written(call: ToolCall) -> dict:
    return {"name": call.name, "arguments": call.raw if call.raw is not None else call.arguments}
