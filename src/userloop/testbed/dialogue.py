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
from userloop.testbed.families import Task, family_modules, pick
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
        purposes = [t.purpose for t in self.tasks]
        rest = "".join(f", and then to {p}" for p in purposes[1:])
        return f"You are a user chatting with an assistant language model to {purposes[0]}{rest}."


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


class _Conversation:
    """The state of one conversation while it is being generated."""

    def __init__(self, rng: random.Random, persona: Persona, new_task: Callable[[str | None, str | None], Task]):
        self.rng, self.persona, self.new_task = rng, persona, new_task
        self.turns: list[DialogueTurn] = []
        self.tasks: list[Task] = []
        self.style: Style = assistant.initial_style(rng, persona)
        self.unsatisfying = 0
        self.revealed = 0
        self.solved: bool | None = None

    # ------------------------------------------------------------------ user side
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
        if stated and self.rng.random() < assistant.FIX_CHANCE:
            self.style = assistant.adjust(self.style, VIOLATION_BY_AXIS[stated[0]][stated[1]])
        if prefix:
            segments[0] = phrasing.Segment(segments[0].kind, prefix + segments[0].text)
        feedback_type = "none"
        if thanks:
            segments.insert(0, phrasing.thanks(self.rng, self.persona.register))
            feedback_type = "positive"
        self.user(segments, type="new_request", relation=relation, feedback_type=feedback_type,
                  shards=list(range(1, self.revealed + 1)))

    # ------------------------------------------------------------------ assistant side
    def assistant_turn(self, reply: Reply) -> list[str]:
        label: dict[str, Any] = {"act": reply.act, "style": asdict(reply.style), "correct": reply.correct,
                                 "words": len(reply.text.split())}
        found: list[str] = []
        if reply.act in ("answer", "discussion"):
            found, fits = violations(self.persona, reply.text)
            label["fits"] = {k: round(v, 3) for k, v in fits.items()}
        if reply.act == "discussion":
            found.insert(0, "off_topic")
        elif reply.act == "refusal":
            found.insert(0, "refused")
        elif reply.correct is False and self.revealed >= len(self.tasks[-1].shards):
            found.insert(0, "wrong_answer")
        label["violations"] = found
        self.turns.append(DialogueTurn("assistant", reply.text, label))
        return found

    def reply(self, fix: str | None) -> Reply:
        rng, task = self.rng, self.tasks[-1]
        roll = rng.random()
        if roll < assistant.REFUSAL_RATE:
            return assistant.refusal_reply(rng, self.style)
        if roll < assistant.REFUSAL_RATE + assistant.DISCUSSION_RATE:
            return assistant.discussion_reply(rng, self.style, task)
        if self.revealed < len(task.shards) and rng.random() < assistant.CLARIFY_CHANCE:
            return assistant.clarification_reply(rng, self.style, task.shards[self.revealed].question)
        error_rate = 1 - assistant.FIX_CHANCE if fix == "wrong_answer" else assistant.ERROR_RATE
        module = family_modules()[task.family]
        answer = module.answer(rng, task, self.revealed, rng.random() >= error_rate,
                               self.style.vocabulary == "technical")
        reply = assistant.answer_reply(rng, self.style, answer)
        if self.revealed >= len(task.shards):
            self.solved = answer.correct
        return reply

    # ------------------------------------------------------------------ the loop
    def run(self) -> Dialogue:
        rng, persona = self.rng, self.persona
        self.open_task(self.new_task(None, None))
        fix: str | None = None
        reply = self.reply(fix)
        while True:
            found = self.assistant_turn(reply)
            task = self.tasks[-1]
            if sum(t.role == "user" for t in self.turns) >= MAX_USER_TURNS:
                return self.finish("turn_limit")
            fix = None
            if reply.act == "acknowledgement":
                return self.finish("satisfied")
            if reply.act == "clarification":
                shard = self.revealed
                self.revealed += 1
                self.user(phrasing.clarification_answer(rng, persona.register, task.shards[shard]),
                          type="clarification_answer", relation="answer_to_question", shards=[shard + 1])
            elif found and found[0] in ("refused", "off_topic"):
                if not self.tolerate_one_more():
                    return self.finish("gave_up")
                self.user(phrasing.rephrase(rng, persona.register, task), type="feedback", relation="re_attempt",
                          feedback_type="repeat_rephrase", reason=found[0])
            elif self.revealed < len(task.shards):
                shard = self.revealed
                self.revealed += 1
                self.user(phrasing.continuation(rng, persona.register, task.shards[shard]),
                          type="continuation", relation="re_attempt", shards=[shard + 1])
            elif found and found[0] == "wrong_answer":
                if not self.tolerate_one_more():
                    return self.finish("gave_up")
                knows = rng.random() < CORRECTS_BY_EXPERTISE[persona.expertise]
                segments, feedback_type = phrasing.wrong_answer_feedback(rng, persona.register,
                                                                         reply.correction if knows else None)
                self.user(segments, type="feedback", relation="re_attempt", feedback_type=feedback_type,
                          reason="wrong_answer")
                fix = "wrong_answer"
            elif found:
                if rng.random() >= persona.feedback_rate:
                    return self.finish("tolerated")
                if not self.tolerate_one_more():
                    return self.finish("gave_up")
                reason = found[0]
                segments, feedback_type = phrasing.style_feedback(rng, persona.register, reason)
                self.user(segments, type="feedback", relation="re_attempt", feedback_type=feedback_type, reason=reason)
                if rng.random() < assistant.FIX_CHANCE:
                    self.style = assistant.adjust(self.style, reason)
            else:
                step = self.after_satisfied()
                if step is None:
                    return self.finish("satisfied")
                if step == "thanks":
                    self.user([phrasing.thanks(rng, persona.register)], type="positive_ack", relation="none",
                              feedback_type="positive")
                    reply = assistant.acknowledgement_reply(rng, self.style)
                    continue
                if step == "extend":
                    self.user(phrasing.extend(rng, persona.register, task.topic), type="continuation", relation="extend")
                    lead = f"Here is more about {task.topic}."
                    reply = Reply(assistant.render(rng, self.style, lead, []), "answer", self.style, None)
                    continue
                variation = step == "variation"
                new = self.new_task(task.family if variation else None, task.domain if variation else None)
                self.open_task(new, prefix=phrasing.prefix(rng, persona.register, variation),
                               thanks=not variation and rng.random() < persona.politeness,
                               relation="new_variation" if variation else "new_request")
            reply = self.reply(fix)

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

    def finish(self, end_reason: str) -> Dialogue:
        return Dialogue(self.turns, self.tasks, end_reason, self.solved)


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

