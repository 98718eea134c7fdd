"""Serving a user simulator: each request is the harness's conversation, each answer the user's next turn.

The wire format is :mod:`~userloop.models.serve.simulator_protocol`'s. This layer knows no user LM: it
gets a :class:`TurnWriter` (``userloop.userlm.simulator_server.SimulatorTurns`` puts a
:class:`~userloop.userlm.simulator.UserSimulator` behind it), so the models layer never imports the
user-LM layer. Concurrent requests reach the simulator's model together, so an ``hf:`` model batches
them as plain ``serve`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from userloop.errors import UserError
from userloop.models.base import ChatModel, ModelError
from userloop.models.serve.protocol import ServingError
from userloop.models.serve.serving import ChatServing
from userloop.models.serve.simulator_protocol import (
    HarnessOptions,
    SimulatorRequest,
    ending_text,
    simulator_model_list,
    split_conversation,
    user_turn_chunks,
    user_turn_completion,
)


@dataclass(frozen=True)
class ServedTurn:
    """The simulated user's turn, as the server answers it: text, whether the user ended, guardrail
    events, and the tokens of every sample drawn for it."""

    text: str
    ended: bool
    events: list[Mapping[str, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TurnWriter(Protocol):
    """What the server needs from a user simulator."""

    def description(self) -> dict[str, Any]:
        """Its settings (guardrails, sampling defaults), listed by ``/v1/models``."""

    async def write(self, intent: str, persona: str | None, history: list[dict[str, str]],
                    sampling: dict[str, Any]) -> ServedTurn:
        """The next user turn after ``history`` (may be empty) for ``intent``; ``sampling`` holds the
        request's ``max_new_tokens`` / ``temperature`` / ``top_p`` / ``seed`` when it sets them. A bad
        input raises :class:`UserError`, a failing model :class:`ModelError`."""


class SimulatorServing(ChatServing):
    """:class:`ChatServing` whose completions are the simulated user's next turns (see the module docstring),
    for harnesses that call it as ``harness`` says (default: the protocol's own perspective, no end text)."""

    request_type = SimulatorRequest

    def __init__(self, turns: TurnWriter, model: ChatModel, model_name: str, api_key: str | None = None,
                 harness: HarnessOptions | None = None) -> None:
        super().__init__(model, model_name, api_key)
        self.turns = turns
        self.harness = harness or HarnessOptions()

    def models(self) -> dict:
        return simulator_model_list(self.model_name, {**self.turns.description(), "harness": self.harness.model_dump()})

    async def chat_completion(self, request: SimulatorRequest) -> dict | list[dict]:
        """The response body, or the list of stream chunks when ``request.stream``."""
        conversation = split_conversation(request, self.harness)
        try:
            turn = await self.turns.write(conversation.intent, request.persona, conversation.history,
                                          request.sampling())
        except ModelError as err:
            raise ServingError(502, str(err)) from None
        except UserError as err:
            raise ServingError(400, str(err)) from None
        text = ending_text(turn.text, request.end_text or self.harness.end_text) if turn.ended else turn.text
        fields = (text, turn.ended, [*conversation.events, *turn.events], self.model_name, turn.prompt_tokens,
                  turn.completion_tokens)
        if request.stream:
            return user_turn_chunks(*fields, bool(request.stream_options and request.stream_options.include_usage))
        return user_turn_completion(*fields)
