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
from typing import Annotated, Optional

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
    """Turn user-caused errors into one line on stderr (exit 2) and Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
    inputs: Annotated[Optional[list[str]], typer.Argument(help="files (.jsonl, .jsonl.gz, .json, .parquet), folders of shards, or dataset ids (hf:NAME[:SPLIT]); default: the built-in testbed")] = None,
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
    format: Annotated[Optional[str], typer.Option("--format", help=_help("format"))] = None,
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
    paths: Annotated[Optional[list[str]], typer.Argument(help="inputs as for 'prepare', or a prepared folder; default: the built-in testbed, prepared")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="force the input format")] = None,
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
    api_key_env: Annotated[Optional[str], typer.Option(help="environment variable holding the API key clients must send")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key clients must send (other users can see command lines: prefer --api-key-env)")] = None,
    model_name: Annotated[Optional[str], typer.Option(help="model id clients ask for (default: SPEC without its prefix)")] = None,
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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
