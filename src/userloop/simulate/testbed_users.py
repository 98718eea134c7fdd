"""Interactive testbed users (``testbed:users``): the testbed's persona-driven users talking to any assistant.

A testbed user is a logged user of the testbed (docs/testbed.md) brought back to life: each scenario of
:func:`testbed_scenarios` names a conversation of the testbed, and its user is regenerated with the persona
and the first task of that conversation (``testbed.population.user_dialogue``). From then on the user reads
only the assistant's text:

* **act**: a refusal (the reply classifier's refusal rule), an answer attempt (math: a final number; code: a
  code block or ``def``; facts: one of the relation's answers; writing: the piece's kind named; recommendations:
  an item of the catalogue named), a clarification question (no attempt, and a question or "I need to know"),
  or talk around the request (a discussion: off topic);
* **correctness**, with every shard known: the task's own check (math: the final number against the computed
  answer, :func:`~userloop.simulate.answer_check.score_math`; code: the task's unit tests in the sandbox,
  :func:`~userloop.simulate.answer_check.score_code`; facts: the first of the relation's answers the reply names;
  writing: the required word and the word limit, counted on the paragraph that holds the word; recommendations:
  every catalogue item named carries the requested tag), and the correction a user who knows better gives;
* **style**: the persona-match scorer on the reply's text (``testbed.dialogue.found_problems``).

Then it acts by :class:`~userloop.testbed.dialogue.UserPolicy`, the policy that wrote the logs: clarification
answers, shard reveals, rephrasing, corrections, style feedback, thanks, "tell me more", further tasks, and
leaving (satisfied, tolerated) or giving up when out of patience. An ending is a :class:`UserTurn` with
``ended`` and no text; every turn carries one event, ``{"guardrail": "testbed_policy", "action": MOVE,
"detail": END_REASON_OR_FEEDBACK}``, so run records keep the ground truth's labels.

The user holds no state between calls: each turn replays the conversation so far from the conversation's seed
(every draw from one ``random.Random`` stream), so the same seed and the same assistant replies give the same
user turns. Each user turn is also published in this process (:func:`spoken`), for ``testbed:assistant``
(:class:`TestbedAssistant`): the scripted assistant as a chat model, which cannot read free text and instead
reads what the testbed user it talks to meant (task, shards revealed, complaint), as the log generator's
assistant shares the conversation's state. It answers testbed users only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from userloop.errors import UserError
from userloop.files import open_user_file, read_user_json
from userloop.models.base import ChatMessages, ChatModel, Completion, GenerationParams
from userloop.models.mock import count_words, word_choice
from userloop.simulate.answer_check import extract_final_number, score_code, score_math
from userloop.simulate.reply_kinds import classify_reply
from userloop.simulate.scenarios import BuildResult, Scenario, split_ids
from userloop.testbed import assistant
from userloop.testbed.dialogue import (
    VIOLATION_BY_AXIS,
    Move,
    UserPolicy,
    choose_task,
    extend_reply,
    found_problems,
    scripted_reply,
)
from userloop.testbed.families import Task, facts, recommend
from userloop.testbed.persona import Persona
from userloop.testbed.population import truth_folder, user_dialogue
from userloop.userlm.intents import INTENT_PREFIX
from userloop.userlm.simulator import UserTurn

SOURCE = "testbed_users"
POLICY_EVENT = "testbed_policy"
_ASKS = re.compile(r"\?|\b(?:need|want|have) to know\b|\bcould you (?:please )?(?:clarify|tell|specify|share)\b",
                   re.IGNORECASE)
_SPOKEN_LIMIT = 200_000   # user turns kept for testbed:assistant (the oldest are forgotten first)


# ---------------------------------------------------------------------- scenarios
def testbed_scenarios(data: str | Path, split: str | None = None, limit: int | None = None,
                      seed: int = 0) -> BuildResult:
    """One scenario per testbed conversation of ``split`` (a prepared folder: default ``test``, the held-out
    users; a raw ``userloop testbed generate`` folder: all): the conversation's first task (kind ``math``,
    ``code`` or ``open`` by family, with its answer or tests), its intent, shards and full request, and in
    ``metadata`` what the testbed user needs (``testbed_seed``, ``user_index``, ``conversation``) and what other
    simulators may use (``persona``: the persona's description; ``task``: the task's truth). ``limit`` keeps
    that many, drawn with ``seed`` (file order kept). ``userloop scenarios build --source DATA --testbed-users``
    writes them to a scenario file."""
    folder = Path(data)
    truth = truth_folder(folder)
    if truth is None:
        raise UserError(f"{folder}: testbed users need a testbed folder (its truth.jsonl), or a folder prepared "
                        "from one")
    summary = truth / "summary.json"
    if not summary.is_file():
        raise UserError(f"{truth}: no summary.json, so the testbed's seed is unknown; generate it again with "
                        "'userloop testbed generate'")
    testbed_seed = read_user_json(summary, "testbed summary")["seed"]
    keep = split_ids(folder, split)
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    users: dict[str, tuple[int, dict]] = {}
    conversations_seen: dict[str, int] = {}
    scenarios, skipped, read = [], {}, 0
    outside = f"not in the {split or 'test'} split"
    with open_user_file(truth / "truth.jsonl", "testbed truth file") as lines:
        for line in lines:
            row = json.loads(line)
            if row["type"] == "user":
                users[row["user_id"]] = (len(users), row)
                continue
            read += 1
            number = conversations_seen.get(row["user_id"], 0)
            conversations_seen[row["user_id"]] = number + 1
            if keep is not None and row["id"] not in keep:
                skipped[outside] = skipped.get(outside, 0) + 1
                continue
            index, user = users[row["user_id"]]
            scenarios.append(_scenario(row, user, testbed_seed, index, number))
    if not scenarios:
        raise UserError(f"{folder}: no testbed conversations in the {split or 'test'} split")
    result = BuildResult(scenarios, str(truth / "truth.jsonl"), read, skipped)
    if limit is not None and limit < len(scenarios):
        chosen = sorted(random.Random(seed).sample(range(len(scenarios)), limit))
        result.scenarios, result.not_drawn = [scenarios[i] for i in chosen], len(scenarios) - limit
    return result


def _scenario(row: dict, user: dict, testbed_seed: int, index: int, number: int) -> Scenario:
    task = row["tasks"][0]
    check = task["check"]
    kind = _kind(task["family"])
    code = kind == "code"
    return Scenario(
        id=row["id"], kind=kind, intent=f"{INTENT_PREFIX} {task['purpose']}.",
        shards=list(task["shards"]), full_prompt=task["full_request"],
        answer=str(check["answer"]) if kind == "math" else None,
        tests=_check_function(check["tests"]) if code else None, entry_point=check["entry_point"] if code else None,
        metadata={"source": SOURCE, "testbed_seed": testbed_seed, "user_index": index, "conversation": number,
                  "conversation_id": row["id"], "user_id": row["user_id"], "family": task["family"],
                  "persona": user["description"], "testbed_persona": user["persona"], "task": task})


def _kind(family: str) -> str:
    """The scenario kind of a testbed task family: its checker's (math, code), else open."""
    return family if family in ("math", "code") else "open"


