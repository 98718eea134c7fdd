"""The lock-step engine: every live conversation advances together, one batch per phase.

A conversation is a (scenario, sample) pair. Up to ``concurrency`` of them are live at once; each step:

1. **user**: every live conversation gets its next user turn from the :class:`UserSimulator`, all
   requests in flight together (the ``hf`` provider coalesces them into padded batches, ``openai``
   sends them as concurrent requests). A turn containing ``<|endconversation|>`` ends the
   conversation (``user_ended``; with ``empty_turn_ends``, so does a turn with no text). A scenario
   with ``metadata["persona"]`` is played by a persona-conditioned user: its system message is the
   intent and the persona (:func:`userloop.userlm.flip.user_system_message`, the text such a user LM
   was trained on). A :class:`ScenarioUser` (``testbed:users``) writes the turn itself from the scenario,
   the history and the conversation's seed. With ``last_word="user"``, a conversation whose user has now
   written its cap of turns ends here (``max_turns``): the last message is the user's reaction to the last reply.
2. **assistant**: every conversation still open gets the assistant's reply, again all at once. In a
   tool scenario (one with a ``domain``) the assistant is given the domain's tools; the calls it asks for
   run in order on the conversation's database (:meth:`SimulationEngine._run_tool`), their results go
   back to it as ``tool`` messages, and it is asked again until it answers without calls. It may run
   ``max_tool_calls_per_turn`` calls per turn: calls past the cap are answered ``error: ...`` without
   running, and a request for more after that ends the turn with the text it wrote (a ``cap`` event).
   An unknown tool, arguments that are not a JSON object or that the tool refuses, and an exception in
   the tool are answered ``error: ...`` too (a failed call leaves the database as it was); the run goes
   on. The user never sees tools, calls or results.
3. **classify** all new replies in one classifier call; **score** the answer attempts of scenarios
   with a checker, concurrently in worker threads (each phase only with a classifier / scorer). A
   passed score ends the conversation (``solved``: the Lost-in-Conversation rule, a correct answer
   attempt ends the task).
4. a conversation at its user-turn cap ends (``max_turns``); a prompt too long for the user's or the
   assistant's context ends that conversation (``context``), any other model error too (``error``,
   with the message), and the run goes on.

A tool scenario's record has the final database's ``final_state_hash`` and its ``task_score``
(:func:`userloop.simulate.answer_check.score_tool_task`: goal state reached, outputs told), which is
what ``solved`` says.

:class:`EndReason` is the one vocabulary of end reasons (docs/simulate.md, "End reasons"). A
:class:`Job` may carry its own assistant system message and fixed sampling seeds: what callers that
are not ``userloop simulate`` (the RLHI loop) need to drive their conversations through this engine.

Finished conversations are handed to ``on_finished`` as records the moment their phase ends, and
free slots are refilled from the queue at the start of the next step. Sampling is deterministic: the
conversation seed is derived from (run seed, scenario id, sample) and each turn's seed from it, so a
conversation is the same whatever else is in flight (up to the floating-point effects of padding);
a job's ``user_seed`` / ``assistant_seed`` replace the derived seeds of every turn of that role.
Without a user simulator the engine runs the single-turn setting: the one user turn is the
scenario's ``full_prompt``.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, Protocol

from userloop.models.base import ChatMessages, ChatModel, Completion, ContextLengthError, GenerationParams
from userloop.models.metered import MeteredModel
from userloop.models.tools import ToolCall, ToolError
from userloop.simulate import answer_check
from userloop.simulate.domains import ToolDomain, load_domain, state_hash
from userloop.simulate.records import SimulatedConversation, SimulatedMessage, TokenCount, ToolCallRecord, ToolStep
from userloop.simulate.scenarios import Scenario
from userloop.userlm.flip import user_system_message
from userloop.userlm.simulator import UserSimulator, UserTurn


class EndReason(StrEnum):
    """How a simulated conversation ended: the one vocabulary, documented in docs/simulate.md ("End reasons")."""

    USER_ENDED = "user_ended"   # the user wrote <|endconversation|> (with empty_turn_ends: or a turn with no text)
    MAX_TURNS = "max_turns"     # it reached its user-turn cap
    SOLVED = "solved"           # an answer attempt passed the scenario's check
    ERROR = "error"             # a model, the reply classifier or the scorer failed on it (message in ``error``)
    CONTEXT = "context"         # the next prompt no longer fit the user's or the assistant's context


END_REASONS = tuple(reason.value for reason in EndReason)
# The end reasons of conversations cut short by a failed model call: statistics over finished conversations
# (persona fidelity, Table 3, report charts) leave them out.
FAILED_END_REASONS = frozenset({EndReason.ERROR.value, EndReason.CONTEXT.value})
# Spellings older versions wrote (the RLHI loop's own loop, before it ran on this engine) -> today's.
RENAMED_END_REASONS = {"turn_cap": EndReason.MAX_TURNS.value}


def current_end_reason(name: str) -> str:
    """An end reason read from an existing folder, in today's vocabulary (an old spelling is renamed)."""
    return RENAMED_END_REASONS.get(name, name)


