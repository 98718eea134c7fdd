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

Judges (``testbed:judge``, exact, or a chat model spec): :mod:`userloop.rlhi.pairwise_judges`.
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
from userloop.models.registry import parse_spec, role_spec
from userloop.progress import Progress, no_progress
from userloop.rlhi.build import output_folder, read_split_conversations
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.pairwise_judges import Comparison, TestbedJudge, inconsistent, load_judge, pairwise_verdicts
from userloop.rlhi.user_rewards import (
    derive_personas,
    label_followups,
    sample_requests,
    user_requests,
)
from userloop.statistics import mean_with_bootstrap_interval

BOOTSTRAP_SAMPLES = 10_000


# ----------------------------------------------------------------------------- win rates
def win_rate(verdicts: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Mean verdict with its 95% bootstrap interval over requests, and the counts."""
    n = len(verdicts)
    counts = {"requests": n, "wins": sum(v == 1.0 for v in verdicts), "ties": sum(v == 0.5 for v in verdicts),
              "losses": sum(v == 0.0 for v in verdicts)}
    if not n:
        return {"win_rate": None, "ci95": None, **counts}
    mean, (low, high) = mean_with_bootstrap_interval(verdicts, BOOTSTRAP_SAMPLES, seed)
    return {"win_rate": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], **counts}


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
