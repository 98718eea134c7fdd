"""Pairwise judges: which of two answers to one request suits a user better (UserEval, RLHI section 3; the
mirrors of ``rlhi build --mirrors``), and one verdict from the two orders they are shown in.

``testbed:judge`` (:class:`TestbedJudge`, exact): personalised, the persona-match score of the user's TRUE
persona; overall, the persona-agnostic quality, the mean persona-match score over the true personas of the
whole population of the data (every user in ``truth.jsonl``); equal within ``1e-9`` is a tie. Any chat model
spec (:class:`ModelJudge`): our prompt with (or without) the derived persona and both answers, JSON
``{"better": "A" | "B" | "tie"}``, validated, retried once; an answer still invalid is a tie for that order,
counted (``invalid``). Over the two orders: a **win** for an answer (1) when the two orders' outcomes sum above 1,
a tie (0.5) at exactly 1 (both tied, or the judge followed the position), a loss (0) below.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from userloop.errors import UserError
from userloop.models.registry import load_role
from userloop.rlhi.followups import clip
from userloop.rlhi.llm import ask_validated, parse_json_object
from userloop.rlhi.reward_scorers import TestbedScorer
from userloop.testbed import score
from userloop.testbed.persona_match import fits_from_features, text_features

PREFERENCES = ("A", "B", "tie")     # what a judge says about one order: first shown, second shown, tie
TIE_TOLERANCE = 1e-9


# ----------------------------------------------------------------------------- win-rate arithmetic
def order_outcome(preference: str, policy_first: bool) -> float:
    """The policy's outcome in one order: 1 preferred, 0.5 tie, 0 not preferred."""
    if preference not in PREFERENCES:
        raise ValueError(f"a preference is one of {PREFERENCES}, got {preference!r}")
    if preference == "tie":
        return 0.5
    return 1.0 if (preference == "A") == policy_first else 0.0


def pairwise_verdicts(policy_first: Sequence[str], baseline_first: Sequence[str]) -> list[float]:
    """One verdict per request (1 win, 0.5 tie, 0 loss) from the judge's preferences in the order with
    the policy's answer shown first (``policy_first``) and in the swapped order (``baseline_first``)."""
    if len(policy_first) != len(baseline_first):
        raise ValueError(f"{len(policy_first)} verdicts in one order, {len(baseline_first)} in the other")
    out = []
    for first, second in zip(policy_first, baseline_first, strict=True):
        total = order_outcome(first, True) + order_outcome(second, False)
        out.append(1.0 if total > 1 else 0.5 if total == 1 else 0.0)
    return out


def inconsistent(policy_first: Sequence[str], baseline_first: Sequence[str]) -> int:
    """Requests where the two orders name opposite winners (the judge picked the same position)."""
    return sum({order_outcome(a, True), order_outcome(b, False)} == {0.0, 1.0}
               for a, b in zip(policy_first, baseline_first, strict=True))


# ----------------------------------------------------------------------------- judges
@dataclass(frozen=True, slots=True)
class Comparison:
    """Two answers to one request, in the order shown to the judge."""

    user_id: str
    persona: str | None          # derived persona (what a model judge reads)
    prompt: list[dict]
    first: str
    second: str


def prefer(first: float, second: float) -> str:
    return "tie" if abs(first - second) <= TIE_TOLERANCE else "A" if first > second else "B"