PHASES = ("user", "assistant", "classify", "scoring")


def stable_hash(*parts: object) -> int:
    """A 64-bit integer from its parts, the same on every machine and in every Python process (unlike hash())."""
    return int.from_bytes(hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from its parts (e.g. run seed, scenario id, sample), the same on every machine."""
    return stable_hash(*parts) % 2**31


class ScenarioUser(Protocol):
    """A user side that plays each scenario's own user instead of a user LM (``testbed:users``): the engine asks it
    for every turn with the scenario, the history (user and assistant messages) and the conversation's seed."""

    name: str

    async def anext_turn(self, scenario: Scenario, history: ChatMessages, seed: int) -> UserTurn: ...


@dataclass(frozen=True)
class Job:
    """Sample ``sample`` (0..N-1) of ``scenario``, and what this conversation does differently from the
    engine's defaults: the assistant's ``system_prompt`` (None: the engine's), and a fixed sampling seed
    for every user turn (``user_seed``) or assistant turn (``assistant_seed``) instead of one derived
    per turn (None)."""

    scenario: Scenario
    sample: int
    system_prompt: str | None = None
    user_seed: int | None = None
    assistant_seed: int | None = None


@dataclass
class _AssistantTurn:
    """An assistant turn: the reply (the last completion), the tool steps before it, their events, its tokens."""

    completion: Completion | None = None
    failure: Exception | None = None   # a model call that failed; the steps before it ran
    steps: list[ToolStep] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


@dataclass
class EngineTimings:
    """Wall-clock seconds of a run and the seconds spent awaiting each phase's calls."""

    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    conversations: int = 0
    turns: int = 0
    steps: int = 0

    @property
    def in_calls_s(self) -> float:
        return sum(self.phases.values())

    def to_dict(self) -> dict[str, Any]:
        overhead = max(self.wall_s - self.in_calls_s, 0.0)
        return {
            "wall_s": round(self.wall_s, 4), "in_model_calls_s": round(self.in_calls_s, 4),
            "overhead_s": round(overhead, 4), "overhead_share": round(overhead / self.wall_s, 4) if self.wall_s else 0.0,
            "by_phase_s": {name: round(seconds, 4) for name, seconds in self.phases.items()},
            "conversations": self.conversations, "turns": self.turns, "steps": self.steps,
            "conversations_per_s": round(self.conversations / self.wall_s, 3) if self.wall_s else 0.0,
            "turns_per_s": round(self.turns / self.wall_s, 3) if self.wall_s else 0.0,
        }


@dataclass
class _Conversation:
    job: Job
    seed: int
    cap: int
    started: float = field(default_factory=time.perf_counter)
    messages: list[SimulatedMessage] = field(default_factory=list)
    user_turns: int = 0
    end_reason: str | None = None
    error: str | None = None
    solved: bool = False
    end_events: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    tokens: dict[str, TokenCount] = field(default_factory=lambda: {"user": TokenCount(), "assistant": TokenCount()})
    domain: ToolDomain | None = None   # a tool scenario's domain and its database, changed by the calls
    state: dict | None = None

    def chat(self) -> ChatMessages:
        """The conversation as the user sees it: user and assistant turns, no tools."""
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def assistant_chat(self) -> ChatMessages:
        """The conversation as the assistant sees it: with its tool calls and their results."""
        return [shown for m in self.messages for shown in m.assistant_chat()]

    def end(self, reason: EndReason, error: str | None = None) -> None:
        self.end_reason, self.error = reason.value, error

    def add_tokens(self, role: str, prompt: int, completion: int) -> TokenCount:
        self.tokens[role].add(prompt, completion)
        return TokenCount(prompt, completion)


class SimulationEngine:
    """Runs many simulated conversations in lock-step (see the module docstring).

    ``user`` is a :class:`UserSimulator` or a :class:`ScenarioUser` (``None``: the single-turn setting),
    ``assistant`` any :class:`ChatModel` (it sees the job's or else the engine's ``system_prompt``, when given, then the
    user and assistant turns), ``classifier`` (optional) an object with
    ``aclassify(scenarios, histories, replies)`` and ``score`` (optional) a blocking, thread-safe
    ``score(scenario, reply) -> Score | None``. ``max_user_turns`` caps every conversation (a
    scenario's own ``max_user_turns`` may lower it); ``last_word`` says who writes the last message of
    a conversation that reaches the cap: the assistant (its reply to the last user turn) or the user
    (the last user turn is not answered). ``empty_turn_ends``: a user turn with no text ends the
    conversation (``user_ended``) instead of reaching the assistant. ``max_tool_calls_per_turn`` caps the tool
    calls run per assistant turn in tool scenarios.
    """

    def __init__(self, assistant: ChatModel, user: UserSimulator | ScenarioUser | None, classifier=None,
                 score: Callable | None = None,
                 *, assistant_params: GenerationParams, system_prompt: str | None = None, max_user_turns: int = 6,
                 last_word: Literal["assistant", "user"] = "assistant", empty_turn_ends: bool = False, seed: int = 0,
                 concurrency: int = 256, max_tool_calls_per_turn: int = 8) -> None:
        if last_word not in ("assistant", "user"):
            raise ValueError(f"last_word must be 'assistant' or 'user', got {last_word!r}")
        if not isinstance(max_tool_calls_per_turn, int) or max_tool_calls_per_turn < 1:
            raise ValueError(f"max_tool_calls_per_turn must be an integer >= 1, got {max_tool_calls_per_turn!r}")
        self.max_tool_calls_per_turn = max_tool_calls_per_turn
        self.assistant, self.user, self.classifier, self.score = assistant, user, classifier, score
        self.assistant_params, self.system_prompt = assistant_params, system_prompt
        self.max_user_turns = 1 if user is None else max_user_turns
        self.last_word, self.empty_turn_ends = last_word, empty_turn_ends
        self.seed, self.concurrency = seed, concurrency
        self.timings = EngineTimings()

    async def run(self, jobs: Iterable[Job], on_finished: Callable[[SimulatedConversation], None],
                  on_turns: Callable[[int], None] | None = None) -> EngineTimings:
        """Simulate every job; each finished conversation's record goes to ``on_finished`` at once."""
        self._on_finished, self._on_turns_callback = on_finished, on_turns
        queue, live = deque(jobs), []
        started = time.perf_counter()
        try:
            while queue or live:
                while queue and len(live) < self.concurrency:
                    live.append(self._open(queue.popleft()))
                live = await self._step(live)
                self.timings.steps += 1
        finally:
            self.timings.wall_s += time.perf_counter() - started
        return self.timings

    def _open(self, job: Job) -> _Conversation:
        scenario = job.scenario
        cap = min(self.max_user_turns, scenario.max_user_turns or self.max_user_turns)
        conversation = _Conversation(job, derive_seed(self.seed, scenario.id, job.sample), cap)
        if scenario.domain is not None:
            conversation.domain = load_domain(scenario.domain)
            conversation.state = conversation.domain.initial_state(scenario.db_seed or 0)
        return conversation

    async def _step(self, live: list[_Conversation]) -> list[_Conversation]:
        await self._timed("user", self._user_phase(live))
        if self.last_word == "user":
            _end_at_cap(live)
        live = self._finish(live)
        await self._timed("assistant", self._assistant_phase(live))
        live = self._finish(live)
        await self._timed("classify", self._classify_phase(live))
        await self._timed("scoring", self._scoring_phase(live))
        _end_at_cap(live)
        return self._finish(live)

    async def _timed(self, phase: str, coroutine) -> None:
        started = time.perf_counter()
        try:
            await coroutine
        finally:
            self.timings.phases[phase] += time.perf_counter() - started

    def _on_turns(self, count: int) -> None:
        self.timings.turns += count
        if self._on_turns_callback is not None:
            self._on_turns_callback(count)

    def _finish(self, live: list[_Conversation]) -> list[_Conversation]:
        still_open = []
        for conversation in live:
            if conversation.end_reason is None:
                still_open.append(conversation)
            else:
                self.timings.conversations += 1
                self._on_finished(self._record(conversation))
        return still_open

    # ------------------------------------------------------------------ phases
    async def _user_phase(self, live: list[_Conversation]) -> None:
        if self.user is None:
            for conversation in live:
                self._add_user_turn(conversation, UserTurn(conversation.job.scenario.full_prompt, False, []), 0.0, None)
            self._on_turns(len(live))
            return
        results = await asyncio.gather(*(self._user_turn(c) for c in live), return_exceptions=True)
        for conversation, result in zip(live, results):
            if isinstance(result, Exception):
                conversation.end(*_model_failure("user model", result))
            else:
                self._add_user_turn(conversation, *result)
        self._on_turns(sum(1 for result in results if not isinstance(result, Exception)))

    async def _user_turn(self, conversation: _Conversation) -> tuple[UserTurn, float, TokenCount | None]:
        turn_number, job = conversation.user_turns + 1, conversation.job
        if not isinstance(self.user, UserSimulator):  # a ScenarioUser plays the scenario itself: no model, no tokens
            started = time.perf_counter()
            seed = job.user_seed if job.user_seed is not None else conversation.seed
            turn = await self.user.anext_turn(job.scenario, conversation.chat(), seed)
            return turn, time.perf_counter() - started, None
        meter = MeteredModel(self.user.model)  # one per conversation and turn
        seed = job.user_seed if job.user_seed is not None else derive_seed(conversation.seed, turn_number, "user")
        params = replace(self.user.params, seed=seed)
        simulator = UserSimulator(meter, self.user.guardrails, params)
        started = time.perf_counter()
        scenario = conversation.job.scenario
        system = user_system_message(scenario.intent, scenario.metadata.get("persona"))
        [turn] = await simulator.anext_turns([system], [conversation.chat()])
        return turn, time.perf_counter() - started, conversation.add_tokens("user", meter.prompt_tokens,
                                                                          meter.completion_tokens)

    def _add_user_turn(self, conversation: _Conversation, turn: UserTurn, seconds: float,
                       tokens: TokenCount | None) -> None:
        conversation.seconds["user"] += seconds
        if turn.ended or (self.empty_turn_ends and not turn.text):
            conversation.end(EndReason.USER_ENDED)
            if not turn.text:  # the usual ending: <|endconversation|> alone is no message
                conversation.end_events = turn.events
                return
        conversation.messages.append(SimulatedMessage("user", turn.text, events=turn.events,
                                                      latency_s=round(seconds, 4), tokens=tokens, ended=turn.ended))
        conversation.user_turns += 1

    async def _assistant_phase(self, live: list[_Conversation]) -> None:
        results = await asyncio.gather(*(self._reply(c) for c in live), return_exceptions=True)
        for conversation, result in zip(live, results):
            failure = result if isinstance(result, Exception) else result.failure
            if failure is not None and not getattr(result, "steps", None):
                conversation.end(*_model_failure("assistant model", failure))
                continue
            conversation.seconds["assistant"] += result.seconds
            tokens = conversation.add_tokens("assistant", result.prompt_tokens, result.completion_tokens)
            # a turn whose model call failed after tool calls ran keeps them: a reply without text, then the end
            reply = result.completion if failure is None else None
            conversation.messages.append(SimulatedMessage(
                "assistant", reply.text if reply else "", events=result.events, tokens=tokens,
                finish_reason=reply.finish_reason if reply else None, latency_s=round(result.seconds, 4),
                tool_steps=result.steps))
            if failure is not None:
                conversation.end(*_model_failure("assistant model", failure))
        self._on_turns(sum(1 for c in live if c.end_reason is None))

    async def _reply(self, conversation: _Conversation) -> _AssistantTurn:
        """The assistant's turn: one completion, or in a tool scenario as many as its tool calls take."""
        job = conversation.job
        system_prompt = job.system_prompt if job.system_prompt is not None else self.system_prompt
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        history = system + conversation.assistant_chat()
        tools = conversation.domain.tools if conversation.domain is not None else None
        turn, run, started = _AssistantTurn(), 0, time.perf_counter()
        while True:
            # the turn's first request keeps the seed a turn without tools has; each later one gets its own
            step_part = (len(turn.steps),) if turn.steps else ()
            seed = (job.assistant_seed if job.assistant_seed is not None
                    else derive_seed(conversation.seed, conversation.user_turns, "assistant", *step_part))
            shown = history + [message for step in turn.steps for message in step.chat()]
            try:
                [turn.completion] = await self.assistant.agenerate([shown], replace(self.assistant_params, seed=seed),
                                                                   tools)
            except Exception as err:  # noqa: BLE001 - ends this conversation (the phase reports it), not the run
                turn.failure = err
                break
            turn.prompt_tokens += turn.completion.prompt_tokens
            turn.completion_tokens += turn.completion.completion_tokens
            calls = turn.completion.tool_calls if tools else ()
            if not calls:
                break
            if run >= self.max_tool_calls_per_turn:
                turn.events.append({"tool": "", "action": "cap", "detail": (
                    f"{run} tool calls run this turn (the cap); not run: {', '.join(c.name or '?' for c in calls)}")})
                break
            step = ToolStep(turn.completion.text, [])
            for call in calls:
                turn.events.append({"tool": call.name, "action": "call", "detail": _arguments_text(call)})
                if run < self.max_tool_calls_per_turn:
                    record = self._run_tool(conversation, call)
                    run += 1
                else:
                    record = _failed(call, f"not run: the cap of {self.max_tool_calls_per_turn} tool calls per turn "
                                           "is reached; answer the user")
                turn.events.append({"tool": call.name, "action": "result" if record.ok else "error",
                                    "detail": record.result})
                step.calls.append(record)
            turn.steps.append(step)
        turn.seconds = time.perf_counter() - started
        return turn

    def _run_tool(self, conversation: _Conversation, call: ToolCall) -> ToolCallRecord:
        """Run one call on the conversation's database: the result as JSON text (a string result as it is), or
        ``error: ...`` for a call without a name, arguments that are not a JSON object, an unknown tool, and a
        :class:`ToolError` or any other exception from the tool; the database changes only when the call works."""
        domain = conversation.domain
        if not call.name:
            return _failed(call, f"a tool call needs a function name and JSON arguments, got {call.raw!r:.200}")
        if call.raw is not None:
            return _failed(call, f"the arguments of {call.name} must be a JSON object, got {call.raw!r:.200}")
        names = [tool["function"]["name"] for tool in domain.tools]
        if call.name not in names:
            return _failed(call, f"unknown tool {call.name!r} (tools: {', '.join(names)})")
        state = copy.deepcopy(conversation.state)
        try:
            result = domain.call(state, call.name, call.arguments)
            content = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
        except ToolError as err:
            return _failed(call, str(err) or type(err).__name__)
        except Exception as err:  # noqa: BLE001 - a tool's failure is the assistant's result, never the run's end
            return _failed(call, f"{call.name} failed: {_describe(err)}")
        conversation.state = state
        return ToolCallRecord(call.id, call.name, call.arguments, content, True)

    async def _classify_phase(self, live: list[_Conversation]) -> None:
        if not live or self.classifier is None:
            return
        started = time.perf_counter()
        try:
            labels = await self.classifier.aclassify([c.job.scenario for c in live], [c.chat()[:-1] for c in live],
                                                     [c.messages[-1].content for c in live])
        except Exception as err:  # noqa: BLE001 - a failed judge call ends these conversations, not the run
            for conversation in live:
                conversation.end(EndReason.ERROR, f"reply classifier: {_describe(err)}")
            return
        seconds = (time.perf_counter() - started) / len(live)
        for conversation, label in zip(live, labels):
            conversation.messages[-1].classification = label
            conversation.seconds["classify"] += seconds

    async def _scoring_phase(self, live: list[_Conversation]) -> None:
        if self.score is None:
            return
        attempts = [c for c in live if c.end_reason is None and c.job.scenario.kind not in ("open", "tool")
                    and c.messages[-1].classification == "answer_attempt"]
        results = await asyncio.gather(*(self._score(c) for c in attempts), return_exceptions=True)
        for conversation, result in zip(attempts, results):
            if isinstance(result, Exception):
                conversation.end(EndReason.ERROR, f"scoring: {_describe(result)}")
                continue
            score, seconds = result
            conversation.seconds["scoring"] += seconds
            if score is None:
                continue
            conversation.messages[-1].score = score
            if score.passed:
                conversation.solved = True
                conversation.end(EndReason.SOLVED)

    async def _score(self, conversation: _Conversation):
        started = time.perf_counter()
        score = await asyncio.to_thread(self.score, conversation.job.scenario, conversation.messages[-1].content)
        return score, time.perf_counter() - started

    # ------------------------------------------------------------------ records
    def _record(self, conversation: _Conversation) -> SimulatedConversation:
        scenario = conversation.job.scenario
        solved, final_hash, task_score = conversation.solved if scenario.kind != "open" else None, None, None
        if conversation.domain is not None:
            final_hash = state_hash(conversation.state)
            task_score = answer_check.score_tool_task(
                scenario, conversation.state, [m.content for m in conversation.messages if m.role == "assistant"])
            solved = task_score.passed
        return SimulatedConversation(
            conversation.messages, scenario_id=scenario.id, sample=conversation.job.sample, kind=scenario.kind,
            intent=scenario.intent, setting="multi_turn" if self.user is not None else "single_turn",
            end_reason=conversation.end_reason, error=conversation.error, end_events=conversation.end_events,
            solved=solved, max_user_turns=conversation.cap,
            seed=conversation.seed,
            timings={"wall_s": round(time.perf_counter() - conversation.started, 4),
                     **{f"{phase}_s": round(s, 4) for phase, s in conversation.seconds.items()}},
            tokens=conversation.tokens, user_model=_user_name(self.user),
            model=self.assistant.name, final_state_hash=final_hash, task_score=task_score)


def _user_name(user: UserSimulator | ScenarioUser | None) -> str | None:
    """The name a record gives the user side: the user model's, a scenario user's own, None without a user."""
    if user is None:
        return None
    return user.model.name if isinstance(user, UserSimulator) else user.name


def _end_at_cap(live: list[_Conversation]) -> None:
    for conversation in live:
        if conversation.end_reason is None and conversation.user_turns >= conversation.cap:
            conversation.end(EndReason.MAX_TURNS)


def _failed(call: ToolCall, problem: str) -> ToolCallRecord:
    """The record of a call answered with ``error: PROBLEM`` instead of running."""
    return ToolCallRecord(call.id, call.name, call.arguments, f"error: {problem}", False, call.raw)


def _arguments_text(call: ToolCall) -> str:
    return call.raw if call.raw is not None else json.dumps(call.arguments, ensure_ascii=False)


def _model_failure(role: str, error: BaseException) -> tuple[EndReason, str]:
    """The end reason and message of a conversation whose ``role`` call failed with ``error``."""
    reason = EndReason.CONTEXT if isinstance(error, ContextLengthError) else EndReason.ERROR
    return reason, f"{role}: {_describe(error)}"


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def pending_jobs(scenarios: Sequence[Scenario], n: int, done: set[tuple[str, int]]) -> list[Job]:
    """Every (scenario, sample) pair of ``n`` samples per scenario not in ``done``, scenario-major."""
    return [Job(scenario, sample) for scenario in scenarios for sample in range(n) if (scenario.id, sample) not in done]
