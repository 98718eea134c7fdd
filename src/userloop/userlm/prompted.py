"""``prompted:INNER_SPEC``: an assistant model prompted to play the user, the baseline of "Flipping the Dialogue".

The paper (arXiv 2510.06552, section 4) compares its user LMs with assistant LMs (GPT-4o, Llama3
Instruct) prompted to act as a user who has an intent. :class:`PromptedUserModel` is that baseline
behind the user-LM interface: it reads the user-LM prompt (``[system: intent, user, assistant, ...]``,
as :func:`userloop.userlm.simulator.user_prompt` builds it) and asks the inner assistant model for the
user's next turn, so :class:`~userloop.userlm.simulator.UserSimulator` drives both kinds of simulator
the same way. The prompt is our own (the paper's exact wording is not reproduced here):

* a system message: you are a human user with this intent; write only your next message, short and
  informal as a real user would; reveal the task gradually; reply exactly ``<|endconversation|>``
  when your need is met or you want to stop (:data:`SYSTEM_PROMPT`);
* a first user message asking for the opening message (:data:`OPENING_REQUEST`), in every prompt, so
  the inner conversation starts with a user turn as strict chat templates require;
* the history with the roles swapped: the simulated user's past turns are the inner model's own
  (assistant) turns, the real assistant's replies are its user turns; the last message is then an
  inner user turn and the inner model's reply is the user's next turn.

The inner tokenizer may have no ``<|endconversation|>`` token, so the model bans nothing
(``supports`` is empty) and the simulator's guardrails fall back to resampling. The end marker is
recognised in the text: ``<|endconversation|>`` and bare variants such as ``endconversation`` or
``<endconversation>`` (any case) are rewritten to ``<|endconversation|>``, which the simulator treats
as the end of the conversation.
"""

from __future__ import annotations

import re
from dataclasses import replace

from userloop.errors import UserError
from userloop.models.base import ChatMessages, ChatModel, Completion, GenerationParams
from userloop.userlm.template import END_CONVERSATION

SYSTEM_PROMPT = (
    "You are a human user chatting with an AI assistant. You are not the assistant: the messages you "
    "receive are the assistant's replies, and you write what the user types next.\n\n"
    "Your intent in this conversation:\n{intent}\n\n"
    "How to write your messages:\n"
    "- Write only your next message to the assistant, with no quotes, labels or explanations.\n"
    "- Keep it short and informal, the way people really type into a chat box; do not be polite "
    "for the sake of it and do not thank the assistant at every turn.\n"
    "- Do not reveal the whole task at once: start with the main request and bring in details, "
    "constraints and corrections over the following turns, when they become relevant.\n"
    "- Never answer your own question or do the assistant's work; stay on your intent.\n"
    f"- When your need is met, or you want to stop for any other reason, reply exactly {END_CONVERSATION} "
    "and nothing else."
)
OPENING_REQUEST = "Write your first message to the assistant."
# <|endconversation|>, <endconversation>, [end_conversation], |endconversation|, endconversation (any case).
_END_MARKER = re.compile(r"[<\[]?\|?\s*\bend[_-]?conversation\b\s*\|?[>\]]?", re.IGNORECASE)


def prompted_messages(messages: ChatMessages) -> ChatMessages:
    """The inner assistant's prompt for the user-LM prompt ``messages`` (``[system: intent, user, assistant, ...]``)."""
    if not messages or messages[0]["role"] != "system" or not messages[0]["content"].strip():
        raise UserError("a prompted user model reads the user-LM prompt: a system message with the intent first, "
                        "then the history (see userloop.userlm.simulator.user_prompt)")
    swapped = {"user": "assistant", "assistant": "user"}
    history = messages[1:]
    for index, message in enumerate(history):
        if message["role"] != ("user" if index % 2 == 0 else "assistant"):
            raise UserError(f"history message {index + 1} has role {message['role']!r}: a prompted user model needs "
                            "user and assistant turns alternating, starting with the user")
    if history and history[-1]["role"] != "assistant":
        raise UserError("the history must end with an assistant turn (the user speaks next)")
    return [{"role": "system", "content": SYSTEM_PROMPT.format(intent=messages[0]["content"].strip())},
            {"role": "user", "content": OPENING_REQUEST},
            *({"role": swapped[m["role"]], "content": m["content"]} for m in history)]


def mark_end(text: str) -> str:
    """``text`` with every variant of the end marker written as ``<|endconversation|>``."""
    return _END_MARKER.sub(END_CONVERSATION, text)


class PromptedUserModel(ChatModel):
    """A :class:`ChatModel` that writes user turns by prompting an assistant ``inner`` model to play the user."""

    def __init__(self, inner: ChatModel) -> None:
        if not isinstance(inner, ChatModel):
            raise UserError(f"a prompted user model wraps a ChatModel, got {type(inner).__name__}")
        self.inner = inner
        self.name = f"prompted:{inner.name}"

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams) -> list[Completion]:
        completions = await self.inner.agenerate([prompted_messages(m) for m in conversations], params)
        return [replace(completion, model=self.name,
                        choices=[replace(choice, text=mark_end(choice.text)) for choice in completion.choices])
                for completion in completions]

    async def aclose(self) -> None:
        await self.inner.aclose()
