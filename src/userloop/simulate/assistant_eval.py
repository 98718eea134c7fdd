"""``evaluate-assistant``: the UserLM paper's experiment (arXiv 2510.06552, section 5).

The same problems are given to the assistant twice: fully specified in one user turn (each
scenario's ``full_prompt``, the reply scored; the single-turn setting) and revealed over a
multi-turn conversation by a simulated user (the engine, the user LM given the whole task as its
intent). The report gives the assistant's task score in both settings, the drop from one to the
other, and the simulation statistics of the paper's Table 3 for the simulated run. The paper's
figures for GPT-4o as the assistant are listed for reference: 74.6% of sharded math and code tasks
solved with GPT-4o prompted to play the user, 57.4% with UserLM-8b as the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from userloop.files import write_atomic
from userloop.progress import Progress, no_progress
from userloop.simulate.runs import SimulationConfig, flatten, format_value, simulate

SETTINGS = ("single_turn", "multi_turn")
PAPER_REFERENCE = {
    "source": "Flipping the Dialogue (arXiv 2510.06552): GPT-4o as the assistant on sharded math and code tasks",
    "solved_with_prompted_gpt4o_user": 0.746,
    "solved_with_userlm8b_user": 0.574,
}


def evaluate_assistant(assistant: str, user: str, scenarios: str | Path, out: str | Path, *, n: int = 1,
                       force: bool = False, progress: Progress = no_progress, **options: Any) -> dict[str, Any]:
    """Run both settings into ``out/single_turn`` and ``out/multi_turn`` (each a resumable run folder)
    and write ``out/report.json`` and ``out/report.md``; returns the report.

    ``options`` are further :class:`SimulationConfig` fields (seed, max_user_turns, system_prompt,
    classifier, ...); ``progress`` shows each setting's run, named single-turn and multi-turn."""
    import orjson

    out = Path(out)
    summaries = {}
    for setting in SETTINGS:
        config = SimulationConfig(assistant=assistant, user=user if setting == "multi_turn" else None,
                                  scenarios=str(scenarios), n=n, **options)
        summaries[setting] = simulate(config, out / setting, force=force,
                                      progress=_named(progress, setting.replace("_", "-"))).summary
    report = build_report(summaries["single_turn"], summaries["multi_turn"])
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_atomic(out / "report.md", report_markdown(report))
    return report


def _named(progress: Progress, name: str) -> Progress:
    """``progress`` with every step called ``name``."""
    return lambda description, total=None: progress(name, total)


def build_report(single: dict, multi: dict) -> dict[str, Any]:
    """Task scores per setting (overall and per kind), the drop in points, Table-3 statistics, references."""
    groups = {"overall": (single["overall"], multi["overall"])}
    for kind in sorted(set(single["by_kind"]) | set(multi["by_kind"])):
        groups[kind] = (single["by_kind"].get(kind), multi["by_kind"].get(kind))
    scores = {}
    for name, (one, many) in groups.items():
        solved_one, solved_many = (one or {}).get("solved"), (many or {}).get("solved")
        if solved_one is None and solved_many is None:
            continue  # open scenarios: no checker, no score
        drop = (solved_one["rate"] - solved_many["rate"]) if solved_one and solved_many else None
        scores[name] = {"single_turn": solved_one, "multi_turn": solved_many, "drop_points": drop * 100 if drop is not None else None}
    return {
        "assistant": multi["assistant"], "user": multi["user"], "scenarios": multi["scenarios"], "n": multi["n"],
        "scores": scores,
        "multi_turn_user_turns": multi["overall"]["user_turns"],
        "simulation_statistics": multi.get("simulation_statistics"),
        "paper_reference": PAPER_REFERENCE,
    }


def _rate(solved: dict | None) -> str:
    if not solved:
        return "-"
    low, high = solved["ci95"]
    return f"{solved['rate']:.1%} [{low:.1%}, {high:.1%}] ({solved['solved']}/{solved['scored']})"


def report_markdown(report: dict) -> str:
    """The report as Markdown: scores per setting, the drop, Table-3 statistics and the paper's figures."""
    lines = ["# Assistant evaluation: single-turn vs simulated multi-turn", "",
             (f"assistant: `{report['assistant']}`, simulated user: `{report['user']}`, "
             f"scenarios: `{report['scenarios']}`, n: {report['n']}"), "",
             "| group | single-turn solved (95% CI) | multi-turn solved (95% CI) | drop (points) |", "|---|---|---|---|"]
    for name, score in report["scores"].items():
        drop = f"{score['drop_points']:+.1f}" if score["drop_points"] is not None else "-"
        lines.append(f"| {name} | {_rate(score['single_turn'])} | {_rate(score['multi_turn'])} | {drop} |")
    turns = report["multi_turn_user_turns"]
    if turns:
        lines += ["", (f"Simulated user turns: mean {turns['mean']:.2f}, variance {turns['variance']:.2f}, "
                      f"range {turns['min']}-{turns['max']}.")]
    stats = report.get("simulation_statistics")
    if stats:
        lines += ["", "Simulation statistics (UserLM paper, Table 3):", "", "| statistic | value |", "|---|---|"]
        lines += [f"| {k} | {format_value(v)} |" for k, v in flatten(stats)]
    ref = report["paper_reference"]
    lines += ["", (f"Reference ({ref['source']}): {ref['solved_with_prompted_gpt4o_user']:.1%} solved with a prompted "
                  f"GPT-4o user, {ref['solved_with_userlm8b_user']:.1%} with UserLM-8b as the user.")]
    return "\n".join(lines) + "\n"
