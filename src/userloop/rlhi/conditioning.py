"""Persona conditioning: the user's persona in the system message (RLHI section 2.2).

RLHI's persona-conditioned learning gives the policy and the reward model the user's persona as
context. Every part-2 step (reward training and scoring, sampling, DPO, UserEval) puts it there with
the one helper :func:`with_persona`, so training and inference see the same text: a system message
``"About the user: {persona}"``, or, when the conversation already has a system message, that line
followed by a blank line and the original system message.
"""

from __future__ import annotations

from collections.abc import Sequence

PERSONA_PREFIX = "About the user: "


def persona_line(persona: str) -> str:
    return PERSONA_PREFIX + " ".join(persona.split())


def is_message_list(value) -> bool:
    """Whether ``value`` is a non-empty list of ``{role, content}`` messages with text in both."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def with_persona(prompt: Sequence[dict], persona: str | None) -> list[dict]:
    """``prompt`` with ``persona`` in its system message (a new copy; the input is not changed).

    ``None`` or an empty persona (users without enough history) leaves the messages as they are."""
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    if persona is None or not persona.strip():
        return messages
    line = persona_line(persona)
    if messages and messages[0]["role"] == "system":
        system = messages[0]["content"]
        messages[0] = {"role": "system", "content": f"{line}\n\n{system}" if system.strip() else line}
        return messages
    return [{"role": "system", "content": line}, *messages]
