"""What the ``userloop`` commands show: progress bars on stderr, tables, ``--json`` output and summary lines.

The command-line layer: the library reports through :mod:`userloop.progress`, and this module draws its
:class:`~userloop.progress.Progress` with rich (imported here only, when a command runs). Bars are on stderr and
transient unless kept, so an error stays the only line there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Self

import typer

from userloop.progress import Progress, Task


def echo_json(value: Any) -> None:
    """``--json``: the value as indented JSON on stdout."""
    import orjson

    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


class _Bar(Task):
    """A :class:`Task` drawn as one row of a rich progress display."""

    def __init__(self, bars, task_id) -> None:
        self.bars, self.task_id = bars, task_id
        self.started, self.turns = time.perf_counter(), 0

    def start(self, total: int | None, note: str = "", completed: int = 0) -> None:
        self.bars.update(self.task_id, total=total or None, completed=completed, note=note)

    def advance(self, n: int = 1) -> None:
        self.bars.advance(self.task_id, n)

    def set(self, completed: int, total: int | None) -> None:
        self.bars.update(self.task_id, completed=completed, total=total)

    def count(self, n: int) -> None:
        self.turns += n
        rate = self.turns / max(time.perf_counter() - self.started, 1e-6)
        self.bars.update(self.task_id, rate=f"{rate:,.1f} turns/s")

    def print(self, message: str) -> None:
        self.bars.console.print(message, soft_wrap=True, markup=False)


@contextmanager
def bars(keep: bool = False, log_to: str | Path | None = None) -> Iterator[Progress]:
    """The command line's :class:`Progress`: one bar per step (done/total, note, rate, times) on stderr.

    A bar appears when its step starts (an error found before stays the only line) and goes when it ends;
    ``keep`` leaves each finished step as a line (the demo's stages). With ``log_to`` the libraries' warnings
    and logs go to that folder's log.txt meanwhile (:func:`userloop.logs.library_log`), not between the bars."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    columns = [TextColumn("{task.description:<40}" if keep else "{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    display = RichProgress(*columns, *([] if keep else [TimeRemainingColumn()]), console=Console(stderr=True),
                           transient=not keep)

    @contextmanager
    def step(description: str, total: int | None = None) -> Iterator[Task]:
        display.start()
        task_id = display.add_task(description, total=total or None, note="", rate="")
        try:
            yield _Bar(display, task_id)
        finally:
            if keep:
                done = display.tasks[task_id].total or 1
                display.update(task_id, total=done, completed=done)
                display.stop_task(task_id)
            else:
                display.remove_task(task_id)

    from userloop.logs import library_log

    try:
        with library_log(log_to) if log_to is not None else nullcontext():
            yield step
    finally:
        if display.live.is_started:
            display.stop()


