"""The ``userloop`` command: a thin typer layer; each command calls one library function.

Heavy libraries are imported inside the commands, so ``userloop --help`` stays fast. Errors a
user can cause (:class:`userloop.errors.UserError`) print one line and exit with status 2.
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from userloop import __version__
from userloop.errors import UserError

app = typer.Typer(help="userloop: model the users of chat assistants.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Read, prepare and summarise chat logs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
testbed_app = typer.Typer(help="The built-in population of simulated users with known ground truth.", no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")


def _help(field_name: str) -> str:
    from userloop.data.prepare import PrepareConfig

    return next(f.metadata["help"] for f in fields(PrepareConfig) if f.name == field_name)


def friendly_errors(command):
    """Turn user-caused errors into one line on stderr (exit 2) and Ctrl-C into exit 130.

    File-system errors on paths the user gave (an --out that is a file, no permission, disk full) are
    user-caused too: one line naming the path."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            typer.echo(f"error: {where}{err.strerror or err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _counter(description: str):
    """A progress display for a stream of unknown length: count, rate, elapsed (on stderr).

    Transient: it is cleared when the command ends, so an error stays the only line on stderr
    (a non-terminal stderr would otherwise get the final progress line printed before it)."""
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f}/s" if task.speed else "")

    return Progress(SpinnerColumn(), TextColumn(description), TextColumn("{task.completed:,} conversations"),
                    Rate(), TimeElapsedColumn(), console=Console(stderr=True), transient=True)


