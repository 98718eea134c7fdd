"""One simulated conversation: a persona-driven user and the scripted assistant, turn by turn.

The user opens a task (all at once, or shard 1 first), answers clarification questions, reveals the
remaining shards, complains when an answer is wrong or misses a preference (and the complaint is
worth it to them), thanks and moves on or leaves when satisfied, and gives up when out of patience.
Every user turn gets labels and every assistant turn its recorded choices; see ``docs/testbed.md``.

Label vocabularies (the RLHI issue's two axes plus the testbed's own turn types):

* ``type``: new_request | continuation | clarification_answer | feedback | positive_ack
* ``relation`` (to the previous exchange): new_request | re_attempt | new_variation | extend |
  answer_to_question | none; null on the first turn
* ``feedback_type``: repeat_rephrase | make_aware_with_correction | make_aware_without_correction |
  ask_for_clarification | positive | none
* ``end_reason``: satisfied | tolerated | gave_up | turn_limit
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from userloop.testbed import assistant, phrasing
from userloop.testbed.assistant import Reply, Style
from userloop.testbed.families import Shard, Task, family_modules, pick
from userloop.testbed.persona import Persona, pick_weighted
from userloop.testbed.persona_match import fits_from_features, technicality, text_features

MAX_USER_TURNS = 10
MAX_TASKS = 3
# What a satisfied user does next (relative weights; "thanks" grows with politeness).
AFTER_SATISFIED = {"leave": 0.45, "thanks": 0.10, "extend": 0.12, "variation": 0.08, "new_request": 0.10}
THANKS_PER_POLITENESS = 0.25
# Chance that a user who sees a wrong answer can say what the right one is.
CORRECTS_BY_EXPERTISE = {"novice": 0.25, "intermediate": 0.5, "expert": 0.8}
FIT_THRESHOLD = 0.5   # a persona-match fit below this on an axis is a violation the user notices
VIOLATION_BY_AXIS = {  # axis -> (name when the answer overshoots, name when it undershoots), by preference
    "detail": {"brief": "too_long", "detailed": "too_short"},
    "structure": {"structured": "wants_structure", "prose": "wants_prose"},
    "tone": {"formal": "too_casual", "casual": "too_formal"},
}


@dataclass(slots=True)
class DialogueTurn:
    role: str
    text: str
    label: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Dialogue:
    turns: list[DialogueTurn]
    tasks: list[Task]
    end_reason: str
    solved: bool | None     # did the last answer attempt on a checkable task pass its check

    @property
    def intent(self) -> str:
        """The user's high-level intent: each task's purpose, without its specifics (the UserLM paper's intents)."""
        return _intent([t.purpose for t in self.tasks])

    @property
    def detailed_intent(self) -> str:
        """The intent with each task's specifics (its full request), as sharded evaluations give a simulated user
        the whole task (Lost in Conversation; the UserLM paper's sharded math)."""
        return _intent([f"{t.purpose}: {t.full_request}" for t in self.tasks])


def _intent(parts: list[str]) -> str:
    rest = "".join(f", and then to {p}" for p in parts[1:])
    end = "" if parts[-1][-1] in ".?!" else "."
    return f"You are a user chatting with an assistant language model to {parts[0]}{rest}{end}"


def violations(persona: Persona, text: str) -> tuple[list[str], dict[str, float]]:
    """Which preferences a reply misses (persona-match fit below :data:`FIT_THRESHOLD`), worst first."""
    features = text_features(text)
    fits = fits_from_features(persona, features)
    found = []
    for axis, fit in sorted(fits.items(), key=lambda kv: kv[1]):
        if fit >= FIT_THRESHOLD:
            continue
        if axis == "expertise":
            too_plain = persona.expertise == "expert" or (
                persona.expertise == "intermediate" and technicality(features["long_word_share"]) < 0.5)
            found.append("too_simple" if too_plain else "too_technical")
        else:
            found.append(VIOLATION_BY_AXIS[axis][getattr(persona, axis)])
    return found, fits


@dataclass(slots=True)
class Move:
    """What the user did after an assistant reply: ``kind`` of the turn written (clarification_answer, rephrase,
    continuation, correction, style_feedback, thanks, extend, new_task), or ``end`` with its ``end_reason``;
    ``reason`` the feedback reason of a complaint."""

    kind: str
    end_reason: str | None = None
    reason: str | None = None


class UserPolicy:
    """The persona's side of a conversation: its state (tasks, shards revealed, patience used) and what it does
    after each reply. The log generator (:func:`converse`) and the interactive testbed users
    (``userloop.simulate.testbed_users``) both act through :meth:`react`, so the logged and the interactive users
    share one policy. ``new_task(family, domain)`` draws a further task (None: the user's choice);
    ``on_stated(axis, value)``, when given, is told of a preference the user states up front (the scripted
    assistant's chance to honour it, drawn from the same stream in the log generator)."""

    def __init__(self, rng: random.Random, persona: Persona, new_task: Callable[[str | None, str | None], Task],
                 on_stated: Callable[[tuple[str, str]], None] | None = None):
        self.rng, self.persona, self.new_task, self.on_stated = rng, persona, new_task, on_stated
        self.turns: list[DialogueTurn] = []
        self.tasks: list[Task] = []
        self.unsatisfying = 0
        self.revealed = 0
        self.thanked = False

    def user(self, segments: list[phrasing.Segment], **label: Any) -> None:
        text, noised = phrasing.join(self.rng, self.persona, segments)
        feedback = [s.text for s in noised if s.kind in ("feedback", "acknowledgement")]
        label.setdefault("relation", None)
        label.setdefault("feedback_type", "none")
        label.setdefault("reason", None)
        label.setdefault("shards", [])
        label["feedback_text"] = " ".join(feedback) if feedback else None
        label["task"] = len(self.tasks) - 1
        self.turns.append(DialogueTurn("user", text, label))

    def open_task(self, task: Task, prefix: str = "", thanks: bool = False, relation: str | None = None) -> None:
        self.tasks.append(task)
        all_at_once = self.persona.disclosure == "all_at_once" or len(task.shards) == 1
        self.revealed = len(task.shards) if all_at_once else 1
        segments = phrasing.request(self.rng, self.persona, self.persona.register, task, all_at_once)
        stated = phrasing.stated_preference(segments)
        if stated and self.on_stated is not None:
            self.on_stated(stated)
        if prefix:
            segments[0] = phrasing.Segment(segments[0].kind, prefix + segments[0].text)
        feedback_type = "none"
        if thanks:
            segments.insert(0, phrasing.thanks(self.rng, self.persona.register))
            feedback_type = "positive"
        self.user(segments, type="new_request", relation=relation, feedback_type=feedback_type,
                  shards=list(range(1, self.revealed + 1)))

    def react(self, act: str, found: list[str], correction: str | None) -> Move:
        """The user's turn after a reply of kind ``act`` (answer, clarification, discussion, refusal,
        acknowledgement) with the problems ``found`` in it (worst first: refused / off_topic / wrong_answer,
        then style violations) and, for a wrong answer, the ``correction`` a user who knows better gives."""
        rng, persona, task = self.rng, self.persona, self.tasks[-1]
        if self.thanked or act == "acknowledgement":
            return Move("end", "satisfied")
        if act == "clarification":
            shard = task.shards[self.revealed] if self.revealed < len(task.shards) else Shard(task.full_request)
            revealed = [self.revealed + 1] if self.revealed < len(task.shards) else []
            self.revealed = min(self.revealed + 1, len(task.shards))
            self.user(phrasing.clarification_answer(rng, persona.register, shard),
                      type="clarification_answer", relation="answer_to_question", shards=revealed)
            return Move("clarification_answer")
        if found and found[0] in ("refused", "off_topic"):
            if not self.tolerate_one_more():
                return Move("end", "gave_up")
            self.user(phrasing.rephrase(rng, persona.register, task), type="feedback", relation="re_attempt",
                      feedback_type="repeat_rephrase", reason=found[0])
            return Move("rephrase", reason=found[0])
        if self.revealed < len(task.shards):
            shard = self.revealed
            self.revealed += 1
            self.user(phrasing.continuation(rng, persona.register, task.shards[shard]),
                      type="continuation", relation="re_attempt", shards=[shard + 1])
            return Move("continuation")
        if found and found[0] == "wrong_answer":
            if not self.tolerate_one_more():
                return Move("end", "gave_up")
            knows = rng.random() < CORRECTS_BY_EXPERTISE[persona.expertise]
            segments, feedback_type = phrasing.wrong_answer_feedback(rng, persona.register,
                                                                     correction if knows else None)
            self.user(segments, type="feedback", relation="re_attempt", feedback_type=feedback_type,
                      reason="wrong_answer")
            return Move("correction", reason="wrong_answer")
        if found:
            if rng.random() >= persona.feedback_rate:
                return Move("end", "tolerated")
            if not self.tolerate_one_more():
                return Move("end", "gave_up")
            reason = found[0]
            segments, feedback_type = phrasing.style_feedback(rng, persona.register, reason)
            self.user(segments, type="feedback", relation="re_attempt", feedback_type=feedback_type, reason=reason)
            return Move("style_feedback", reason=reason)
        step = self.after_satisfied()
        if step is None:
            return Move("end", "satisfied")
        if step == "thanks":
            self.user([phrasing.thanks(rng, persona.register)], type="positive_ack", relation="none",
                      feedback_type="positive")
            self.thanked = True
            return Move("thanks")
        if step == "extend":
            self.user(phrasing.extend(rng, persona.register, task.topic), type="continuation", relation="extend")
            return Move("extend")
        variation = step == "variation"
        new = self.new_task(task.family if variation else None, task.domain if variation else None)
        self.open_task(new, prefix=phrasing.prefix(rng, persona.register, variation),
                       thanks=not variation and rng.random() < persona.politeness,
                       relation="new_variation" if variation else "new_request")
        return Move("new_task")

    def tolerate_one_more(self) -> bool:
        """Count an unsatisfying answer; False once it exceeds the user's patience."""
        self.unsatisfying += 1
        return self.unsatisfying <= self.persona.patience

    def after_satisfied(self) -> str | None:
        weights = dict(AFTER_SATISFIED)
        weights["thanks"] += THANKS_PER_POLITENESS * self.persona.politeness
        if len(self.tasks) >= MAX_TASKS:
            weights["variation"] = weights["new_request"] = 0.0
        if any(t.label.get("relation") == "extend" for t in self.turns if t.role == "user"):
            weights["extend"] = 0.0
        step = pick_weighted(self.rng, weights)
        return None if step == "leave" else step


def found_problems(persona: Persona, act: str, text: str, wrong: bool) -> tuple[list[str], dict[str, float] | None]:
    """What a user notices in a reply of kind ``act``: refused / off_topic / wrong_answer (``wrong``: an answer
    that failed the task's check with every shard known) first, then the style violations of an answer or a
    discussion (:func:`violations`), with the persona-match fits (None for other acts)."""
    found: list[str] = []
    fits = None
    if act in ("answer", "discussion"):
        found, fits = violations(persona, text)
    if act == "discussion":
        found.insert(0, "off_topic")
    elif act == "refusal":
        found.insert(0, "refused")
    elif wrong:
        found.insert(0, "wrong_answer")
    return found, fits


class _Conversation:
    """One logged conversation: a :class:`UserPolicy` and the scripted assistant on one random stream."""

    def __init__(self, rng: random.Random, persona: Persona, new_task: Callable[[str | None, str | None], Task]):
        self.rng, self.persona = rng, persona
        self.style: Style = assistant.initial_style(rng, persona)
        self.policy = UserPolicy(rng, persona, new_task, self.honour_stated)
        self.turns = self.policy.turns
        self.solved: bool | None = None

    def honour_stated(self, stated: tuple[str, str]) -> None:
        if self.rng.random() < assistant.FIX_CHANCE:
            self.style = assistant.adjust(self.style, VIOLATION_BY_AXIS[stated[0]][stated[1]])

    # ------------------------------------------------------------------ assistant side
    def assistant_turn(self, reply: Reply) -> list[str]:
        label: dict[str, Any] = {"act": reply.act, "style": asdict(reply.style), "correct": reply.correct,
                                 "words": len(reply.text.split())}
        wrong = reply.correct is False and self.policy.revealed >= len(self.policy.tasks[-1].shards)
        found, fits = found_problems(self.persona, reply.act, reply.text, wrong)
        if fits is not None:
            label["fits"] = {k: round(v, 3) for k, v in fits.items()}
        label["violations"] = found
        self.turns.append(DialogueTurn("assistant", reply.text, label))
        return found

    def reply(self, fix: str | None) -> Reply:
        task, revealed = self.policy.tasks[-1], self.policy.revealed
        reply = scripted_reply(self.rng, self.style, task, revealed, fix)
        if reply.act == "answer" and revealed >= len(task.shards):
            self.solved = reply.correct
        return reply

    # ------------------------------------------------------------------ the loop
    def run(self) -> Dialogue:
        rng = self.rng
        self.policy.open_task(self.policy.new_task(None, None))
        reply = self.reply(None)
        while True:
            found = self.assistant_turn(reply)
            if sum(t.role == "user" for t in self.turns) >= MAX_USER_TURNS:
                return self.finish("turn_limit")
            move = self.policy.react(reply.act, found, reply.correction)
            if move.kind == "end":
                return self.finish(move.end_reason)
            if move.kind == "style_feedback" and rng.random() < assistant.FIX_CHANCE:
                self.style = assistant.adjust(self.style, move.reason)
            if move.kind == "thanks":
                reply = assistant.acknowledgement_reply(rng, self.style)
            elif move.kind == "extend":
                reply = extend_reply(rng, self.style, self.policy.tasks[-1])
            else:
                reply = self.reply("wrong_answer" if move.kind == "correction" else None)

    def finish(self, end_reason: str) -> Dialogue:
        return Dialogue(self.turns, self.policy.tasks, end_reason, self.solved)


def scripted_reply(rng: random.Random, style: Style, task: Task, revealed: int, fix: str | None) -> Reply:
    """The scripted assistant's reply to a request for ``task`` with ``revealed`` shards known: a refusal or a
    discussion now and then, a question for the next shard, or an answer attempt (wrong at the error rate, at
    1 - FIX_CHANCE right after a complaint about a wrong answer: ``fix == "wrong_answer"``)."""
    roll = rng.random()
    if roll < assistant.REFUSAL_RATE:
        return assistant.refusal_reply(rng, style)
    if roll < assistant.REFUSAL_RATE + assistant.DISCUSSION_RATE:
        return assistant.discussion_reply(rng, style, task)
    if revealed < len(task.shards) and rng.random() < assistant.CLARIFY_CHANCE:
        return assistant.clarification_reply(rng, style, task.shards[revealed].question)
    error_rate = 1 - assistant.FIX_CHANCE if fix == "wrong_answer" else assistant.ERROR_RATE
    module = family_modules()[task.family]
    answer = module.answer(rng, task, revealed, rng.random() >= error_rate, style.vocabulary == "technical")
    return assistant.answer_reply(rng, style, answer)


def extend_reply(rng: random.Random, style: Style, task: Task) -> Reply:
    """The scripted assistant's answer to "tell me more about ...": more on the task's topic, nothing to check."""
    return Reply(assistant.render(rng, style, f"Here is more about {task.topic}.", []), "answer", style, None)


def converse(rng: random.Random, persona: Persona, new_task: Callable[[str | None, str | None], Task]) -> Dialogue:
    """Generate one conversation. ``new_task(family, domain)`` draws a task (None: the user's choice)."""
    return _Conversation(rng, persona, new_task).run()


def choose_task(rng: random.Random, persona: Persona, family: str | None = None, domain: str | None = None) -> Task:
    """A task the persona would ask for: a family by the user's interests, themed on one of their domains."""
    modules = family_modules()
    if family is None:
        weights = {"math": 1.0, "code": 0.4, "fact": 1.0, "writing": 1.2, "recommendation": 1.0}
        if "programming" in persona.domains:
            weights["code"] = 3.0
        if persona.expertise == "expert":
            weights["code"] *= 1.5
        family = pick_weighted(rng, weights)
    module = modules[family]
    if domain is None or domain not in module.DOMAINS:
        liked = [d for d in persona.domains if d in module.DOMAINS]
        domain = pick(rng, liked) if liked and rng.random() < 0.85 else pick(rng, module.DOMAINS)
    return module.make_task(rng, domain, persona.expertise == "expert")

