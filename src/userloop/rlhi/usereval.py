"""UserEval (RLHI section 3): personalised and overall win rates of a policy against a baseline.

For held-out users' requests (the ``test`` split of prepared data: users never seen in training; the
opening request of each of their conversations), both policies answer with the user's derived persona
in the system message (:func:`~userloop.rlhi.conditioning.with_persona`). A judge compares the two
answers twice, once with the policy's answer shown first and once with the baseline's first:

* **personalisation**: the judge sees the persona and says which answer suits this user better;
* **overall**: the judge does not see the persona and says which answer is better in general.

Per request the two orders give one verdict for the policy: each order's outcome is 1 (policy
preferred), 0.5 (tie) or 0 (baseline preferred); their sum above 1 is a **win** (1), exactly 1 a
**tie** (0.5: both orders tied, or the orders disagree, i.e. the judge followed the position), below 1
a **loss** (0). The win rate is the mean verdict over requests, with a 95% bootstrap percentile
interval over requests (10,000 resamples, seeded).

Judges: ``testbed:judge`` (:class:`TestbedJudge`, exact): personalisation compares the persona-match score
of the user's TRUE persona; overall compares the persona-agnostic quality, the mean persona-match score
over the true personas of the whole population of the data (every user in ``truth.jsonl``); equal
within ``1e-9`` is a tie. Any chat model spec (:class:`ModelJudge`): our prompt with (or without) the
derived persona and both answers, JSON ``{"better": "A" | "B" | "tie"}``, validated, retried once; an
answer still invalid is a tie for that order, counted (``invalid``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from userloop.config import require_at_least_one
from userloop.data.personas import read_personas
from userloop.errors import UserError
from userloop.files import write_atomic
from userloop.models import GenerationParams, load_model
from userloop.models.registry import load_role, parse_spec, role_spec
from userloop.progress import Progress, no_progress
from userloop.rlhi.build import output_folder, read_split_conversations
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.followups import clip
from userloop.rlhi.llm import ask_validated, parse_json_object
from userloop.rlhi.reward_scorers import TestbedScorer
from userloop.rlhi.user_rewards import (
    derive_personas,
    label_followups,
    sample_requests,
    user_requests,
)
from userloop.statistics import mean_with_bootstrap_interval
from userloop.testbed import score
from userloop.testbed.persona_match import fits_from_features, text_features

PREFERENCES = ("A", "B", "tie")     # what a judge says about one order: first shown, second shown, tie
TIE_TOLERANCE = 1e-9
BOOTSTRAP_SAMPLES = 10_000


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


def win_rate(verdicts: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Mean verdict with its 95% bootstrap interval over requests, and the counts."""
    n = len(verdicts)
    counts = {"requests": n, "wins": sum(v == 1.0 for v in verdicts), "ties": sum(v == 0.5 for v in verdicts),
              "losses": sum(v == 0.0 for v in verdicts)}
    if not n:
        return {"win_rate": None, "ci95": None, **counts}
    mean, (low, high) = mean_with_bootstrap_interval(verdicts, BOOTSTRAP_SAMPLES, seed)
    return {"win_rate": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], **counts}


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


def judge_both_orders(judge, items: Sequence[tuple[Comparison, Comparison]], personalised: bool) -> dict[str, Any]:
    """Verdicts and win rate of one criterion: ``items`` holds (policy first, baseline first) comparisons."""
    first = judge.compare([a for a, _ in items], personalised)
    second = judge.compare([b for _, b in items], personalised)
    verdicts = pairwise_verdicts(first, second)
    return {"verdicts": verdicts, "policy_first": first, "baseline_first": second,
            "summary": {**win_rate(verdicts), "inconsistent_orders": inconsistent(first, second)}}


# ----------------------------------------------------------------------------- the command
@dataclass
class UserEvalConfig:
    """How ``userloop eval-personal`` runs."""

    policy: str = field(default="", metadata={"help": "the policy under test: a chat model spec"})
    baseline: str = field(default="", metadata={"help": "the policy it is compared with: a chat model spec"})
    judge: str = field(default="testbed:judge", metadata={"help": "testbed:judge (exact: true persona-match scores; testbed only) or a chat model spec"})
    split: str = field(default="test", metadata={"help": "split of held-out users whose requests are used"})
    personas: Path | None = field(default=None, metadata={"help": "personas.jsonl (default: derived offline from the split's conversations)"})
    max_requests: int = field(default=300, metadata={"help": "use at most this many requests, drawn at random (seeded); 0: all"})
    min_conversations: int = field(default=3, metadata={"help": "derived personas: users need at least this many conversations"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature of both policies (0: greedy)"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest answer, in tokens"})
    batch_size: int = field(default=64, metadata={"help": "prompts per generation batch"})
    seed: int = field(default=0, metadata={"help": "random seed (request sample, sampling, bootstrap)"})

    def validate(self) -> None:
        for name in ("policy", "baseline"):
            if not getattr(self, name):
                raise UserError(f"give --{name} SPEC (a chat model)")
            parse_spec(getattr(self, name))
        role_spec("usereval_judge", self.judge)
        require_at_least_one(self, ("min_conversations", "max_new_tokens", "batch_size"))
        if self.max_requests < 0:
            raise UserError(f"max_requests must be 0 (all) or positive, got {self.max_requests}")
        if not 0 <= self.temperature <= 100:
            raise UserError(f"temperature must be in [0, 100], got {self.temperature}")