@contextmanager
def _bar(description: str, total: int):
    """A progress bar with a known total (on stderr, transient); yields (progress, task)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        yield progress, progress.add_task(description, total=total)


def _default_data(prepared: bool) -> Path:
    """The built-in testbed (generated into the cache on first use), with a note on stderr."""
    from userloop.testbed.population import default_data

    path = default_data(prepared=prepared)
    typer.echo(f"no data given: using the built-in testbed at {path}", err=True)
    return path


def _version(value: bool) -> None:
    if value:
        typer.echo(f"userloop {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")] = False) -> None:
    """userloop: model the users of chat assistants."""


@data_app.command("prepare")
@friendly_errors
def prepare_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: train/validation/test.parquet, report.json, bad_lines.jsonl")],
    inputs: Annotated[list[str] | None, typer.Argument(help="files (.jsonl, .jsonl.gz, .json, .parquet), folders of shards, or dataset ids (hf:NAME[:SPLIT]); default: the built-in testbed")] = None,
    language: Annotated[str, typer.Option(help=_help("language"))] = "English",
    drop_toxic: Annotated[bool, typer.Option("--drop-toxic/--keep-toxic", help=_help("drop_toxic"))] = True,
    drop_redacted: Annotated[bool, typer.Option("--drop-redacted/--keep-redacted", help=_help("drop_redacted"))] = False,
    drop_synthetic: Annotated[bool, typer.Option("--drop-synthetic/--keep-synthetic", help=_help("drop_synthetic"))] = True,
    min_user_turns: Annotated[int, typer.Option(help=_help("min_user_turns"))] = 1,
    max_user_turns: Annotated[int, typer.Option(help=_help("max_user_turns"))] = 100,
    max_turn_chars: Annotated[int, typer.Option(help=_help("max_turn_chars"))] = 10_000,
    exact_dedupe: Annotated[bool, typer.Option("--exact-dedupe/--no-exact-dedupe", help=_help("exact_dedupe"))] = True,
    near_dedupe: Annotated[bool, typer.Option("--near-dedupe/--no-near-dedupe", help=_help("near_dedupe"))] = True,
    near_dup_threshold: Annotated[float, typer.Option(help=_help("near_dup_threshold"))] = 0.8,
    user_identity: Annotated[str, typer.Option(help=_help("user_identity"))] = "user+agent",
    splits: Annotated[str, typer.Option(help=_help("splits"))] = "90/5/5",
    seed: Annotated[int, typer.Option(help=_help("seed"))] = 0,
    format: Annotated[str | None, typer.Option("--format", help=_help("format"))] = None,
    strict: Annotated[bool, typer.Option("--strict", help=_help("strict"))] = False,
    workers: Annotated[int, typer.Option(help=_help("workers"))] = 0,
) -> None:
    """Filter, dedupe and split chat logs into Parquet (the UserLM paper's recipe)."""
    from userloop.data.prepare import PrepareConfig, prepare
    from userloop.data.sources import expand_inputs

    config = PrepareConfig(
        language=None if language.lower() == "any" else language, drop_toxic=drop_toxic, drop_redacted=drop_redacted,
        drop_synthetic=drop_synthetic, min_user_turns=min_user_turns, max_user_turns=max_user_turns,
        max_turn_chars=max_turn_chars, exact_dedupe=exact_dedupe, near_dedupe=near_dedupe,
        near_dup_threshold=near_dup_threshold, user_identity=user_identity, splits=splits, seed=seed,
        format=format, strict=strict, workers=workers,
    )
    config.validate()
    inputs = inputs or [str(_default_data(prepared=False) / "conversations.jsonl")]
    expand_inputs(inputs)  # a missing input is reported before any work starts
    with _counter("preparing") as progress:
        task = progress.add_task("prepare", total=None)
        result = prepare(inputs, out, config, on_progress=lambda n: progress.advance(task, n))
    _print_prepare_summary(result.report, result.out)


def _print_prepare_summary(report: dict, out: Path) -> None:
    conversations, lines = report["conversations"], report["lines"]
    dropped = ", ".join(f"{k} {v:,}" for k, v in conversations["dropped"].items() if v) or "none"
    typer.echo(f"read {lines['lines_read']:,} lines: {conversations['read']:,} conversations, {lines['bad_lines']:,} bad lines"
               + (f" (see {out / 'bad_lines.jsonl'})" if lines["bad_lines"] else ""))
    typer.echo(f"dropped: {dropped}")
    typer.echo("kept: " + ", ".join(f"{name} {s['conversations']:,} conversations / {s['users']:,} users"
                                    for name, s in report["splits"].items()))
    typer.echo(f"wrote {out}/ in {report['seconds']:.1f}s (report.json has the full accounting)")


@data_app.command("stats")
@friendly_errors
def stats_command(
    paths: Annotated[list[str] | None, typer.Argument(help="inputs as for 'prepare', or a prepared folder; default: the built-in testbed, prepared")] = None,
    format: Annotated[str | None, typer.Option("--format", help="force the input format")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Summarise conversations: counts, turns, lengths, languages, users."""
    import orjson

    from userloop.data.sources import expand_inputs
    from userloop.data.stats import stats

    paths = paths or [str(_default_data(prepared=True))]
    expand_inputs(paths)
    with _counter("reading") as progress:
        task = progress.add_task("stats", total=None)
        summary = stats(paths, fmt=format, on_progress=lambda n: progress.advance(task, n))
    if as_json:
        typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    _print_stats(summary)


def _print_stats(summary: dict) -> None:
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


@data_app.command("synthetic")
@friendly_errors
def synthetic_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="file to write (.jsonl or .jsonl.gz)")],
    n: Annotated[int, typer.Option("--n", help="number of conversations")] = 5000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Write random conversations in the WildChat layout (for trying the pipeline; no behaviour)."""
    from userloop.data.synthetic import write_wildchat

    if n < 1:
        raise UserError("--n must be at least 1")
    write_wildchat(out, n, seed)
    typer.echo(f"wrote {n:,} WildChat-layout conversations to {out}")


@testbed_app.command("generate")
@friendly_errors
def testbed_generate_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for conversations.jsonl, truth.jsonl and summary.json")],
    users: Annotated[int, typer.Option("--users", help="number of simulated users")] = 2000,
    seed: Annotated[int, typer.Option(help="random seed (the same seed gives the same population)")] = 0,
) -> None:
    """Generate simulated users with known personas and their conversations (WildChat layout) plus the truth."""
    from userloop.testbed import generate

    with _bar("generating users", users) as (progress, task):
        population = generate(users, seed, on_progress=lambda n: progress.advance(task, n))
    population.write(out)
    _print_testbed_summary(out)


def _print_testbed_summary(out: Path) -> None:
    import orjson

    s = orjson.loads((out / "summary.json").read_bytes())
    ends = ", ".join(f"{k} {v:.0%}" for k, v in s["end_reasons"].items())
    typer.echo(f"wrote {s['users']:,} users and {s['conversations']:,} conversations to {out}/ "
               f"({s['conversations_per_user']['mean']} per user, {s['user_turns_per_conversation']['mean']} user turns each)")
    typer.echo(f"feedback in {s['share_of_conversations_with_feedback']:.0%} of conversations; ends: {ends}; "
               f"first-turn diversity {s['first_turn_diversity']}")


@app.command("serve")
@friendly_errors
def serve_command(
    spec: Annotated[str, typer.Argument(help="model to serve: hf:PATH_OR_HUB_ID (or scripted:FILE.json for demos)")],
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port, printed at start)")] = 8000,
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 exposes the server beyond this machine")] = "127.0.0.1",
    api_key_env: Annotated[str | None, typer.Option(help="environment variable holding the API key clients must send")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key clients must send (other users can see command lines: prefer --api-key-env)")] = None,
    model_name: Annotated[str | None, typer.Option(help="model id clients ask for (default: SPEC without its prefix)")] = None,
    device: Annotated[str, typer.Option(help="hf: auto, cpu, cuda, cuda:N or mps")] = "auto",
    dtype: Annotated[str, typer.Option(help="hf: auto (bf16 on GPUs that support it, fp16 on others, float32 on CPU), float32, bfloat16, float16")] = "auto",
    max_batch_size: Annotated[int, typer.Option(help="hf: most conversations generated together")] = 64,
) -> None:
    """Serve a model over the OpenAI chat-completions API (/v1/chat/completions, /v1/models, /health)."""
    import os

    from userloop.models.registry import parse_spec

    prefix, _ = parse_spec(spec)
    if prefix not in ("hf", "scripted"):
        raise UserError(f"serve takes hf: or scripted: models, not {prefix}: ({prefix}: models are already served elsewhere)")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {port}")
    if api_key_env and api_key:
        raise UserError("give either --api-key-env or --api-key, not both")
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {api_key_env}: that environment variable is not set")
    options = {"device": device, "dtype": dtype, "max_batch_size": max_batch_size} if prefix == "hf" else {}
    from userloop.models.serve import serve

    def announce(url: str, name: str) -> None:
        typer.echo(f"serving {spec} as model {name!r} at {url}{' (API key required)' if api_key else ''}; "
                   "Ctrl-C stops", err=True)

    serve(spec, host=host, port=port, api_key=api_key, model_name=model_name, on_ready=announce, **options)


@app.command("intents")
@friendly_errors
def intents_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: a copy of DATA (same splits) with every conversation's intent filled")],
    data: Annotated[Path | None, typer.Option("--data", help="a folder written by 'userloop data prepare' (default: the built-in testbed, prepared)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="model that writes the intents (hf:, openai:, vllm:, scripted:); without it, the offline rules")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace intents the conversations already carry (the testbed's are true ones)")] = False,
    seed: Annotated[int, typer.Option(help="sampling seed of the model")] = 0,
) -> None:
    """Write one high-level intent per conversation, as the UserLM paper conditions its user LM."""
    from userloop.userlm.intents import count_conversations, write_intents

    data = data or _default_data(prepared=True)
    with _bar("writing intents", count_conversations(data)) as (progress, task):
        result = write_intents(data, out, model=model, overwrite=overwrite, seed=seed,
                               on_progress=lambda n: progress.advance(task, n))
    r = result.report["intents"]
    typer.echo(f"{r['conversations']:,} conversations: kept {r['kept']:,}, written by the model {r['written_by_model']:,} "
               f"({r['written_by_model_after_retry']:,} after a retry), offline rules {r['offline_fallback']:,}, "
               f"invalid twice then offline rules {r['invalid_then_offline_fallback']:,}")
    typer.echo(f"wrote {result.out}/ (report.json has the counts under 'intents')")


def _guardrail_help(name: str) -> str:
    from userloop.userlm.simulator import GUARDRAIL_HELP

    return GUARDRAIL_HELP[name]


@app.command("user-turn")
@friendly_errors
def user_turn_command(
    user: Annotated[str, typer.Option("--user", help="the user LM: hf:PATH, openai:MODEL@URL (served with the UserLM chat template), scripted:FILE.json")],
    intent: Annotated[str, typer.Option("--intent", help="the task intent (the system message), e.g. 'You are a user chatting with an assistant language model to ...'")],
    history: Annotated[Path | None, typer.Option("--history", help="JSON file: a list of messages (user first, alternating, ending with the assistant) or an object with 'messages'")] = None,
    filter_first_tokens: Annotated[bool, typer.Option("--filter-first-tokens/--no-filter-first-tokens", help=_guardrail_help("filter_first_tokens"))] = True,
    avoid_termination: Annotated[bool, typer.Option("--avoid-termination/--no-avoid-termination", help=_guardrail_help("avoid_termination"))] = True,
    avoid_termination_turns: Annotated[str, typer.Option(help="how many user turns may not end the conversation: a number, or 'always'")] = "2",
    end_token_ids: Annotated[list[int] | None, typer.Option("--end-token-id", help=_guardrail_help("end_token_ids"))] = None,
    length_thresholds: Annotated[bool, typer.Option("--length-thresholds/--no-length-thresholds", help=_guardrail_help("length_thresholds"))] = True,
    min_words: Annotated[int, typer.Option(help=_guardrail_help("min_words"))] = 3,
    max_words: Annotated[int, typer.Option(help=_guardrail_help("max_words"))] = 25,
    filter_repetition: Annotated[bool, typer.Option("--filter-repetition/--no-filter-repetition", help=_guardrail_help("filter_repetition"))] = True,
    max_attempts: Annotated[int, typer.Option(help=_guardrail_help("max_attempts"))] = 8,
    samples_per_call: Annotated[int, typer.Option(help=_guardrail_help("samples_per_call"))] = 2,
    seed: Annotated[int | None, typer.Option(help="sampling seed (the same seed gives the same turn)")] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature (model card: 1.0)")] = 1.0,
    top_p: Annotated[float, typer.Option(help="nucleus sampling (model card: 0.8)")] = 0.8,
    max_new_tokens: Annotated[int, typer.Option(help="most tokens per sample")] = 96,
) -> None:
    """Write the user's next turn and print {"text", "ended", "events"} as one JSON object."""
    import orjson

    from userloop.models import GenerationParams
    from userloop.userlm.simulator import GuardrailConfig, UserSimulator, read_history, user_prompt

    if avoid_termination_turns.strip().lower() == "always":
        turns = None
    elif avoid_termination_turns.strip().isdigit():
        turns = int(avoid_termination_turns)
    else:
        raise UserError(f"--avoid-termination-turns must be a number or 'always', got {avoid_termination_turns!r}")
    guardrails = GuardrailConfig(
        filter_first_tokens=filter_first_tokens, avoid_termination=avoid_termination, avoid_termination_turns=turns,
        end_token_ids=tuple(end_token_ids or ()), length_thresholds=length_thresholds, min_words=min_words,
        max_words=max_words, filter_repetition=filter_repetition, max_attempts=max_attempts,
        samples_per_call=samples_per_call,
    )
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    messages = read_history(history) if history else []
    user_prompt(intent, messages)  # a bad intent or history fails before the model loads
    turn = UserSimulator(user, guardrails, params).next_turn(intent, messages)
    typer.echo(orjson.dumps(turn.to_dict()).decode())


# --------------------------------------------------------------------------- RLHI
rlhi_app = typer.Typer(help="RLHI: learn from users' follow-ups: classify them, derive personas, build preference pairs.",
                       no_args_is_help=True)
app.add_typer(rlhi_app, name="rlhi")


def _rlhi_help(name: str) -> str:
    from userloop.rlhi.build import help_text

    return help_text(name)


@contextmanager
def _steps(description: str, total: int):
    """``rlhi`` progress: one bar per step, yielding the function that advances it."""
    with _bar(description, total) as (progress, task):
        yield lambda n: progress.advance(task, n)


@app.command("personas")
@friendly_errors
def personas_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file: one persona per user (user_id, persona, structured fields)")],
    data: Annotated[Path | None, typer.Option("--data", help="conversations (file, folder or prepared folder); default: the built-in testbed, prepared")] = None,
    min_conversations: Annotated[int, typer.Option(help=_rlhi_help("min_conversations"))] = 3,
    persona_model: Annotated[str, typer.Option(help=_rlhi_help("persona_model"))] = "offline",
    classifier: Annotated[str, typer.Option(help=_rlhi_help("classifier"))] = "offline",
) -> None:
    """Derive each user's persona from their conversation history (RLHI)."""
    from userloop.rlhi.build import BuildConfig, derive_personas

    config = BuildConfig(classifier=classifier, persona_model=persona_model, min_conversations=min_conversations)
    config.validate()
    counts = derive_personas(data or _default_data(prepared=True), out, config, progress=_steps)
    typer.echo(f"wrote {counts['written']:,} personas to {out} ({counts['users']:,} users, "
               f"{counts['users_with_enough_history']:,} with at least {min_conversations} conversations)")