@dataclass
class TestbedJudge:
    """Exact testbed judge: the true persona-match score (personalised) or its population mean (overall)."""

    __test__ = False
    true_personas: dict[str, dict[str, Any]]
    name: str = "testbed"
    counts: Counter = field(default_factory=Counter)
    _population: Counter | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_data(cls, data: Path) -> TestbedJudge:
        return cls(TestbedScorer.from_data(data).true_personas)

    def personal_score(self, user_id: str, response: str) -> float:
        persona = self.true_personas.get(user_id)
        if persona is None:
            raise UserError(f"the testbed judge has no true persona for user {user_id!r}: the data is not this testbed's")
        return score(persona, response)

    def overall_score(self, response: str) -> float:
        """The mean persona-match score over every true persona of the population (persona-agnostic quality)."""
        if self._population is None:   # the population as counts of its (at most 24) preference combinations
            self._population = Counter((p["expertise"], p["detail"], p["tone"], p["structure"]) for p in self.true_personas.values())
        features = text_features(response)
        total = sum(self._population.values())
        return sum(n * sum(fits_from_features(dict(zip(("expertise", "detail", "tone", "structure"), key, strict=True)),
                                              features).values()) / 4 for key, n in self._population.items()) / total

    def compare(self, items: Sequence[Comparison], personalised: bool) -> list[str]:
        out = []
        for item in items:
            if personalised:
                out.append(prefer(self.personal_score(item.user_id, item.first), self.personal_score(item.user_id, item.second)))
            else:
                out.append(prefer(self.overall_score(item.first), self.overall_score(item.second)))
        self.counts["compared"] += len(items)
        return out


JUDGE_PERSONAL = """You compare two answers of a chat assistant to the same request, for a particular user. You get a description of the user (their expertise, how much detail they want, the tone and the structure they prefer), the conversation up to their request, and two answers, A and B. Which answer suits THIS user better? Answer with one JSON object and nothing else: {"better": "A"} or {"better": "B"}, or {"better": "tie"} when neither is better for them."""
JUDGE_OVERALL = """You compare two answers of a chat assistant to the same request. You get the conversation up to the request and two answers, A and B. Which answer is better overall (helpful, correct, clear, well written)? Answer with one JSON object and nothing else: {"better": "A"} or {"better": "B"}, or {"better": "tie"} when neither is better."""
JUDGE_RETRY = 'Your answer was not usable: {error}. Answer with {{"better": "A"}}, {{"better": "B"}} or {{"better": "tie"}} only.'


def judge_messages(item: Comparison, personalised: bool) -> list[dict[str, str]]:
    history = "\n\n".join(f"[{m['role']}]\n{clip(m['content'])}" for m in item.prompt)
    about = f"The user: {item.persona or 'unknown'}\n\n" if personalised else ""
    user = (f"{about}Conversation:\n<<<\n{history}\n>>>\n\nAnswer A:\n<<<\n{clip(item.first, 6000)}\n>>>\n\n"
            f"Answer B:\n<<<\n{clip(item.second, 6000)}\n>>>")
    return [{"role": "system", "content": JUDGE_PERSONAL if personalised else JUDGE_OVERALL}, {"role": "user", "content": user}]


def parse_preference(answer: str) -> tuple[str | None, str | None]:
    data = parse_json_object(answer)
    value = data.get("better") if data else None
    value = value.strip() if isinstance(value, str) else value
    value = value.upper() if value in ("a", "b") else value.lower() if isinstance(value, str) and value.lower() == "tie" else value
    if value not in PREFERENCES:
        return None, 'no {"better": "A" | "B" | "tie"} object'
    return value, None


@dataclass
class ModelJudge:
    """A chat model comparing two answers (module docstring); invalid twice: a tie, counted."""

    model: Any
    name: str = "judge"
    batch_size: int = 256
    counts: Counter = field(default_factory=Counter)

    def compare(self, items: Sequence[Comparison], personalised: bool) -> list[str]:
        out: list[str] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            answers = ask_validated(self.model, [judge_messages(i, personalised) for i in batch],
                                    lambda i, text: parse_preference(text), JUDGE_RETRY, 20, self.counts)
            out.extend("tie" if a is None else a for a in answers)
        return out


def load_judge(spec: str, data: Path):
    """``testbed:judge`` (exact, testbed data only) or a chat model spec."""
    return load_role("usereval_judge", spec, lambda model: ModelJudge(model, name=spec), data=data)
