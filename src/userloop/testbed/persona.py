"""Personas of the simulated users and the distribution they are drawn from.

A persona is what a user wants from answers (``expertise``, ``detail``, ``tone``, ``structure``,
the four preference fields of RLHI's personas) plus how the user writes and behaves. Every field's
distribution is in :data:`PERSONA_DISTRIBUTION`; ``docs/testbed.md`` documents it and the tests
check sampled populations against it.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

DOMAINS = ("cooking", "travel", "fitness", "finance", "programming", "science",
           "history", "music", "movies", "books", "gardening", "career")

# Categorical fields: value -> probability.
PERSONA_DISTRIBUTION: dict[str, dict[str, float]] = {
    # The level at which the user wants answers pitched (novices want plain words, experts technical ones).
    "expertise": {"novice": 0.30, "intermediate": 0.35, "expert": 0.35},
    # Brief users dislike long answers; detailed users dislike short ones.
    "detail": {"brief": 0.50, "detailed": 0.50},
    # The register the user wants answers in.
    "tone": {"casual": 0.40, "formal": 0.60},
    # Prose users dislike bullet lists; structured users want lists or steps.
    "structure": {"prose": 0.40, "structured": 0.60},
    # Gradual users reveal a task's pieces over turns, shard 1 first; the others state it all at once.
    "disclosure": {"gradual": 0.65, "all_at_once": 0.35},
}
# Patience: how many unsatisfying answers the user answers with feedback; the next one makes them give up.
PATIENCE_DISTRIBUTION: dict[int, float] = {0: 0.10, 1: 0.30, 2: 0.30, 3: 0.20, 4: 0.10}
# Number of interest domains (drawn without replacement from DOMAINS, uniformly).
DOMAIN_COUNT_DISTRIBUTION: dict[int, float] = {1: 0.40, 2: 0.40, 3: 0.20}
# Writing habits.
TYPO_FREE_SHARE = 0.50          # half the users make no typos; the others misspell a word with this rate:
TYPO_RATE_RANGE = (0.01, 0.08)  # uniform, per word of four letters or more
LOWERCASE_SHARE = {"casual": 0.60, "formal": 0.10}   # users who write everything in lower case, by tone
POLITENESS_RANGE = {"casual": (0.0, 0.6), "formal": (0.3, 1.0)}  # uniform; chance of please / thanks
FEEDBACK_RATE_RANGE = (0.4, 1.0)  # uniform; chance of voicing a complaint about an answer's style
REGISTER_MATCHES_TONE = 0.8     # users mostly write in the register they want answers in


@dataclass(frozen=True, slots=True)
class Persona:
    """A simulated user's hidden preferences and habits."""

    expertise: str
    detail: str
    tone: str
    structure: str
    domains: tuple[str, ...]
    patience: int
    disclosure: str
    register: str        # how the user writes: casual or formal
    typo_rate: float
    lowercase: bool
    politeness: float
    feedback_rate: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["domains"] = list(self.domains)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Persona:
        return cls(**{**data, "domains": tuple(data["domains"])})

    def describe(self) -> str:
        """The persona as one sentence of text, for prompts and persona-conditioned training."""
        article = "An" if self.expertise in ("expert", "intermediate") else "A"
        level = {"novice": "novice", "intermediate": "intermediate-level user", "expert": "expert"}[self.expertise]
        shape = "structured answers with lists or steps" if self.structure == "structured" else "answers in plain prose"
        return (f"{article} {level} who prefers {self.detail}, {self.tone} {shape}, "
                f"interested in {_join(self.domains)}.")


def _join(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def pick_weighted(rng: random.Random, distribution: dict) -> Any:
    """A key of ``distribution`` drawn with its value as probability (or relative weight)."""
    return rng.choices(list(distribution), list(distribution.values()))[0]


def sample_persona(rng: random.Random) -> Persona:
    """Draw one persona from :data:`PERSONA_DISTRIBUTION` and the habit ranges above."""
    tone = pick_weighted(rng, PERSONA_DISTRIBUTION["tone"])
    n_domains = pick_weighted(rng, DOMAIN_COUNT_DISTRIBUTION)
    typo = 0.0 if rng.random() < TYPO_FREE_SHARE else round(rng.uniform(*TYPO_RATE_RANGE), 3)
    return Persona(
        expertise=pick_weighted(rng, PERSONA_DISTRIBUTION["expertise"]),
        detail=pick_weighted(rng, PERSONA_DISTRIBUTION["detail"]),
        tone=tone,
        structure=pick_weighted(rng, PERSONA_DISTRIBUTION["structure"]),
        domains=tuple(rng.sample(DOMAINS, n_domains)),
        patience=pick_weighted(rng, PATIENCE_DISTRIBUTION),
        disclosure=pick_weighted(rng, PERSONA_DISTRIBUTION["disclosure"]),
        register=tone if rng.random() < REGISTER_MATCHES_TONE else {"casual": "formal", "formal": "casual"}[tone],
        typo_rate=typo,
        lowercase=rng.random() < LOWERCASE_SHARE[tone],
        politeness=round(rng.uniform(*POLITENESS_RANGE[tone]), 3),
        feedback_rate=round(rng.uniform(*FEEDBACK_RATE_RANGE), 3),
    )
