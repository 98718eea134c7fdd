"""Task families with checkable outcomes: what simulated users ask for.

Each family module has ``make_task(rng, domain, expert)`` returning a :class:`Task` and
``answer(rng, task, revealed, correct, technical)`` returning the substance of an assistant reply as
an :class:`Answer`. ``DOMAINS`` lists the interest domains a family can be themed on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


@dataclass(slots=True)
class Shard:
    """One piece of a task the user can reveal: what they say, and how an assistant would ask for it."""

    text: str
    question: str = ""


@dataclass(slots=True)
class Task:
    """One request: the user's high-level purpose, its shards (shard 1 states the request) and its check."""

    family: str
    domain: str
    purpose: str                  # "plan what a dinner party will cost": the intent without specifics
    shards: list[Shard]
    full_request: str             # everything in one message (all-at-once users, and the check's statement)
    check: dict[str, Any]         # the checkable outcome: answer, tests, constraints or tags
    topic: str                    # what a "tell me more" follow-up asks about
    data: dict[str, Any] = field(default_factory=dict)  # what the family's answer() needs

    def truth(self) -> dict[str, Any]:
        return {"family": self.family, "domain": self.domain, "purpose": self.purpose,
                "shards": [s.text for s in self.shards], "full_request": self.full_request, "check": self.check}


@dataclass(slots=True)
class Answer:
    """The substance of a reply: points (sentences that may become bullets), an optional verbatim block
    (code, a poem) and, for a wrong answer, what the user would correct."""

    lead: str
    points: list[str]
    block: str | None = None
    correct: bool = True                # whether the answer passes the task's check
    correction: str | None = None      # what a user who knows better says is wrong
    result: Any = None                  # the answer given (a number, a name, code, items)


def family_modules() -> dict[str, ModuleType]:
    from userloop.testbed.families import code, facts, math, recommend, writing

    return {"math": math, "code": code, "fact": facts, "writing": writing, "recommendation": recommend}


def pick(rng: random.Random, options):
    return options[int(rng.random() * len(options))]