def _check_function(asserts: str) -> str:
    """The testbed's assert lines as the sandbox's ``check(candidate)`` (they call the function by name)."""
    return "def check(candidate):\n" + "".join(f"    {line}\n" for line in asserts.splitlines())


# ---------------------------------------------------------------------- reading a reply
@dataclass(frozen=True, slots=True)
class Reading:
    """What a testbed user reads in a reply: its act, whether it fails the task's check, the correction."""

    act: str                   # answer | clarification | discussion | refusal | acknowledgement
    wrong: bool = False
    correction: str | None = None


def read_reply(task: Task, revealed: int, text: str, check: bool = True) -> Reading:
    """The act of ``text`` as a reply to ``task`` with ``revealed`` shards known and, with ``check`` and every
    shard known, whether it fails the task's check (module docstring). ``check`` is off for the reply to
    "tell me more", which has nothing to check."""
    if classify_reply(_probe(task), text) == "refusal":
        return Reading("refusal")
    if not _attempts(task, text):
        if not check:
            return Reading("answer")
        return Reading("clarification" if _ASKS.search(text) else "discussion")
    if not check or revealed < len(task.shards):
        return Reading("answer")
    correction = _failure(task, text)
    return Reading("answer", correction is not None, correction or None)


def _probe(task: Task) -> Scenario:
    """The task as a scenario for the reply classifier."""
    kind = _kind(task.family)
    return Scenario(id="probe", kind=kind, intent=task.full_request, shards=[], full_prompt=task.full_request,
                    answer=str(task.check["answer"]) if kind == "math" else None,
                    tests=_check_function(task.check["tests"]) if kind == "code" else None,
                    entry_point=task.check["entry_point"] if kind == "code" else None)