def opening_requests(data: Path, config: UserEvalConfig, counts: Counter):
    """The opening request of every conversation of the split, with its user's derived persona."""
    conversations = read_split_conversations(data, config.split)
    if config.personas is not None:
        personas = read_personas(config.personas)
    else:
        personas = derive_personas(conversations, label_followups(conversations, None, counts), config.min_conversations)
    requests = [r for r in user_requests(conversations, [], personas, counts)
                if not any(m["role"] == "user" for m in r.prompt[:-1])]
    counts["conversations"] += len(conversations)
    counts["opening_requests"] += len(requests)
    counts["opening_requests_without_persona"] += sum(r.persona is None for r in requests)
    return sample_requests(requests, config.max_requests, config.seed)


def _answers(spec: str, prompts: list[list[dict]], config: UserEvalConfig, progress: Progress, label: str) -> list[str]:
    model = load_model(spec)
    params = GenerationParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed)
    out: list[str] = []
    with progress(f"answering ({label})", len(prompts)) as advance:
        for start in range(0, len(prompts), config.batch_size):
            batch = prompts[start:start + config.batch_size]
            out.extend(c.text for c in model.generate(batch, params))
            advance(len(batch))
    return out


def comparison_record(i: int, request, policy: str, baseline: str, personal: dict, overall: dict) -> dict[str, Any]:
    """One line of ``comparisons.jsonl``: the request, both answers, each order's preference and the verdict."""
    judged = {name: {"policy_first": result["policy_first"][i], "baseline_first": result["baseline_first"][i],
                     "verdict": result["verdicts"][i]} for name, result in (("personalisation", personal), ("overall", overall))}
    return {"conversation_id": request.conversation_id, "user_id": request.user_id, "persona": request.persona,
            "prompt": request.prompt, "policy": policy, "baseline": baseline, **judged}


def eval_personal(data: Path, out: Path, config: UserEvalConfig, progress: Progress = no_progress) -> dict[str, Any]:
    """Run UserEval (module docstring); writes ``report.json`` and ``comparisons.jsonl`` into ``out``."""
    config.validate()
    started = time.perf_counter()
    judge = load_judge(config.judge, data)
    output_folder(out)
    counts: Counter = Counter()
    requests = opening_requests(data, config, counts)
    if not requests:
        raise UserError(f"{data}: no requests in the {config.split} split")
    prompts = [with_persona(r.prompt, r.persona) for r in requests]
    policy = _answers(config.policy, prompts, config, progress, "policy")
    baseline = _answers(config.baseline, prompts, config, progress, "baseline")
    items = [(Comparison(r.user_id, r.persona, r.prompt, p, b), Comparison(r.user_id, r.persona, r.prompt, b, p))
             for r, p, b in zip(requests, policy, baseline, strict=True)]
    with progress("judging", 2) as advance:
        personal = judge_both_orders(judge, items, personalised=True)
        advance(1)
        overall = judge_both_orders(judge, items, personalised=False)
        advance(1)
    report: dict[str, Any] = {
        "data": str(data), "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "requests": dict(counts), "requests_used": len(requests),
        "personalisation": personal["summary"], "overall": overall["summary"], "judge": judge.name,
        "judge_counts": dict(judge.counts)}
    if isinstance(judge, TestbedJudge):
        def mean(values: list[float]) -> float:
            return round(sum(values) / len(values), 4)

        report["mean_persona_match"] = {"policy": mean([judge.personal_score(r.user_id, a) for r, a in zip(requests, policy, strict=True)]),
                                        "baseline": mean([judge.personal_score(r.user_id, a) for r, a in zip(requests, baseline, strict=True)])}
        report["mean_overall_quality"] = {"policy": mean([judge.overall_score(a) for a in policy]),
                                          "baseline": mean([judge.overall_score(a) for a in baseline])}
    report["seconds"] = round(time.perf_counter() - started, 2)
    with open(out / "comparisons.jsonl", "wb") as f:
        f.writelines(orjson.dumps(comparison_record(i, request, policy[i], baseline[i], personal, overall)) + b"\n"
                     for i, request in enumerate(requests))
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report
