"""``userloop eval-validity``: do user simulators rank assistants the way the ground-truth users do?

Every simulator talks to every assistant of a panel (:mod:`userloop.simulate.panel`) on the same held-out
intents (the testbed's sharded math problems of the test split, each with its user's persona) and seeds,
through the one engine (:func:`userloop.simulate.runs.simulate`). The interactive testbed users
(``testbed:users``) are the ground truth, as human ratings are in SimulatorArena (2025: system-level
rank correlation of assistants). Per simulator: Spearman and Kendall correlation of its ranking of the
assistants (by task success) with the ground truth's, and the mean absolute error of each outcome over the
assistants, with 95% percentile bootstrap intervals over intents. The naive protocol (the full task in one
turn, never ends: today's single-turn evaluation) is one more simulator, and its runs are the "fully
specified" side of the multi-turn drop (the UserLM paper, arXiv 2510.06552 §5; Laban et al. 2025).

Outcomes of a conversation (docs/validity.md), averaged over the samples of an intent, then over intents:

* ``success``: the task was solved (an answer attempt passed the math check: the record's ``solved``).
* ``turns``: the number of user turns.
* ``end_<reason>``: the conversation ended for that engine end reason (``solved``, ``user_ended``,
  ``max_turns``, ``error``, ``context``).
* ``feedback``: at least one follow-up user turn is feedback: it follows an answer attempt and reveals no
  shard the user had not yet revealed (:func:`userloop.simulate.reveal_stats.covers`): a reaction to the
  answer (correction, complaint, rephrasing, thanks), as "Naturally Occurring Feedback" (Don-Yehiya et al.
  2024) counts conversations with feedback.
* ``satisfied``: solved without any feedback turn before (the user got a right answer and had nothing to
  complain about: the testbed's ``satisfied`` end, as far as the engine's solved-ends rule lets it show).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from userloop.config import option
from userloop.errors import UserError
from userloop.files import write_atomic
from userloop.metrics.evalsim import parse_sims
from userloop.models.registry import role_spec
from userloop.progress import Progress, no_progress
from userloop.simulate.engine import END_REASONS
from userloop.simulate.panel import read_panel, with_scenarios
from userloop.simulate.records import SimulatedConversation
from userloop.simulate.reveal_stats import covers
from userloop.simulate.runs import RECORDS, SimulationConfig, read_records, simulate
from userloop.simulate.scenarios import Scenario, math_intent, write_scenarios
from userloop.simulate.testbed_users import testbed_scenarios
from userloop.statistics import average_ranks, bootstrap_resamples, kendall_tau_b, percentile_interval, spearman
from userloop.testbed.default import default_data
from userloop.userlm.simulator import guardrails_for

GROUND_TRUTH, NAIVE = "ground_truth", "naive"
OUTCOMES = ("success", "turns", *(f"end_{reason}" for reason in END_REASONS), "feedback", "satisfied")
RANKED_BY = "success"


@dataclass
class ValidityConfig:
    """What eval-validity runs; validated by :meth:`validate` (a bad value raises :class:`UserError`)."""

    sim: tuple[str, ...] = option((), "a user simulator to validate: NAME=SPEC or SPEC (hf:PATH user LM, prompted:SPEC, "
                                      "openai:, scripted:); repeatable")
    data: str | None = option(None, "a prepared testbed folder (held-out users in its test split); default: the "
                                    "built-in testbed, prepared")
    panel: str | None = option(None, "panel file (YAML/JSON: assistants NAME: SPEC, optional expected_order); "
                                     "default: the built-in panel")
    ground_truth: str = option("testbed:users", "the ground-truth users: a user model spec (the interactive testbed users)")
    intents: int = option(40, "held-out math problems (testbed test split), drawn with --seed")
    guardrails: str = option("off", "the UserLM guardrails around model simulators: off (the raw model, as eval-sim "
                                    "measures it) or on (the model card's: they resample turns that copy the intent "
                                    "or pass 25 words, and ban a first 'I', which stating a given problem needs)")
    n: int = option(1, "conversations per problem, assistant and simulator")
    max_user_turns: int = option(8, "most user turns per conversation")
    naive: bool = option(True, "compare the naive protocol too (the full task in one turn, never ends)")
    bootstrap: int = option(1000, "bootstrap resamples of the intents for the 95% intervals")
    seed: int = option(0, "seed of the problems drawn, the conversations and the bootstrap")
    concurrency: int = option(64, "most conversations live at once")

    def validate(self) -> None:
        for name, low in (("intents", 2), ("n", 1), ("max_user_turns", 1), ("bootstrap", 1), ("concurrency", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
        role_spec("user", self.ground_truth)
        guardrails_for(self.guardrails)


def eval_validity(config: ValidityConfig, out: str | Path, *, progress: Progress = no_progress) -> dict[str, Any]:
    """Run every simulator of ``config`` (plus the ground truth and the naive protocol) against every panel
    assistant on held-out problems of the prepared testbed folder ``config.data`` (None: the built-in testbed);
    write ``out/report.json``, ``out/report.md``, ``out/scenarios.jsonl`` and ``out/runs/SIMULATOR/ASSISTANT/``
    (run folders, resumed when rerun); return the report."""
    import orjson

    config.validate()
    sims = parse_sims(list(config.sim))
    data = Path(config.data) if config.data is not None else default_data(prepared=True)
    reserved = {GROUND_TRUTH, NAIVE} & set(sims)
    if reserved:
        raise UserError(f"the simulator name {min(reserved)!r} is reserved: name it otherwise with NAME=SPEC")
    panel = read_panel(config.panel)
    out = Path(out)
    scenarios = held_out_problems(data, config.intents, config.seed)
    scenario_file = write_scenarios(scenarios, out / "scenarios.jsonl").resolve()
    users = {GROUND_TRUTH: config.ground_truth, **sims}
    if config.naive:
        users[NAIVE] = None
    records: dict[str, dict[str, list[SimulatedConversation]]] = {name: {} for name in users}
    for assistant, spec in panel.assistants.items():
        for name, user in users.items():
            run = SimulationConfig(assistant=with_scenarios(spec, scenario_file), user=user, scenarios=str(scenario_file),
                                   guardrails=config.guardrails, n=config.n, max_user_turns=config.max_user_turns, seed=config.seed,
                                   concurrency=config.concurrency)
            folder, label = out / "runs" / name / assistant, f"{name} x {assistant}"
            simulate(run, folder, progress=lambda _, total=None, label=label: progress(label, total))
            records[name][assistant] = read_records(folder / RECORDS)[0]
    report = validity_report(scenarios, records, panel.assistants, config)
    report.update({"ground_truth": config.ground_truth, "simulators": dict(sims), "data": str(data),
                   "scenarios": str(scenario_file), "panel": {"file": config.panel or "built-in",
                                                               "assistants": panel.assistants,
                                                               "expected_order": panel.expected_order},
                   "config": asdict(config)})
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_atomic(out / "report.md", report_markdown(report))
    return report


def held_out_problems(data: Path, count: int, seed: int) -> list[Scenario]:
    """``count`` math problems of held-out testbed users (the test split of the prepared testbed folder ``data``),
    drawn with ``seed``: the testbed-user scenarios (:func:`~userloop.simulate.testbed_users.testbed_scenarios`;
    the persona in ``metadata``) with the whole problem as the intent, as the UserLM paper gives its simulated user
    the whole task (the testbed users themselves play the logged conversation, whatever the intent says)."""
    problems = [s for s in testbed_scenarios(data, split="test").scenarios if s.kind == "math"]
    if len(problems) < 2:
        raise UserError(f"{data}: the test split holds {len(problems)} math problem(s); eval-validity needs at least 2")
    chosen = sorted(random.Random(seed).sample(range(len(problems)), min(count, len(problems))))
    return [replace(problems[i], intent=math_intent(problems[i].full_prompt)) for i in chosen]


# ------------------------------------------------------------------------------------------ outcomes
def conversation_outcomes(record: SimulatedConversation, scenario: Scenario) -> dict[str, float]:
    """The outcomes of one conversation (module docstring)."""
    messages = record.messages
    user_turns = [m.content for m in messages if m.role == "user"]
    feedback = False
    for index, message in enumerate(messages):
        if message.role != "user" or index < 2 or messages[index - 1].classification != "answer_attempt":
            continue
        before = "\n".join(m.content for m in messages[:index] if m.role == "user")
        new = [shard for shard in scenario.shards if not covers(shard, before) and covers(shard, message.content)]
        feedback = feedback or not new
    solved = bool(record.solved)
    outcomes = {"success": float(solved), "turns": float(len(user_turns))}
    outcomes.update({f"end_{reason}": float(record.end_reason == reason) for reason in END_REASONS})
    outcomes.update({"feedback": float(feedback), "satisfied": float(solved and not feedback)})
    return outcomes


def per_intent(records: list[SimulatedConversation], scenarios: list[Scenario]):
    """The outcomes of each scenario (rows, in ``scenarios`` order; columns :data:`OUTCOMES`): the mean over its
    conversations, as a NumPy array."""
    import numpy as np

    by_id = {scenario.id: scenario for scenario in scenarios}
    grouped: dict[str, list[list[float]]] = {scenario.id: [] for scenario in scenarios}
    for record in records:
        if record.scenario_id in by_id:
            outcomes = conversation_outcomes(record, by_id[record.scenario_id])
            grouped[record.scenario_id].append([outcomes[name] for name in OUTCOMES])
    missing = [sid for sid, rows in grouped.items() if not rows]
    if missing:
        raise UserError(f"no finished conversation for scenario {missing[0]!r}: rerun eval-validity to resume")
    return np.array([np.mean(rows, axis=0) for rows in grouped.values()])


def validity_report(scenarios: list[Scenario], records: Mapping[str, Mapping[str, list[SimulatedConversation]]],
                    assistants: Mapping[str, str], config: ValidityConfig) -> dict[str, Any]:
    """Outcomes per (simulator, assistant), rankings, validity per simulator and the multi-turn drop, from the
    records of every run (``records[simulator][assistant]``; ``ground_truth`` among the simulators). Every
    interval comes from the same resamples of the intents."""
    names = list(assistants)
    rows = {sim: {a: per_intent(records[sim][a], scenarios) for a in names} for sim in records}

    def stats(indices) -> dict[str, dict[str, dict[str, float]]]:
        return {sim: {a: dict(zip(OUTCOMES, map(float, rows[sim][a][indices].mean(axis=0)))) for a in names}
                for sim in rows}

    point = stats(list(range(len(scenarios))))
    replicates = [stats(indices) for indices in bootstrap_resamples(len(scenarios), config.bootstrap, config.seed)]

    def interval(statistic) -> dict[str, Any]:
        ci = percentile_interval([statistic(replicate) for replicate in replicates])
        return {"value": statistic(point), "ci95": list(ci) if ci is not None else None}

    validity = {}
    for sim in rows:
        if sim == GROUND_TRUTH:
            continue
        validity[sim] = {
            "spearman": interval(lambda s, sim=sim: spearman(*_paired(s, sim, names))),
            "kendall": interval(lambda s, sim=sim: kendall_tau_b(*_paired(s, sim, names))),
            "mae": {name: interval(lambda s, sim=sim, name=name: sum(abs(s[sim][a][name] - s[GROUND_TRUTH][a][name])
                                                                   for a in names) / len(names))
                    for name in OUTCOMES}}
    report: dict[str, Any] = {
        "intents": len(scenarios), "n": config.n, "ranked_by": RANKED_BY, "outcomes": point,
        "ranks": {sim: dict(zip(names, average_ranks([-point[sim][a][RANKED_BY] for a in names]))) for sim in point},
        "validity": validity}
    if NAIVE in rows:
        report["multi_turn_drop"] = _drops(point, names, interval)
    return report


def _paired(stats: dict, sim: str, names: list[str]) -> tuple[list[float], list[float]]:
    return [stats[sim][a][RANKED_BY] for a in names], [stats[GROUND_TRUTH][a][RANKED_BY] for a in names]


def _drops(point: dict, names: list[str], interval) -> dict[str, Any]:
    """Per assistant: success fully specified in one turn (the naive runs) and revealed over turns by each
    user, the drop in points, and per simulator whether its drop has the ground truth's sign."""
    drops = {}
    for a in names:
        single = point[NAIVE][a]["success"]
        multi = {sim: point[sim][a]["success"] for sim in point if sim != NAIVE}
        drop = {sim: interval(lambda s, sim=sim, a=a: 100 * (s[NAIVE][a]["success"] - s[sim][a]["success"]))
                for sim in multi}
        truth = drop[GROUND_TRUTH]["value"]
        drops[a] = {"single_turn": single, "multi_turn": multi, "drop_points": drop,
                    "same_direction_as_ground_truth": {sim: _sign(d["value"]) == _sign(truth)
                                                       for sim, d in drop.items() if sim != GROUND_TRUTH}}
    return drops