def _attempts(task: Task, text: str) -> bool:
    lower = text.lower()
    if task.family in ("math", "code"):
        attempt = classify_reply(_probe(task), text) == "answer_attempt"
        return attempt or (task.family == "math" and not _ASKS.search(text) and extract_final_number(text) is not None)
    if task.family == "fact":
        return _first_answer(task, lower) is not None
    if task.family == "writing":
        return task.check["kind"] in lower
    return bool(_items_named(task, lower))


def _failure(task: Task, text: str) -> str | None:
    """None when ``text`` passes the task's check, else the correction a user who knows the truth gives
    ("" when they cannot say what is wrong)."""
    if task.family == "math":
        if score_math(text, str(task.check["answer"])).passed:
            return None
        return f"the answer should be {task.check['answer']}, not {extract_final_number(text)}"
    if task.family == "code":
        return None if _code_passes(task, text) else task.data["function"].bug_note
    lower = text.lower()
    if task.family == "fact":
        given, true = _first_answer(task, lower.replace(task.check["subject"].lower(), " ", 1)), task.check["answer"]
        return None if given == true else f"it's {true}, not {given}"
    if task.family == "writing":
        keyword, limit = task.check["must_include"][0], task.check["max_words"]
        paragraph = next((p for p in text.split("\n\n") if keyword.lower() in p.lower()), None)
        if paragraph is None:
            return f"you didn't mention the {keyword}"
        return f"it's supposed to be under {limit} words" if len(paragraph.split()) >= limit else None
    _, tags, items = recommend.CATALOGUES[task.domain]
    tag = task.check["tag"]
    tagged = {name: item_tags for name, _, item_tags in items}
    misfit = next((name for name in _items_named(task, lower) if tag not in tagged[name]), None)
    return None if misfit is None else f"{misfit} isn't what I asked for, I said {tags[tag]}"


@functools.lru_cache(maxsize=8192)
def _code_passes_cached(tests: str, entry_point: str, text: str) -> bool:
    probe = Scenario(id="probe", kind="code", intent="code", shards=[], full_prompt="code", tests=tests,
                     entry_point=entry_point)
    return score_code(text, probe).passed


def _code_passes(task: Task, text: str) -> bool:
    """The task's unit tests in the sandbox (cached: a conversation is replayed every turn)."""
    return _code_passes_cached(_check_function(task.check["tests"]), task.check["entry_point"], text)


def _first_answer(task: Task, lower: str) -> str | None:
    """The first of the fact relation's answers that ``lower`` names (None: none)."""
    _, _, _, rows = facts.RELATIONS[task.check["relation"]]
    named = [(found.start(), -len(answer), answer) for answer in {a for _, a in rows}
             if (found := re.search(rf"\b{re.escape(answer.lower())}\b", lower))]
    return min(named)[2] if named else None


def _items_named(task: Task, lower: str) -> list[str]:
    _, _, items = recommend.CATALOGUES[task.domain]
    return [name for name, _, _ in items if name.lower() in lower]