@rlhi_app.command("build")
@friendly_errors
def rlhi_build_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder: followups.jsonl, personas.jsonl, pairs.parquet, pairs_dataset/, report.json")],
    data: Annotated[Path | None, typer.Option("--data", help="conversations (file, folder or prepared folder); default: the built-in testbed, prepared")] = None,
    classifier: Annotated[str, typer.Option(help=_rlhi_help("classifier"))] = "offline",
    persona_model: Annotated[str, typer.Option(help=_rlhi_help("persona_model"))] = "offline",
    rewriter: Annotated[str, typer.Option(help=_rlhi_help("rewriter"))] = "testbed",
    judge: Annotated[str, typer.Option(help=_rlhi_help("judge"))] = "scorer",
    min_conversations: Annotated[int, typer.Option(help=_rlhi_help("min_conversations"))] = 3,
    batch_size: Annotated[int, typer.Option(help=_rlhi_help("batch_size"))] = 256,
) -> None:
    """Classify follow-ups, derive personas, rewrite answers the users complained about, write preference pairs."""
    from userloop.rlhi.build import BuildConfig, build

    config = BuildConfig(classifier=classifier, persona_model=persona_model, rewriter=rewriter, judge=judge,
                         min_conversations=min_conversations, batch_size=batch_size)
    config.validate()
    report = build(data or _default_data(prepared=True), out, config, progress=_steps)
    f, p, r = report["followups"], report["personas"], report["rewrites"]
    typer.echo(f"{report['conversations']:,} conversations: {f['followups']:,} follow-ups, {f['with_negative_feedback']:,} with "
               f"negative feedback ({f['share_of_conversations_with_negative_feedback']:.1%} of conversations)")
    typer.echo(f"personas: {p['written']:,} of {p['users']:,} users (at least {p['min_conversations']} conversations)")
    typer.echo(f"rewrites: {r['candidates']:,} candidates, {r['attempted']:,} attempted, {r['passed_filter']:,} passed the filter; "
               f"{report['pairs']:,} pairs")
    typer.echo(f"wrote {out}/ in {report['seconds']:.1f}s (report.json has every count)")