def _sign(value: float, tolerance: float = 1e-9) -> int:
    return 0 if abs(value) <= tolerance else (1 if value > 0 else -1)


# ------------------------------------------------------------------------------------------ report
def _ci(entry: dict) -> str:
    value, ci = entry["value"], entry["ci95"]
    if value is None:
        return "-"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"


def report_markdown(report: dict) -> str:
    """The report as Markdown: validity per simulator, outcomes per (simulator, assistant), the multi-turn drop."""
    lines = ["# Simulator validity against the ground-truth users", "",
             (f"ground truth: `{report['ground_truth']}`; {report['intents']} held-out problems x {report['n']} "
             f"conversation(s); assistants ranked by {report['ranked_by']}; simulators' guardrails "
             f"{report['config'].get('guardrails', 'on')}"), "",  # reports before the option: on
             "| simulator | Spearman (95% CI) | Kendall (95% CI) | MAE success | MAE turns | MAE feedback | MAE satisfied |",
             "|---|---|---|---|---|---|---|"]
    for sim, row in report["validity"].items():
        mae = row["mae"]
        lines.append(f"| {sim} | {_ci(row['spearman'])} | {_ci(row['kendall'])} | {_ci(mae['success'])} | "
                     f"{_ci(mae['turns'])} | {_ci(mae['feedback'])} | {_ci(mae['satisfied'])} |")
    lines += ["", "| simulator | assistant | success | turns | feedback | satisfied | solved | user_ended | max_turns |",
              "|---|---|---|---|---|---|---|---|---|"]
    for sim, by_assistant in report["outcomes"].items():
        for a, o in by_assistant.items():
            lines.append(f"| {sim} | {a} | {o['success']:.2f} | {o['turns']:.2f} | {o['feedback']:.2f} | "
                         f"{o['satisfied']:.2f} | {o['end_solved']:.2f} | {o['end_user_ended']:.2f} | {o['end_max_turns']:.2f} |")
    drops = report.get("multi_turn_drop")
    if drops:
        sims = list(next(iter(drops.values()))["multi_turn"])
        lines += ["", "Multi-turn drop (points of success, one fully specified turn minus revealed over turns):", "",
                  "| assistant | single-turn | " + " | ".join(sims) + " |", "|---|---|" + "---|" * len(sims)]
        for a, d in drops.items():
            cells = [f"{d['multi_turn'][s]:.2f} ({d['drop_points'][s]['value']:+.0f})" for s in sims]
            lines.append(f"| {a} | {d['single_turn']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