class Counter:
    """Progress of a stream of unknown length: count, rate, elapsed (on stderr, transient); ``advance`` is its
    ``on_progress`` callback."""

    def __init__(self, description: str) -> None:
        from rich.console import Console
        from rich.progress import Progress as RichProgress
        from rich.progress import ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{task.speed:,.0f}/s" if task.speed else "")

        self.display = RichProgress(SpinnerColumn(), TextColumn(description), TextColumn("{task.completed:,} conversations"),
                                    Rate(), TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.task_id = self.display.add_task(description, total=None)

    def advance(self, n: int) -> None:
        self.display.advance(self.task_id, n)

    def stop(self) -> None:
        self.display.stop()

    def __enter__(self) -> Self:
        self.display.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def training(trainer_out: str | Path) -> Iterator[_Bar]:
    """A trainer's bar of updates (``set`` is its ``on_progress``, ``print`` its ``on_message``); the libraries'
    warnings and logs go to ``trainer_out``/log.txt."""
    with bars(log_to=trainer_out) as progress, progress("training") as bar:
        yield bar


def run_training(train, config):
    """Run ``train(config, on_progress, on_message)`` under :func:`training`'s bar; returns what it returns.
    Under ``accelerate launch``, the process group ends with the command."""
    from userloop.train.common import end_process_group

    try:
        with training(config.out) as bar:
            return train(config, on_progress=bar.set, on_message=bar.print)
    finally:
        end_process_group()


# --------------------------------------------------------------------------- summaries
def viewer_ready(counter: Counter):
    """The viewer's ``on_ready(url, index)``: the indexing counter goes, a line says what is served where."""

    def ready(url: str, index) -> None:
        counter.stop()
        overview = index.overview()
        typer.echo(f"viewing {overview['conversations']:,} conversations ({overview['real']:,} real, "
                   f"{overview['simulated']:,} simulated, {overview['unreadable']:,} unreadable records) at {url} ; "
                   "Ctrl-C stops")
        sys.stdout.flush()

    return ready


def serving(spec: str, config):
    """``userloop serve``'s ``on_ready(url, model_name)``: one line on stderr once the server listens."""
    kind = "user simulator" if config.simulator else "model"
    required = " (API key required)" if config.api_key or config.api_key_env else ""

    def ready(url: str, name: str) -> None:
        typer.echo(f"serving {spec} as {kind} {name!r} at {url}{required}; Ctrl-C stops", err=True)

    return ready


def personas_summary(counts: dict, out: Path, min_conversations: int) -> None:
    typer.echo(f"wrote {counts['written']:,} personas to {out} ({counts['users']:,} users, "
               f"{counts['users_with_enough_history']:,} with at least {min_conversations} conversations)")


def assistant_eval_summary(report_markdown: str, out: Path) -> None:
    typer.echo(report_markdown, nl=False)
    typer.echo(f"wrote {out}/ (single_turn/, multi_turn/, report.json, report.md)")


def eval_sim_summary(out: Path) -> None:
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/ (metrics.json, details.json, table.md, charts/)")


def validity_summary(report: dict, out: Path, as_json: bool) -> None:
    """eval-validity: report.json (``--json``) or its tables (report.md) and where the files are."""
    if as_json:
        return echo_json(report)
    typer.echo((out / "report.md").read_text(), nl=False)
    typer.echo(f"wrote {out}/ (report.json, report.md, scenarios.jsonl, runs/)")


def prepare_summary(report: dict, out: Path) -> None:
    conversations, lines = report["conversations"], report["lines"]
    dropped = ", ".join(f"{k} {v:,}" for k, v in conversations["dropped"].items() if v) or "none"
    typer.echo(f"read {lines['lines_read']:,} lines: {conversations['read']:,} conversations, {lines['bad_lines']:,} bad lines"
               + (f" (see {out / 'bad_lines.jsonl'})" if lines["bad_lines"] else ""))
    typer.echo(f"dropped: {dropped}")
    typer.echo("kept: " + ", ".join(f"{name} {s['conversations']:,} conversations / {s['users']:,} users"
                                    for name, s in report["splits"].items()))
    typer.echo(f"wrote {out}/ in {report['seconds']:.1f}s (report.json has the full accounting)")


def stats_tables(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for group, s in summary.items():
        table = Table(title=f"{group}: {s['conversations']:,} conversations, {s['users']:,} users", show_header=False)
        table.add_row("lines read / bad", f"{s['lines_read']:,} / {s['bad_lines']:,}")
        for label, key in (("user turns per conversation", "user_turns_per_conversation"),
                           ("characters per user turn", "characters_per_user_turn")):
            v = s[key]
            table.add_row(label, f"mean {v['mean']}, median {v['median']}, p95 {v['p95']}, max {v['max']}")
        table.add_row("ending on a user turn", f"{s['conversations_ending_on_a_user_turn']:,}")
        for label in ("languages", "countries", "sources"):
            table.add_row(label, ", ".join(f"{k} {v:,}" for k, v in s[label].items()))
        if s["bad_lines_by_reason"]:
            table.add_row("bad lines by reason", ", ".join(f"{k} {v:,}" for k, v in s["bad_lines_by_reason"].items()))
        console.print(table)


def testbed_summary(out: Path) -> None:
    import orjson

    s = orjson.loads((out / "summary.json").read_bytes())
    ends = ", ".join(f"{k} {v:.0%}" for k, v in s["end_reasons"].items())
    typer.echo(f"wrote {s['users']:,} users and {s['conversations']:,} conversations to {out}/ "
               f"({s['conversations_per_user']['mean']} per user, {s['user_turns_per_conversation']['mean']} user turns each)")
    typer.echo(f"feedback in {s['share_of_conversations_with_feedback']:.0%} of conversations; ends: {ends}; "
               f"first-turn diversity {s['first_turn_diversity']}")


def intents_summary(report: dict, out: Path) -> None:
    r = report["intents"]
    typer.echo(f"{r['conversations']:,} conversations: kept {r['kept']:,}, written by the model {r['written_by_model']:,} "
               f"({r['written_by_model_after_retry']:,} after a retry), offline rules {r['offline_fallback']:,}, "
               f"invalid twice then offline rules {r['invalid_then_offline_fallback']:,}")
    typer.echo(f"wrote {out}/ (report.json has the counts under 'intents')")


def rlhi_build_summary(report: dict, out: Path) -> None:
    f, p, r = report["followups"], report["personas"], report["rewrites"]
    typer.echo(f"{report['conversations']:,} conversations: {f['followups']:,} follow-ups, {f['with_negative_feedback']:,} with "
               f"negative feedback ({f['share_of_conversations_with_negative_feedback']:.1%} of conversations)")
    typer.echo(f"personas: {p['written']:,} of {p['users']:,} users (at least {p['min_conversations']} conversations)")
    typer.echo(f"rewrites: {r['candidates']:,} candidates, {r['attempted']:,} attempted, {r['passed_filter']:,} passed the filter; "
               f"{report['pairs']:,} pairs")
    typer.echo(f"wrote {out}/ in {report['seconds']:.1f}s (report.json has every count)")


def rlhi_evaluation_tables(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for name in ("testbed", "handmade_cv", "oasst"):
        if name not in report:
            continue
        for axis in ("relation", "feedback_type"):
            t = report[name][axis]
            table = Table(title=f"{name}: {axis} (n {t['n']:,}, accuracy {t['accuracy']}, macro F1 {t['macro_f1']})")
            for column in ("class", "precision", "recall", "F1", "support"):
                table.add_column(column)
            for label, v in t["per_class"].items():
                table.add_row(label, str(v["precision"]), str(v["recall"]), str(v["f1"]), str(v["support"]))
            console.print(table)
        console.print(f"{name}: feedback span {report[name]['feedback_span']}")
    personas = report["personas"]
    table = Table(title=f"personas of {personas['users']:,} testbed users")
    for column in ("field", "accuracy", "majority baseline"):
        table.add_column(column)
    for field_name, v in personas["fields"].items():
        if field_name == "domains":
            table.add_row("domains", f"exact set {v['exact_set']}, mean Jaccard {v['mean_jaccard']}", "")
        else:
            table.add_row(field_name, str(v["accuracy"]), f"{v['majority_baseline']} ({v['majority_class']})")
    console.print(table)
    for key, v in personas["population_shares"].items():
        console.print(f"share {key}: derived {v['derived']:.1%}, truth {v['truth']:.1%}, RLHI on WildChat {v['paper_wildchat']:.1%}")


def user_lm_training_summary(result) -> None:
    r = result.report
    typer.echo(f"trained {r['steps']:,} updates ({r['epochs']:.2f} epochs, {r['parameters']:,} parameters) in {r['seconds']:.0f}s: "
               f"validation loss {r['validation_loss']:.3f} nats/token, unigram baseline {r['unigram_baseline']:.3f}")
    typer.echo(f"wrote {result.out}/ (model, tokenizer, loss_curve.png, train_report.json)")


def dpo_summary(result, config) -> None:
    r = result.report
    if config.online:
        for row in r["rounds"]:
            typer.echo(f"round {row['round']}: mean score {row['mean_score']:.4f} over {row['samples']:,} samples"
                       + (f", {row['pairs']:,} pairs, loss {row['train_loss']:.4f}" if row["round"] != "final" else "")
                       + (f", reward accuracy {row['reward_accuracy_mean']:.3f}" if "reward_accuracy_mean" in row else ""))
    else:
        typer.echo(f"{config.method}: {r['steps']:,} updates on {r['pairs']:,} pairs in {r['seconds']:.0f}s, loss {r['train_loss']:.4f}"
                   + (f", reward accuracy {r['reward_accuracy_mean']:.3f}, margin {r['reward_margin_mean']:.3f} (means over the logs)"
                      if "reward_accuracy_mean" in r else ""))
    typer.echo(f"wrote {result.out}/ (policy, tokenizer, dpo_report.json)")


def reward_model_summary(result) -> None:
    r = result.report
    typer.echo(f"trained {r['steps']:,} updates on {r['train_pairs']:,} pairs ({'with' if r['persona'] else 'without'} the persona) "
               f"in {r['seconds']:.0f}s: held-out pair accuracy {r['held_out_accuracy']:.3f} on {r['held_out_pairs']:,} pairs"
               + (f", {r['held_out_accuracy_persona_removed']:.3f} with the persona removed" if "held_out_accuracy_persona_removed" in r else "")
               + (f"; persona-blind bound {r['population_oracle_accuracy']:.3f}" if "population_oracle_accuracy" in r else ""))
    typer.echo(f"wrote {result.out}/ (reward model, tokenizer, reward_report.json); score with --scorer rm:{result.out}")


def policy_data_summary(counts: dict, out: Path) -> None:
    typer.echo(", ".join(f"{split} {c['with_persona']:,} of {c['conversations']:,} conversations with a persona"
                         for split, c in counts["splits"].items()))
    typer.echo(f"wrote {out}/ (train it with: userloop train assistant --data {out} --out CKPT)")


def rewards_summary(report: dict, out: Path) -> None:
    typer.echo(f"{report['requests_used']:,} requests without feedback ({report['requests']['requests_without_feedback']:,} found), "
               f"{report['candidates']:,} candidates scored by {report['scorer']}: mean {report['mean_score']}, "
               f"best {report['mean_best']}, worst {report['mean_worst']}")
    typer.echo(f"{report['pairs']:,} pairs ({report['skipped_all_tied']:,} requests skipped: all candidates tied); "
               f"wrote {out}/ in {report['seconds']:.1f}s")


def loop_summary(report: dict, out: Path) -> None:
    for r in report["rounds"]:
        e = r["eval"]
        pairs = f"{r['pairs']['total']:,} pairs, " if "pairs" in r else ""
        typer.echo(f"round {r['round']}: {pairs}persona match {e['persona_match']}, task success {e['task_success']}, "
                   f"held-out feedback rate {e['feedback_rate']}")
    typer.echo(f"wrote {out}/ (report.md: roles, guard, per-round table)")


def anchors_summary(report: dict, out: Path) -> None:
    by_family = ", ".join(f"{family} {passed}/{tried}" for family, (passed, tried) in report["by_family"].items())
    typer.echo(f"{report['passed']:,} of {report['tried']:,} answers passed their task's check ({by_family})")
    typer.echo(f"wrote {out} and {report['report']}")


def usereval_summary(report: dict, out: Path) -> None:
    typer.echo(f"{report['requests_used']:,} requests of held-out users, judge {report['judge']}:")
    for name in ("personalisation", "overall"):
        s = report[name]
        typer.echo(f"  {name:<16} win rate {s['win_rate']:.3f} (95% CI {s['ci95'][0]:.3f}-{s['ci95'][1]:.3f}; "
                   f"{s['wins']:,} wins, {s['ties']:,} ties, {s['losses']:,} losses, {s['inconsistent_orders']:,} inconsistent orders)")
    if "mean_persona_match" in report:
        m = report["mean_persona_match"]
        typer.echo(f"  mean persona-match score: policy {m['policy']:.4f}, baseline {m['baseline']:.4f}")
    typer.echo(f"wrote {out}/ in {report['seconds']:.1f}s")


def perplexity_summary(result: dict, checkpoint: Path, split: str) -> None:
    typer.echo(f"user-turn perplexity of {checkpoint} on {result['turns_scored']:,} user turns of "
               f"{result['conversations_scored']:,} {split} conversations ({result['turns_not_scored']:,} turns beyond --max-length, "
               f"{result['empty_turns_not_scored']:,} empty turns not scored):")
    for name, label in (("with_intent", "with intent"), ("without_intent", "without intent")):
        typer.echo(f"  {label:<15} {result[name]['perplexity']:8.2f}  ({result[name]['tokens']:,} tokens)")


def simulation_summary(result) -> None:
    s, resume = result.summary, result.summary["resume"]
    solved, errored = s["overall"]["solved"], s["overall"]["end_reasons"]["error"]
    typer.echo(f"{s['conversations']:,} conversations ({result.finished_now:,} new, {result.resumed:,} from earlier runs, "
               f"{result.torn_lines} torn line repaired, {resume['pending']:,} still to run)"
               + (f": solved {solved['solved']:,}/{solved['scored']:,} ({solved['rate']:.1%})" if solved else ""))
    typer.echo("end reasons: " + ", ".join(f"{k} {v:,}" for k, v in s["overall"]["end_reasons"].items()))
    if errored:
        typer.echo(f"errors: {errored:,} of {s['conversations']:,} conversations ended in error; "
                   f"the first: {s['overall']['first_error']}")
    from userloop.metrics.run_realism import realism_line  # not at the top: `userloop --help` stays fast

    if s.get("tool_tasks"):
        tools = s["tool_tasks"]
        typer.echo(f"tool tasks: {tools['tasks']:,} tasks, {tools['trials']:,} trials; "
                   + ", ".join(f"pass^{k} {value:.3f}" for k, value in tools["pass_hat_k"].items()))
        typer.echo("per task (successes/trials): " + ", ".join(
            f"{row['scenario_id']} {row['successes']}/{row['trials']}" for row in tools["per_task"]))
    if s.get("realism"):
        typer.echo(realism_line(s["realism"]))
    tokens = s["overall"]["tokens"]
    typer.echo("tokens (prompt/completion): " + "; ".join(
        f"{role} {count['prompt']:,}/{count['completion']:,}" for role, count in tokens.items()))
    if s.get("cost"):
        cost = s["cost"]
        typer.echo("cost: " + ", ".join(f"{role} {part['total']:.4g}" for role, part in cost["by_role"].items())
                   + f"; total {cost['total']:.4g}" + (f" ({cost['per_conversation']:.4g} per conversation)"
                                                        if cost["per_conversation"] is not None else "")
                   + f" (prices per 1M tokens: {cost['prices']})")
    typer.echo(f"wrote {result.out}/ (conversations.jsonl, summary.json, summary.md)")


def merge_summary(summary: dict, out: Path) -> None:
    solved = summary["overall"]["solved"]
    typer.echo(f"merged {len(summary['merged_from'])} shards: {summary['conversations']:,} conversations, each "
               "(scenario, sample) once" + (f"; solved {solved['solved']:,}/{solved['scored']:,} ({solved['rate']:.1%})"
                                            if solved else ""))
    typer.echo(f"wrote {out}/ (conversations.jsonl, run.json, summary.json, summary.md)")


def persona_sim_summary(report: dict, out: Path) -> None:
    def optional(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for name, entry in report["fields"].items():
        typer.echo(f"{name}: " + "; ".join(
            f"{simulator} mean R where it matters {optional(s['summary']['mean_reproduction_where_it_matters'])} "
            f"({s['summary']['statistics_that_matter']} statistics)" for simulator, s in entry["simulators"].items()))
    typer.echo(f"wrote {out}/ (report.json, report.md, sim-*/)")


def scenarios_summary(result, out: Path) -> None:
    report = result.to_dict()
    skipped = ", ".join(f"{reason}: {count}" for reason, count in report["skipped_by_reason"].items())
    kinds = ", ".join(sorted({scenario.kind for scenario in result.scenarios}))
    typer.echo(f"wrote {report['scenarios']:,} scenarios ({kinds}) to {out} from {report['records_read']:,} records of "
               f"{result.source}; skipped {report['skipped']:,}" + (f" ({skipped})" if skipped else "")
               + (f"; {result.not_drawn:,} not drawn by --limit" if result.not_drawn else "")
               + (f"; {result.renamed:,} reused task ids renamed ID#2, ID#3..." if result.renamed else ""))


def demo_summary(manifest: dict, report: Path, out: str) -> None:
    for stage in manifest["stages"]:
        peak = stage.get("peak_rss_mb")  # absent in manifests of earlier versions; None where not measured
        memory = f"{peak:>6,.0f} MB" if peak is not None else " " * 9
        typer.echo(f"{stage['title']:<40} {stage['status']:<8} {stage['seconds']:>7.1f}s {memory}  {stage['detail']}")
    typer.echo(f"report: {report} (open it in a browser; {Path(out) / 'manifest.json'} lists every output)")
    typer.echo(f"browse the conversations: userloop view {out}")