@rlhi_app.command("evaluate")
@friendly_errors
def rlhi_evaluate_command(
    data: Annotated[Path | None, typer.Option("--data", help="a testbed folder (raw or prepared, with its truth); default: the built-in testbed, prepared")] = None,
    real_labels: Annotated[Path | None, typer.Option(help="hand-labelled OASST follow-ups (JSONL of message ids, labels, span offsets)")] = None,
    oasst: Annotated[Path | None, typer.Option(help="folder of the OASST trees the labels refer to")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Precision / recall / F1 per class of the offline follow-up classifier, and persona accuracy."""
    import orjson

    from userloop.rlhi.evaluate import evaluate

    report = evaluate(data or _default_data(prepared=True), real_labels, oasst)
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    _print_rlhi_evaluation(report)


def _print_rlhi_evaluation(report: dict) -> None:
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


train_app = typer.Typer(help="Train models on prepared conversations.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("user-lm", add_help_option=False,
                   context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def train_user_lm_command(ctx: typer.Context) -> None:
    """Train a user LM on flipped conversations: --config FILE.yaml and/or --FIELD VALUE flags (--help lists them)."""
    _train_chat_lm(ctx.args, "user")


@train_app.command("assistant", add_help_option=False,
                   context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def train_assistant_command(ctx: typer.Context) -> None:
    """Train the same model as an assistant (loss on assistant turns): the same flags as 'train user-lm'."""
    _train_chat_lm(ctx.args, "assistant")


def _train_chat_lm(args: list[str], role: str) -> None:
    from userloop.userlm.train import parse_config, train_user_lm

    config = parse_config(args, role)
    if config.data is None:
        config.data = str(_default_data(prepared=True))
    with _bar("training", total=None) as (progress, task):
        result = train_user_lm(config, on_progress=lambda step, total: progress.update(task, completed=step, total=total),
                               on_message=lambda message: progress.console.print(message))
    r = result.report
    typer.echo(f"trained {r['steps']:,} updates ({r['epochs']:.2f} epochs, {r['parameters']:,} parameters) in {r['seconds']:.0f}s: "
               f"validation loss {r['validation_loss']:.3f} nats/token, unigram baseline {r['unigram_baseline']:.3f}")
    typer.echo(f"wrote {result.out}/ (model, tokenizer, loss_curve.png, train_report.json)")


@app.command("eval-ppl")
@friendly_errors
def eval_ppl_command(
    checkpoint: Annotated[Path, typer.Argument(help="a user LM folder (UserLM special tokens), e.g. from 'userloop train user-lm'")],
    data: Annotated[Path | None, typer.Option(help="prepared folder; default: the built-in testbed, prepared")] = None,
    split: Annotated[str, typer.Option(help="split to score: train, validation or test")] = "test",
    max_conversations: Annotated[int | None, typer.Option(help="score only the first N conversations")] = None,
    batch_size: Annotated[int, typer.Option(help="conversations per forward pass")] = 8,
    max_length: Annotated[int, typer.Option(help="longest sequence in tokens; turns beyond it are not scored")] = 2048,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Per-token perplexity of real user turns, with and without the intent (the paper's Table 1)."""
    import orjson

    from userloop.metrics.perplexity import user_turn_perplexity

    data = data or _default_data(prepared=True)
    with _bar("scoring", total=None) as (progress, task):
        result = user_turn_perplexity(checkpoint, data, split, max_conversations, batch_size, max_length, device,
                                      on_progress=lambda n: progress.advance(task, n),
                                      on_total=lambda n: progress.update(task, total=n))
    if as_json:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(f"user-turn perplexity of {checkpoint} on {result['turns_scored']:,} user turns of "
               f"{result['conversations_scored']:,} {split} conversations ({result['turns_not_scored']:,} turns beyond --max-length, "
               f"{result['empty_turns_not_scored']:,} empty turns not scored):")
    for name, label in (("with_intent", "with intent"), ("without_intent", "without intent")):
        typer.echo(f"  {label:<15} {result[name]['perplexity']:8.2f}  ({result[name]['tokens']:,} tokens)")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
