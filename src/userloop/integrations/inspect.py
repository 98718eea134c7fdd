"""A userloop simulated user for inspect_ai multi-turn evaluations (``pip install 'userloop[inspect]'``).

    from inspect_ai import Task, task
    from inspect_ai.dataset import Sample
    from userloop.integrations.inspect import simulated_user

    @task
    def trip_planning():
        intent = "You are a user chatting with an assistant language model to plan a weekend trip."
        return Task(dataset=[Sample(input=intent)], solver=simulated_user("hf:microsoft/UserLM-8b", max_turns=6))

    # inspect eval trip.py --model openai/gpt-4o-mini

:func:`simulated_user` is a solver. The user LM (any :class:`~userloop.userlm.simulator.UserSimulator`
or spec: ``hf:``, ``openai:`` pointed at a ``userloop serve --simulator`` server, ``prompted:``...)
writes every user turn behind the model card's guardrails; the model under test answers through
inspect's ``generate`` (its tools, limits and config apply), until the user ends the conversation
(``<|endconversation|>``) or ``max_turns`` user turns were written. The intent is the sample's
``metadata["intent"]``, else its input text; ``metadata["persona"]`` conditions a persona-conditioned
user LM. The sample's own input messages are not sent to the model under test (the simulated user
writes the first turn); system messages already in the state (``system_message()``) are kept.

In inspect's log: each user message carries ``metadata["userloop"] = {"events", "ended"}`` (the
guardrail events of that turn), and the sample's ``metadata["userloop"]`` holds ``end_reason``
(``user_ended``, ``max_turns``, ``completed`` when another solver or tool completed the sample,
``limit`` when an inspect limit stopped it), ``user_turns``, ``user`` (the user model) and
``end_events`` (those of an ending turn without text); an info event from source ``userloop`` repeats it.
"""

from __future__ import annotations

try:
    from inspect_ai.log import transcript
    from inspect_ai.model import ChatMessage, ChatMessageUser
    from inspect_ai.solver import Generate, Solver, TaskState, solver
    from inspect_ai.util import LimitExceededError
except ImportError as err:
    from userloop.errors import missing_dependency

    raise missing_dependency("inspect-ai", "inspect") from err

from collections.abc import Sequence
from dataclasses import replace

from userloop.errors import UserError
from userloop.models.base import ChatModel
from userloop.simulate.engine import derive_seed
from userloop.userlm.flip import user_system_message
from userloop.userlm.simulator import DEFAULT_PARAMS, GuardrailConfig, UserSimulator, UserTurn


@solver
def simulated_user(user: str | UserSimulator, *, max_turns: int = 6, guardrails: GuardrailConfig | None = None,
                   seed: int | None = None, intent_key: str = "intent", persona_key: str = "persona") -> Solver:
    """Alternate a userloop simulated user with the model under test (see the module docstring).

    ``user`` is a user-LM spec (loaded now, once for all samples) or a :class:`UserSimulator`;
    ``guardrails`` and ``seed`` (each turn's seed then derives from it, the sample id, the epoch and
    the turn) apply to a spec. ``intent_key`` / ``persona_key`` name the sample metadata fields read.
    """
    if not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1:
        raise UserError(f"max_turns must be an integer >= 1, got {max_turns!r}")
    if isinstance(user, UserSimulator):
        if guardrails is not None or seed is not None:
            raise UserError("give guardrails and seed to the UserSimulator itself, not to simulated_user")
        simulator = user
    else:
        simulator = UserSimulator(user, guardrails, replace(DEFAULT_PARAMS, seed=seed))
    users = _Sessions(simulator.model)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        system = user_system_message(_intent(state, intent_key), state.metadata.get(persona_key))
        state.messages = [message for message in state.messages if message.role == "system"]
        record = {"end_reason": "", "user_turns": 0, "user": simulator.model.name, "end_events": []}
        try:
            async with users:
                for turn_number in range(1, max_turns + 1):
                    turn = await _user_turn(simulator, system, state, turn_number)
                    if turn.text or not turn.ended:
                        state.messages.append(ChatMessageUser(
                            content=turn.text, metadata={"userloop": {"events": turn.events, "ended": turn.ended}}))
                        record["user_turns"] += 1
                    else:  # the usual ending: <|endconversation|> alone is no message
                        record["end_events"] = turn.events
                    if turn.ended:
                        record["end_reason"] = "user_ended"
                        break
                    state = await generate(state)
                    if state.completed:
                        record["end_reason"] = "completed"
                        break
                else:
                    record["end_reason"] = "max_turns"
        except LimitExceededError:
            record["end_reason"] = "limit"
            raise
        finally:
            state.metadata["userloop"] = record
            transcript().info(record, source="userloop")
        return state

    return solve


def _intent(state: TaskState, intent_key: str) -> str:
    intent = state.metadata.get(intent_key, state.input_text)
    if not isinstance(intent, str) or not intent.strip():
        raise UserError(f"sample {state.sample_id}: the simulated user needs an intent, in metadata[{intent_key!r}] "
                        "or as the sample's input text")
    return intent


async def _user_turn(simulator: UserSimulator, system: str, state: TaskState, turn_number: int) -> UserTurn:
    """The user's next turn; with a seed, one derived from it, the sample, the epoch and the turn."""
    params = simulator.params
    if params.seed is not None:
        params = replace(params, seed=derive_seed(params.seed, state.sample_id, state.epoch, turn_number))
    turn_simulator = UserSimulator(simulator.model, simulator.guardrails, params)
    [turn] = await turn_simulator.anext_turns([system], [user_view(state.messages)])
    return turn


def user_view(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """The conversation as the simulated user sees it: user turns and the assistant's text, one assistant
    turn per reply (the messages of a tool loop joined), no system prompt, tool calls or tool results."""
    view: list[dict[str, str]] = []
    for message in messages:
        if message.role not in ("user", "assistant"):
            continue
        if message.role == "assistant" and view and view[-1]["role"] == "assistant":
            view[-1]["content"] = "\n\n".join(text for text in (view[-1]["content"], message.text) if text)
        else:
            view.append({"role": message.role, "content": message.text})
    return view


class _Sessions:
    """``async with``: the samples using the user model now; when the last one ends, the model's connections
    and batching worker are released (they belong to inspect's event loop, which ends with the eval)."""

    def __init__(self, model: ChatModel) -> None:
        self.model, self.active = model, 0

    async def __aenter__(self) -> None:
        self.active += 1

    async def __aexit__(self, *exc_info: object) -> None:
        self.active -= 1
        if self.active == 0:
            await self.model.aclose()