# ---------------------------------------------------------------------- the user
@dataclass(frozen=True, slots=True)
class Spoken:
    """What a testbed user meant by one turn: the conversation's key, the persona, the current task, the shards
    of it known, the move (``testbed.dialogue.Move``) and a preference stated up front (new tasks)."""

    key: str
    persona: Persona
    task: Task
    revealed: int
    move: Move
    stated: tuple[str, str] | None


_SPOKEN: OrderedDict[str, Spoken] = OrderedDict()


def _history_key(messages: Sequence[Mapping[str, str]]) -> str:
    chat = [[m["role"], m["content"]] for m in messages if m["role"] in ("user", "assistant")]
    return hashlib.blake2b(json.dumps(chat).encode(), digest_size=16).hexdigest()


def spoken(messages: Sequence[Mapping[str, str]]) -> Spoken | None:
    """What the testbed user who wrote the last user turn of ``messages`` meant by it (None: not one)."""
    return _SPOKEN.get(_history_key(messages))


@functools.lru_cache(maxsize=4096)
def _logged(testbed_seed: int, index: int, conversation: int):
    """The logged user and dialogue a scenario names (regenerated once; its tasks are only read)."""
    return user_dialogue(testbed_seed, index, conversation)


class _Player:
    """One testbed user in one conversation, replayed from the conversation's seed."""

    def __init__(self, scenario: Scenario, seed: int):
        meta = scenario.metadata
        if meta.get("source") != SOURCE:
            raise UserError(f"scenario {scenario.id!r} is not a testbed-user scenario: testbed:users plays the "
                            "scenarios of testbed_scenarios (docs/testbed.md, 'Interactive testbed users')")
        user, dialogue = _logged(meta["testbed_seed"], meta["user_index"], meta["conversation"])
        self.key = f"{scenario.id}#{seed}"
        self.rng = random.Random(f"testbed-users-{self.key}")
        self.persona = user.persona
        self.stated: tuple[str, str] | None = None
        self.policy = UserPolicy(self.rng, self.persona,
                                 lambda family, domain: choose_task(self.rng, self.persona, family, domain),
                                 self._note_stated)
        self.first_task = dialogue.tasks[0]
        if [shard.text for shard in self.first_task.shards] != scenario.shards:
            raise UserError(f"scenario {scenario.id!r} was built from a testbed this version does not generate: "
                            "build the scenarios again from a testbed folder of this version")
        self.last: Move | None = None

    def _note_stated(self, stated: tuple[str, str]) -> None:
        self.stated = stated

    def open(self) -> str:
        self.policy.open_task(self.first_task)
        self.last = Move("new_task")
        return self.policy.turns[-1].text

    def react(self, reply: str) -> Move:
        self.stated = None
        policy = self.policy
        task = policy.tasks[-1]
        reading = Reading("acknowledgement") if policy.thanked else read_reply(
            task, policy.revealed, reply, check=self.last.kind != "extend")
        found, _ = found_problems(self.persona, reading.act, reply, reading.wrong)
        self.last = policy.react(reading.act, found, reading.correction)
        return self.last

    def spoken(self) -> Spoken:
        return Spoken(self.key, self.persona, self.policy.tasks[-1], self.policy.revealed, self.last, self.stated)


class TestbedUsers:
    """``testbed:users``: the user side of the engine for testbed-user scenarios (module docstring). The engine
    asks :meth:`anext_turn` for each turn with the conversation's scenario, history and seed."""

    name = "testbed:users"

    async def anext_turn(self, scenario: Scenario, history: Sequence[Mapping[str, str]], seed: int) -> UserTurn:
        return self.next_turn(scenario, history, seed)

    def next_turn(self, scenario: Scenario, history: Sequence[Mapping[str, str]], seed: int) -> UserTurn:
        """The user's turn after ``history`` (user and assistant messages, the assistant's last; empty for the
        opening turn) in conversation ``seed`` of ``scenario``."""
        chat = [{"role": m["role"], "content": m["content"]} for m in history if m["role"] in ("user", "assistant")]
        player = _Player(scenario, seed)
        text = player.open()
        for number in range(1, len(chat), 2):
            if chat[number - 1]["content"] != text:
                raise UserError(f"scenario {scenario.id!r}: the history's user turn {number // 2 + 1} is not the one "
                                "this testbed user wrote (a history from another user or seed)")
            move = player.react(chat[number]["content"])
            if move.kind == "end":
                if number + 1 < len(chat):
                    raise UserError(f"scenario {scenario.id!r}: the testbed user had ended this conversation")
                return UserTurn("", True, [_event(move)])
            text = player.policy.turns[-1].text
        _remember(chat + [{"role": "user", "content": text}], player.spoken())
        return UserTurn(text, False, [_event(player.last, player.policy.turns[-1].label)])


def _event(move: Move, label: Mapping | None = None) -> dict[str, str]:
    """The turn's policy event: the move, the end reason (``detail``) and the labels of the turn written."""
    label = label or {}
    return {"guardrail": POLICY_EVENT, "action": move.kind, "detail": move.end_reason or "",
            "type": label.get("type") or "", "feedback_type": label.get("feedback_type") or "",
            "reason": label.get("reason") or ""}


def _remember(messages: list[dict[str, str]], said: Spoken) -> None:
    key = _history_key(messages)
    _SPOKEN[key] = said
    _SPOKEN.move_to_end(key)
    while len(_SPOKEN) > _SPOKEN_LIMIT:
        _SPOKEN.popitem(last=False)


# ---------------------------------------------------------------------- the scripted assistant as a chat model
class TestbedAssistant(ChatModel):
    """``testbed:assistant``: the testbed's scripted assistant (``testbed.assistant``) as a chat model, for
    conversations with ``testbed:users``. Its style is drawn from the user's persona and fixed on complaints
    as in the log generator; every draw comes from the conversation's key and turn number, so a reply depends
    on the conversation alone (not on the engine's sampling seed)."""

    def __init__(self, name: str = "assistant") -> None:
        self.name = f"testbed:{name}"

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams) -> list[Completion]:
        completions = []
        for messages in conversations:
            started = time.perf_counter()
            choices = [word_choice(self.reply(messages), params) for _ in range(params.n)]
            completions.append(Completion(
                choices=choices, prompt_tokens=sum(count_words(m["content"]) for m in messages),
                completion_tokens=sum(c.completion_tokens for c in choices),
                seconds=time.perf_counter() - started, model=self.name))
        return completions

    def reply(self, messages: Sequence[Mapping[str, str]]) -> str:
        chat = [m for m in messages if m["role"] in ("user", "assistant")]
        said = []
        for end in range(1, len(chat) + 1, 2):
            turn = spoken(chat[:end])
            if turn is None:
                raise UserError(f"{self.name} converses with testbed:users only: user turn {end // 2 + 1} was not "
                                "written by a testbed user in this process")
            said.append(turn)
        last = said[-1]
        style = assistant.initial_style(random.Random(f"{last.key}-style"), last.persona)
        for number, turn in enumerate(said):
            if turn.stated and random.Random(f"{last.key}-{number}-stated").random() < assistant.FIX_CHANCE:
                style = assistant.adjust(style, VIOLATION_BY_AXIS[turn.stated[0]][turn.stated[1]])
            fixed = random.Random(f"{last.key}-{number}-fix").random() < assistant.FIX_CHANCE
            if turn.move.kind == "style_feedback" and fixed:
                style = assistant.adjust(style, turn.move.reason)
        rng = random.Random(f"{last.key}-{len(said)}-reply")
        if last.move.kind == "thanks":
            return assistant.acknowledgement_reply(rng, style).text
        if last.move.kind == "extend":
            return extend_reply(rng, style, last.task).text
        fix = "wrong_answer" if last.move.kind == "correction" else None
        return scripted_reply(rng, style, last.task, last.revealed, fix).text
