"""The ``userloop`` command: a thin typer layer; each command calls one library function.

Heavy libraries are imported inside the commands, so ``userloop --help`` stays fast. Errors a
user can cause (:class:`userloop.errors.UserError`) print one line and exit with status 2.
"""

from __future__ import annotations

import functools
import inspect
import signal
import sys
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from userloop import __version__
from userloop.errors import UserError
from userloop.files import check_output_file
from userloop.models.base import REQUEST_RETRIES, REQUEST_TIMEOUT_S

_sigterm_received = False  # set by _on_sigterm: the KeyboardInterrupt that follows came from SIGTERM


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (``kill``) stops a command as Ctrl-C does, through the handler SIGINT has at that moment
    (inside a simulation asyncio's, which cancels the conversations in flight; else Python's, which raises
    KeyboardInterrupt): the same clean-up and summary follow, and the exit status is 143, not 130."""
    global _sigterm_received
    _sigterm_received = True
    on_sigint = signal.getsignal(signal.SIGINT)
    if not callable(on_sigint):  # SIGINT ignored or left to the system: stop here
        raise KeyboardInterrupt
    on_sigint(signal.SIGINT, frame)


def _stopped() -> tuple[str, int]:
    """How a stopped command says so, and its exit status: 128 + the signal's number."""
    return ("terminated", 128 + signal.SIGTERM) if _sigterm_received else ("interrupted", 128 + signal.SIGINT)


@contextmanager
def _usage_errors_as_one_line():
    """A usage error (a bad option value such as ``--n abc``, a missing option, an unknown option) as one
    ``error: ...`` line and exit 2, like every other error a user can cause, instead of click's usage box."""
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError, as the click inside typer defines it
    try:
        yield
    except usage_error as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # a group run without a command: its help is shown
            raise
        command = err.ctx.command_path if err.ctx is not None else "userloop"
        typer.echo(f"error: {err.format_message().rstrip('.')} ('{command} --help' lists the options)", err=True)
        raise typer.Exit(2) from None


class _OneLineUsageErrors(typer.core.TyperGroup):
    """The ``userloop`` group: usage errors of it and of every subcommand are one line (see above)."""

    def make_context(self, *args, **kwargs):
        with _usage_errors_as_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


app = typer.Typer(help="userloop: model the users of chat assistants.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=_OneLineUsageErrors)
data_app = typer.Typer(help="Read, prepare and summarise chat logs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
testbed_app = typer.Typer(help="The built-in population of simulated users with known ground truth.", no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")


def _config_help(config: str):
    """``field -> help`` of the config dataclass ``"module:Class"`` (its fields' ``metadata["help"]``), for
    the options of the command that config drives.

    The help texts are read from the module's source (each field's ``option(default, "help")`` or
    ``field(..., metadata={"help": "..."})``, string literals), not by importing it: typer builds every
    command's options on each run, and importing the modules behind them (numpy, asyncio, the testbed...)
    made ``userloop --help`` take twice as long."""
    module_name, _, class_name = config.partition(":")

    @functools.cache
    def helps() -> dict[str, str]:
        import ast

        source = Path(__file__).parent.joinpath(*module_name.split(".")[1:]).with_suffix(".py")
        [cls] = [node for node in ast.parse(source.read_text()).body
                 if isinstance(node, ast.ClassDef) and node.name == class_name]
        found = {}
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Call):
                call, keywords = node.value, {kw.arg: kw.value for kw in node.value.keywords}
                if getattr(call.func, "id", None) == "option":
                    found[node.target.id] = ast.literal_eval(call.args[1] if len(call.args) > 1 else keywords["help"])
                elif "metadata" in keywords:
                    found[node.target.id] = ast.literal_eval(keywords["metadata"])["help"]
        return found

    return lambda name: helps()[name]


_help = _config_help("userloop.data.prepare:PrepareConfig")
_guardrail_help = _config_help("userloop.userlm.simulator:GuardrailConfig")
_rlhi_help = _config_help("userloop.rlhi.build:BuildConfig")
_rewards_help = _config_help("userloop.rlhi.user_rewards:RewardsConfig")
_loop_help = _config_help("userloop.rlhi.loop:LoopConfig")
_usereval_help = _config_help("userloop.rlhi.usereval:UserEvalConfig")
_simulation_help = _config_help("userloop.simulate.runs:SimulationConfig")
_persona_sim_help = _config_help("userloop.metrics.persona_fidelity:PersonaSimConfig")
_demo_help = _config_help("userloop.demo:DemoConfig")


def friendly_errors(command):
    """Turn user-caused errors into one line on stderr (exit 2), Ctrl-C into exit 130 and SIGTERM into 143.

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
            word, status = _stopped()
            typer.echo(word, err=True)
            raise typer.Exit(status) from None

    return wrapper


_REQUEST_LIMIT_OPTIONS = (
    inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[float | None, typer.Option(
        "--timeout", help="seconds a request to a model server (openai: specs) may take before it counts as failed "
                          f"(default: $USERLOOP_TIMEOUT, else {REQUEST_TIMEOUT_S:g})")]),
    inspect.Parameter("retries", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[int | None, typer.Option(
        "--retries", help="how often a failed request to a model server (timeout, lost connection, HTTP 408/429/5xx) "
                          f"is retried, with backoff (default: $USERLOOP_RETRIES, else {REQUEST_RETRIES})")]),
)


def calls_models(command):
    """Give a command that loads models ``--timeout`` and ``--retries``: the request limits of every model
    that calls a server which the command loads (:func:`userloop.models.registry.request_limits`)."""

    @functools.wraps(command)
    def wrapper(*args, timeout: float | None = None, retries: int | None = None, **kwargs):
        from userloop.models.base import checked_retries, checked_timeout
        from userloop.models.registry import request_limits

        with request_limits(timeout=None if timeout is None else checked_timeout(timeout, "--timeout"),
                            max_retries=None if retries is None else checked_retries(retries, "--retries")):
            return command(*args, **kwargs)

    signature = inspect.signature(command, eval_str=True)
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *_REQUEST_LIMIT_OPTIONS])
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
    from userloop.data.summary import stats

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
    check_output_file(out, "conversations.jsonl")
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


def _avoid_termination_turns(text: str) -> int | None:
    """``--avoid-termination-turns``: a number of user turns, or ``always`` (None)."""
    if text.strip().lower() == "always":
        return None
    if text.strip().isdigit():
        return int(text)
    raise UserError(f"--avoid-termination-turns must be a number or 'always', got {text!r}")


@app.command("serve")
@friendly_errors
def serve_command(
    spec: Annotated[str, typer.Argument(help="model to serve: hf:PATH_OR_HUB_ID (or scripted:FILE.json for demos); with --simulator any user-LM spec (hf:, openai:, vllm:, prompted:, scripted:)")],
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port, printed at start)")] = 8000,
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 exposes the server beyond this machine")] = "127.0.0.1",
    api_key_env: Annotated[str | None, typer.Option(help="environment variable holding the API key clients must send")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key clients must send (other users can see command lines: prefer --api-key-env)")] = None,
    model_name: Annotated[str | None, typer.Option(help="model id clients ask for (default: SPEC without its prefix)")] = None,
    device: Annotated[str, typer.Option(help="hf: auto, cpu, cuda, cuda:N or mps")] = "auto",
    dtype: Annotated[str, typer.Option(help="hf: auto (bf16 on GPUs that support it, fp16 on others, float32 on CPU), float32, bfloat16, float16")] = "auto",
    max_batch_size: Annotated[int, typer.Option(help="hf: most conversations generated together")] = 64,
    allowed_host: Annotated[list[str] | None, typer.Option("--allowed-host", help="another Host name clients reach the server by (repeatable; localhost, 127.0.0.1, [::1], --host and the address a connection arrives on are always accepted)")] = None,
    allowed_origin: Annotated[list[str] | None, typer.Option("--allowed-origin", help="a web page origin (http://HOST:PORT) allowed to call the server from a browser (repeatable; other pages are refused)")] = None,
    simulator: Annotated[bool, typer.Option("--simulator", help="serve SPEC as a user simulator behind the UserLM-8b guardrails: requests send the conversation, answers are the user's next turn (docs/integrations.md)")] = False,
    avoid_termination_turns: Annotated[str | None, typer.Option(help="--simulator: how many user turns may not end the conversation, a number or 'always' (default 2)")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="--simulator: " + _guardrail_help("max_attempts") + " (default 8)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="--simulator: most tokens per sample (default 96; a request's max_tokens can only lower it)")] = None,
    perspective: Annotated[str | None, typer.Option(help="--simulator: the roles requests send: 'assistant' (the user's turns as user; default) or 'user' (swapped, as harnesses with a prompted user such as tau2-bench send them)")] = None,
    end_text: Annotated[str | None, typer.Option(help="--simulator: text a conversation's last user turn ends with, for harnesses that read the end from the text (tau2-bench: '###STOP###'); finish_reason says it anyway")] = None,
    intent_tag: Annotated[str | None, typer.Option(help="--simulator: read the intent inside <TAG>...</TAG> of the system message (tau2-bench: scenario), not the whole message")] = None,
) -> None:
    """Serve a model over the OpenAI chat-completions API (/v1/chat/completions, /v1/models, /health)."""
    import ipaddress
    import os

    from userloop.models.registry import parse_spec

    prefix, _ = parse_spec(spec)
    simulator_options = {"--avoid-termination-turns": avoid_termination_turns, "--max-attempts": max_attempts,
                         "--max-new-tokens": max_new_tokens, "--perspective": perspective, "--end-text": end_text,
                         "--intent-tag": intent_tag}
    if not simulator and any(value is not None for value in simulator_options.values()):
        given = next(name for name, value in simulator_options.items() if value is not None)
        raise UserError(f"{given} applies only to a user simulator: add --simulator")
    if not simulator and prefix not in ("hf", "scripted"):
        raise UserError(f"serve takes hf: or scripted: models, not {prefix}: ({prefix}: models are already served elsewhere)")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {port}")
    if api_key_env and api_key:
        raise UserError("give either --api-key-env or --api-key, not both")
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {api_key_env}: that environment variable is not set")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not api_key:
        raise UserError(f"--host {host} exposes the server beyond this machine: also set an API key clients must send "
                        "(--api-key-env NAME)")
    local = prefix == "hf" or spec.startswith("prompted:hf:")
    options = {"device": device, "dtype": dtype, "max_batch_size": max_batch_size} if local else {}
    from userloop.models.serve import serve

    def announce(url: str, name: str) -> None:
        typer.echo(f"serving {spec} as {'user simulator' if simulator else 'model'} {name!r} at {url}"
                   f"{' (API key required)' if api_key else ''}; Ctrl-C stops", err=True)

    listening = {"host": host, "port": port, "api_key": api_key, "model_name": model_name, "on_ready": announce,
                 "allowed_hosts": allowed_host or (), "allowed_origins": allowed_origin or ()}
    if not simulator:
        serve(spec, **listening, **options)
        return
    from dataclasses import replace

    from userloop.models.serve.simulator_protocol import harness_options
    from userloop.userlm.simulator import DEFAULT_PARAMS, GuardrailConfig
    from userloop.userlm.simulator_server import serve_simulator

    harness = harness_options(perspective or "assistant", end_text, intent_tag)
    chosen = {} if max_attempts is None else {"max_attempts": max_attempts}
    if avoid_termination_turns is not None:
        chosen["avoid_termination_turns"] = _avoid_termination_turns(avoid_termination_turns)
    guardrails = GuardrailConfig(**chosen)
    params = DEFAULT_PARAMS if max_new_tokens is None else replace(DEFAULT_PARAMS, max_new_tokens=max_new_tokens)
    serve_simulator(spec, guardrails, params, harness, **listening, **options)


@app.command("intents")
@friendly_errors
@calls_models
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


@app.command("user-turn")
@friendly_errors
@calls_models
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

    guardrails = GuardrailConfig(
        filter_first_tokens=filter_first_tokens, avoid_termination=avoid_termination,
        avoid_termination_turns=_avoid_termination_turns(avoid_termination_turns),
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


@contextmanager
def _steps(description: str, total: int):
    """``rlhi`` progress: one bar per step, yielding the function that advances it."""
    with _bar(description, total) as (progress, task):
        yield lambda n: progress.advance(task, n)


@app.command("personas")
@friendly_errors
@calls_models
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
@calls_models
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
    from userloop.logs import library_log
    from userloop.rlhi.build import BuildConfig, build

    config = BuildConfig(classifier=classifier, persona_model=persona_model, rewriter=rewriter, judge=judge,
                         min_conversations=min_conversations, batch_size=batch_size)
    config.validate()
    with library_log(out):
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

    from userloop.rlhi.extraction_eval import evaluate

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


def _train_with_progress(train, config):
    """Run a trainer (``train(config, on_progress=, on_message=)``) under a progress bar of its updates, the
    libraries' warnings and logs into ``config.out``/log.txt."""
    from userloop.logs import library_log

    with library_log(config.out), _bar("training", total=None) as (progress, task):
        return train(config, on_progress=lambda step, total: progress.update(task, completed=step, total=total),
                     on_message=lambda message: progress.console.print(message, soft_wrap=True, markup=False))


def _train_chat_lm(args: list[str], role: str) -> None:
    from userloop.userlm.train import parse_config, train_user_lm

    config = parse_config(args, role)
    if config.data is None:
        config.data = str(_default_data(prepared=True))
    result = _train_with_progress(train_user_lm, config)
    r = result.report
    typer.echo(f"trained {r['steps']:,} updates ({r['epochs']:.2f} epochs, {r['parameters']:,} parameters) in {r['seconds']:.0f}s: "
               f"validation loss {r['validation_loss']:.3f} nats/token, unigram baseline {r['unigram_baseline']:.3f}")
    typer.echo(f"wrote {result.out}/ (model, tokenizer, loss_curve.png, train_report.json)")


@train_app.command("dpo", add_help_option=False,
                   context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def train_dpo_command(ctx: typer.Context) -> None:
    """Persona-conditioned DPO (offline on --pairs, or --online iterative), or SFT on the chosen answers (--method sft)."""
    from userloop.rlhi.dpo import parse_config, train_dpo

    config = parse_config(ctx.args)
    result = _train_with_progress(train_dpo, config)
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


@rlhi_app.command("policy-data")
@friendly_errors
def rlhi_policy_data_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder: the prepared splits with each user's persona as a system message")],
    personas: Annotated[Path, typer.Option("--personas", help="personas.jsonl of 'rlhi build' (derived personas)")],
    data: Annotated[Path | None, typer.Option("--data", help="a prepared folder; default: the built-in testbed, prepared")] = None,
) -> None:
    """Write the base policy's training data: conversations conditioned on the user's derived persona."""
    from userloop.rlhi.policy import write_policy_data

    counts = write_policy_data(data or _default_data(prepared=True), personas, out)
    typer.echo(", ".join(f"{split} {c['with_persona']:,} of {c['conversations']:,} conversations with a persona"
                         for split, c in counts["splits"].items()))
    typer.echo(f"wrote {out}/ (train it with: userloop train assistant --data {out} --out CKPT)")


@train_app.command("reward", add_help_option=False,
                   context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly_errors
def train_reward_command(ctx: typer.Context) -> None:
    """Train a persona-conditioned reward model (TRL RewardTrainer): --config FILE.yaml and/or --FIELD VALUE flags (--help lists them)."""
    from userloop.rlhi.reward_model import parse_config, train_reward_model

    config = parse_config(ctx.args)
    if config.pairs is None and config.data is None:
        config.data = str(_default_data(prepared=True))
    result = _train_with_progress(train_reward_model, config)
    r = result.report
    typer.echo(f"trained {r['steps']:,} updates on {r['train_pairs']:,} pairs ({'with' if r['persona'] else 'without'} the persona) "
               f"in {r['seconds']:.0f}s: held-out pair accuracy {r['held_out_accuracy']:.3f} on {r['held_out_pairs']:,} pairs"
               + (f", {r['held_out_accuracy_persona_removed']:.3f} with the persona removed" if "held_out_accuracy_persona_removed" in r else "")
               + (f"; persona-blind bound {r['population_oracle_accuracy']:.3f}" if "population_oracle_accuracy" in r else ""))
    typer.echo(f"wrote {result.out}/ (reward model, tokenizer, reward_report.json); score with --scorer rm:{result.out}")


@rlhi_app.command("rewards")
@friendly_errors
@calls_models
def rlhi_rewards_command(
    policy: Annotated[str, typer.Option("--policy", help=_rewards_help("policy"))],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder: pairs.parquet, pairs_dataset/, report.json")],
    scorer: Annotated[str, typer.Option("--scorer", help=_rewards_help("scorer"))] = "testbed",
    data: Annotated[Path | None, typer.Option("--data", help="a prepared folder; default: the built-in testbed, prepared")] = None,
    n: Annotated[int, typer.Option("--n", help=_rewards_help("n"))] = 4,
    split: Annotated[str, typer.Option(help=_rewards_help("split"))] = "train",
    followups: Annotated[Path | None, typer.Option(help=_rewards_help("followups"))] = None,
    personas: Annotated[Path | None, typer.Option(help=_rewards_help("personas"))] = None,
    temperature: Annotated[float, typer.Option(help=_rewards_help("temperature"))] = 0.6,
    top_p: Annotated[float, typer.Option(help=_rewards_help("top_p"))] = 0.9,
    max_new_tokens: Annotated[int, typer.Option(help=_rewards_help("max_new_tokens"))] = 256,
    max_requests: Annotated[int, typer.Option(help=_rewards_help("max_requests"))] = 500,
    min_conversations: Annotated[int, typer.Option(help=_rewards_help("min_conversations"))] = 3,
    persona: Annotated[bool, typer.Option("--persona/--no-persona", help=_rewards_help("persona"))] = True,
    batch_size: Annotated[int, typer.Option(help=_rewards_help("batch_size"))] = 64,
    seed: Annotated[int, typer.Option(help=_rewards_help("seed"))] = 0,
) -> None:
    """User-based rewards: sample N answers for requests without feedback, score them for the user, pair best with worst."""
    from userloop.logs import library_log
    from userloop.rlhi.user_rewards import RewardsConfig, user_based_rewards

    config = RewardsConfig(policy=policy, scorer=scorer, split=split, followups=followups, personas=personas, n=n,
                           temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, max_requests=max_requests,
                           min_conversations=min_conversations, persona=persona, batch_size=batch_size, seed=seed)
    config.validate()
    with library_log(out):
        report = user_based_rewards(data or _default_data(prepared=True), out, config, progress=_steps)
    typer.echo(f"{report['requests_used']:,} requests without feedback ({report['requests']['requests_without_feedback']:,} found), "
               f"{report['candidates']:,} candidates scored by {report['scorer']}: mean {report['mean_score']}, "
               f"best {report['mean_best']}, worst {report['mean_worst']}")
    typer.echo(f"{report['pairs']:,} pairs ({report['skipped_all_tied']:,} requests skipped: all candidates tied); "
               f"wrote {out}/ in {report['seconds']:.1f}s")


@rlhi_app.command("loop")
@friendly_errors
@calls_models
def rlhi_loop_command(
    policy: Annotated[str, typer.Option("--policy", help=_loop_help("policy"))],
    user: Annotated[str, typer.Option("--user", help=_loop_help("user"))],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder: config.json, users.json, rounds.jsonl, round-K/, "
                                                          "report.json, report.md (a re-run resumes)")],
    rounds: Annotated[int, typer.Option("--rounds", help=_loop_help("rounds"))] = 2,
    data: Annotated[Path | None, typer.Option("--data", help=_loop_help("data"))] = None,
    personas: Annotated[Path | None, typer.Option("--personas", help=_loop_help("personas"))] = None,
    baseline: Annotated[str, typer.Option("--baseline", help=_loop_help("baseline"))] = "none",
    scorer: Annotated[str, typer.Option("--scorer", help=_loop_help("scorer"))] = "testbed",
    rewriter: Annotated[str, typer.Option("--rewriter", help=_loop_help("rewriter"))] = "testbed",
    judge: Annotated[str, typer.Option("--judge", help=_loop_help("judge"))] = "scorer",
    users: Annotated[int, typer.Option("--users", help=_loop_help("users"))] = 64,
    eval_users: Annotated[int, typer.Option("--eval-users", help=_loop_help("eval_users"))] = 50,
    turns: Annotated[int, typer.Option("--turns", help=_loop_help("turns"))] = 2,
    n: Annotated[int, typer.Option("--n", help=_loop_help("n"))] = 4,
    persona: Annotated[bool, typer.Option("--persona/--no-persona", help=_loop_help("persona"))] = True,
    max_steps: Annotated[int, typer.Option("--max-steps", help=_loop_help("max_steps"))] = 40,
    batch_size: Annotated[int, typer.Option("--batch-size", help=_loop_help("batch_size"))] = 8,
    learning_rate: Annotated[float, typer.Option("--learning-rate", help=_loop_help("learning_rate"))] = 1e-4,
    beta: Annotated[float, typer.Option("--beta", help=_loop_help("beta"))] = 0.1,
    temperature: Annotated[float, typer.Option("--temperature", help=_loop_help("temperature"))] = 0.6,
    top_p: Annotated[float, typer.Option("--top-p", help=_loop_help("top_p"))] = 0.9,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help=_loop_help("max_new_tokens"))] = 192,
    min_conversations: Annotated[int, typer.Option("--min-conversations", help=_loop_help("min_conversations"))] = 3,
    seed: Annotated[int, typer.Option("--seed", help=_loop_help("seed"))] = 0,
) -> None:
    """Close the loop: simulated users talk to the policy, their follow-ups become RLHI pairs, DPO, repeat; evaluated on held-out users."""
    from userloop.logs import library_log
    from userloop.rlhi.loop import LoopConfig, run_loop

    config = LoopConfig(policy=policy, user=user, rounds=rounds, data=str(data) if data else None,
                        personas=str(personas) if personas else None, baseline=baseline, scorer=scorer, rewriter=rewriter,
                        judge=judge, users=users, eval_users=eval_users, turns=turns, n=n, persona=persona,
                        max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate, beta=beta,
                        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        min_conversations=min_conversations, seed=seed)
    config.validate()
    if data is None:
        config.data = str(_default_data(prepared=True))
    with library_log(out):
        report = run_loop(config, out, progress=_steps)
    for r in report["rounds"]:
        e = r["eval"]
        pairs = f"{r['pairs']['total']:,} pairs, " if "pairs" in r else ""
        typer.echo(f"round {r['round']}: {pairs}persona match {e['persona_match']}, task success {e['task_success']}, "
                   f"held-out feedback rate {e['feedback_rate']}")
    typer.echo(f"wrote {out}/ (report.md: roles, guard, per-round table)")


@app.command("eval-personal")
@friendly_errors
@calls_models
def eval_personal_command(
    policy: Annotated[str, typer.Option("--policy", help=_usereval_help("policy"))],
    baseline: Annotated[str, typer.Option("--baseline", help=_usereval_help("baseline"))],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder: report.json and comparisons.jsonl (every answer and verdict)")],
    judge: Annotated[str, typer.Option("--judge", help=_usereval_help("judge"))] = "testbed",
    data: Annotated[Path | None, typer.Option("--data", help="a prepared folder; default: the built-in testbed, prepared")] = None,
    split: Annotated[str, typer.Option(help=_usereval_help("split"))] = "test",
    personas: Annotated[Path | None, typer.Option(help=_usereval_help("personas"))] = None,
    max_requests: Annotated[int, typer.Option(help=_usereval_help("max_requests"))] = 300,
    min_conversations: Annotated[int, typer.Option(help=_usereval_help("min_conversations"))] = 3,
    temperature: Annotated[float, typer.Option(help=_usereval_help("temperature"))] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(help=_usereval_help("max_new_tokens"))] = 256,
    batch_size: Annotated[int, typer.Option(help=_usereval_help("batch_size"))] = 64,
    seed: Annotated[int, typer.Option(help=_usereval_help("seed"))] = 0,
) -> None:
    """UserEval: personalised and overall win rates of a policy against a baseline on held-out users (both orders, ties half)."""
    from userloop.logs import library_log
    from userloop.rlhi.usereval import UserEvalConfig, eval_personal

    config = UserEvalConfig(policy=policy, baseline=baseline, judge=judge, split=split, personas=personas,
                            max_requests=max_requests, min_conversations=min_conversations, temperature=temperature,
                            max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    config.validate()
    with library_log(out):
        report = eval_personal(data or _default_data(prepared=True), out, config, progress=_steps)
    typer.echo(f"{report['requests_used']:,} requests of held-out users, judge {report['judge']}:")
    for name in ("personalisation", "overall"):
        s = report[name]
        typer.echo(f"  {name:<16} win rate {s['win_rate']:.3f} (95% CI {s['ci95'][0]:.3f}-{s['ci95'][1]:.3f}; "
                   f"{s['wins']:,} wins, {s['ties']:,} ties, {s['losses']:,} losses, {s['inconsistent_orders']:,} inconsistent orders)")
    if "mean_persona_match" in report:
        m = report["mean_persona_match"]
        typer.echo(f"  mean persona-match score: policy {m['policy']:.4f}, baseline {m['baseline']:.4f}")
    typer.echo(f"wrote {out}/ in {report['seconds']:.1f}s")


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


# --------------------------------------------------------------------------- simulate
runs_app = typer.Typer(help="Inspect and compare simulation runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@contextmanager
def _simulation_bar(description: str):
    """Conversations done/total, turns/s and ETA (on stderr, transient); yields the run's Progress callbacks.

    The bar appears once the run knows its total, so an error in the configuration stays the only line."""
    import time

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from userloop.simulate.runs import Progress as Callbacks

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = progress.add_task(description, total=None, rate="")
    started, turns = time.perf_counter(), 0

    def on_total(total: int, done: int) -> None:
        progress.reset(task, total=total, completed=done)
        if total > done:
            progress.start()

    def on_turns(count: int) -> None:
        nonlocal turns
        turns += count
        progress.update(task, rate=f"{turns / max(time.perf_counter() - started, 1e-6):,.1f} turns/s")

    try:
        yield Callbacks(on_total=on_total, on_conversation=lambda: progress.advance(task), on_turns=on_turns)
    finally:
        if progress.live.is_started:
            progress.stop()


def _interrupted(out: Path):
    """What a run stopped by Ctrl-C or SIGTERM prints, and the exit that follows."""
    word, status = _stopped()
    typer.echo(f"{word}: finished conversations are saved in {out}; run the same command again to resume", err=True)
    return typer.Exit(status)


@app.command("simulate")
@friendly_errors
@calls_models
def simulate_command(
    user: Annotated[str, typer.Option("--user", help="the simulated user LM: hf:PATH, openai:MODEL@URL (UserLM template), prompted:SPEC, scripted:FILE.json")],
    assistant: Annotated[str, typer.Option("--assistant", help=_simulation_help("assistant"))],
    scenarios: Annotated[Path, typer.Option("--scenarios", help=_simulation_help("scenarios"))],
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder: conversations.jsonl, run.json, summary.json, summary.md (an existing run is resumed)")],
    n: Annotated[int, typer.Option("--n", help=_simulation_help("n"))] = 1,
    max_turns: Annotated[int, typer.Option("--max-turns", help=_simulation_help("max_user_turns"))] = 6,
    seed: Annotated[int, typer.Option(help=_simulation_help("seed"))] = 0,
    system_prompt: Annotated[str | None, typer.Option(help=_simulation_help("system_prompt"))] = None,
    classifier: Annotated[str, typer.Option(help=_simulation_help("classifier"))] = "rules",
    assistant_max_new_tokens: Annotated[int, typer.Option(help=_simulation_help("assistant_max_new_tokens"))] = 512,
    assistant_temperature: Annotated[float | None, typer.Option(help=_simulation_help("assistant_temperature"))] = None,
    user_max_new_tokens: Annotated[int, typer.Option(help=_simulation_help("user_max_new_tokens"))] = 96,
    user_temperature: Annotated[float, typer.Option(help=_simulation_help("user_temperature"))] = 1.0,
    user_top_p: Annotated[float, typer.Option(help=_simulation_help("user_top_p"))] = 0.8,
    concurrency: Annotated[int, typer.Option(help=_simulation_help("concurrency"))] = 256,
    max_batch_size: Annotated[int | None, typer.Option(help=_simulation_help("max_batch_size"))] = None,
    shard: Annotated[str | None, typer.Option(help=_simulation_help("shard"))] = None,
    max_conversations: Annotated[int | None, typer.Option(help="stop after this many new conversations (resume later)")] = None,
    force: Annotated[bool, typer.Option("--force", help="continue a run folder made with a different configuration")] = False,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="run again the conversations of this run folder that ended in error")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print summary.json instead of the summary lines")] = False,
) -> None:
    """Simulate N conversations per scenario between a user LM and an assistant (resumable run folder).

    Exits 1 when every conversation in the run ended in error (the first error is printed), else 0."""
    import orjson

    from userloop.logs import library_log
    from userloop.simulate.runs import SimulationConfig, simulate

    config = SimulationConfig(
        assistant=assistant, scenarios=str(scenarios), user=user, n=n, max_user_turns=max_turns, seed=seed,
        system_prompt=system_prompt, classifier=classifier, assistant_max_new_tokens=assistant_max_new_tokens,
        assistant_temperature=assistant_temperature, user_max_new_tokens=user_max_new_tokens,
        user_temperature=user_temperature, user_top_p=user_top_p, concurrency=concurrency, max_batch_size=max_batch_size,
        shard=shard,
    )
    try:
        with library_log(out), _simulation_bar("simulating") as progress:
            result = simulate(config, out, force=force, max_conversations=max_conversations, retry_errors=retry_errors,
                              progress=progress)
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    s, resume = result.summary, result.summary["resume"]
    solved, errored = s["overall"]["solved"], s["overall"]["end_reasons"]["error"]
    if as_json:
        typer.echo(orjson.dumps(s, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(f"{s['conversations']:,} conversations ({result.finished_now:,} new, {result.resumed:,} from earlier runs, "
                   f"{result.torn_lines} torn line repaired, {resume['pending']:,} still to run)"
                   + (f": solved {solved['solved']:,}/{solved['scored']:,} ({solved['rate']:.1%})" if solved else ""))
        typer.echo("end reasons: " + ", ".join(f"{k} {v:,}" for k, v in s["overall"]["end_reasons"].items()))
        if errored:
            typer.echo(f"errors: {errored:,} of {s['conversations']:,} conversations ended in error; "
                       f"the first: {s['overall']['first_error']}")
        typer.echo(f"wrote {result.out}/ (conversations.jsonl, summary.json, summary.md)")
    if errored and errored == s["conversations"]:
        typer.echo(f"error: every conversation ended in error, the first with: {s['overall']['first_error']}", err=True)
        raise typer.Exit(1)


@app.command("evaluate-assistant")
@friendly_errors
@calls_models
def evaluate_assistant_command(
    assistant: Annotated[str, typer.Option("--assistant", help=_simulation_help("assistant"))],
    user: Annotated[str, typer.Option("--user", help="the simulated user of the multi-turn setting (a model spec)")],
    scenarios: Annotated[Path, typer.Option("--scenarios", help="JSONL file of math/code scenarios (see docs/scenarios.md)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder: single_turn/ and multi_turn/ run folders, report.json, report.md")],
    n: Annotated[int, typer.Option("--n", help=_simulation_help("n"))] = 1,
    max_turns: Annotated[int, typer.Option("--max-turns", help=_simulation_help("max_user_turns"))] = 6,
    seed: Annotated[int, typer.Option(help=_simulation_help("seed"))] = 0,
    system_prompt: Annotated[str | None, typer.Option(help=_simulation_help("system_prompt"))] = None,
    classifier: Annotated[str, typer.Option(help=_simulation_help("classifier"))] = "rules",
    assistant_max_new_tokens: Annotated[int, typer.Option(help=_simulation_help("assistant_max_new_tokens"))] = 512,
    concurrency: Annotated[int, typer.Option(help=_simulation_help("concurrency"))] = 256,
    max_batch_size: Annotated[int | None, typer.Option(help=_simulation_help("max_batch_size"))] = None,
    force: Annotated[bool, typer.Option("--force", help="continue run folders made with a different configuration")] = False,
) -> None:
    """Score an assistant on the same problems fully specified in one turn vs revealed by a simulated user."""
    from userloop.logs import library_log
    from userloop.simulate.assistant_eval import evaluate_assistant, report_markdown

    try:
        with library_log(out):
            report = evaluate_assistant(assistant, user, scenarios, out, n=n, force=force,
                                        progress_for=lambda setting: _simulation_bar(setting.replace("_", "-")),
                                        max_user_turns=max_turns, seed=seed, system_prompt=system_prompt,
                                        classifier=classifier, assistant_max_new_tokens=assistant_max_new_tokens,
                                        concurrency=concurrency, max_batch_size=max_batch_size)
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    typer.echo(report_markdown(report), nl=False)
    typer.echo(f"wrote {out}/ (single_turn/, multi_turn/, report.json, report.md)")


@runs_app.command("compare")
@friendly_errors
def runs_compare_command(
    run_a: Annotated[Path, typer.Argument(help="a run folder (with summary.json)")],
    run_b: Annotated[Path, typer.Argument(help="another run folder")],
) -> None:
    """Two simulation runs side by side (Markdown), with the differences."""
    from userloop.simulate.runs import compare_runs

    typer.echo(compare_runs(run_a, run_b), nl=False)


@runs_app.command("merge")
@friendly_errors
def runs_merge_command(
    shards: Annotated[list[Path], typer.Argument(help="the run folders of shards 1/N .. N/N (simulate --shard I/N)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the merged run folder (new or empty)")],
    scenarios: Annotated[Path | None, typer.Option(help="the scenario file, when the path in the shards' run.json "
                                                         "is not on this machine (same content)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print summary.json instead of the summary lines")] = False,
) -> None:
    """Join the shards of a simulation into one run folder; refuses shards that are missing, from another run, or
    with a conversation not recorded or recorded by the wrong shard."""
    import orjson

    from userloop.simulate.runs import merge_runs

    summary = merge_runs(shards, out, scenarios)
    if as_json:
        typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    solved = summary["overall"]["solved"]
    typer.echo(f"merged {len(summary['merged_from'])} shards: {summary['conversations']:,} conversations, each "
               "(scenario, sample) once" + (f"; solved {solved['solved']:,}/{solved['scored']:,} ({solved['rate']:.1%})"
                                            if solved else ""))
    typer.echo(f"wrote {out}/ (conversations.jsonl, run.json, summary.json, summary.md)")


@app.command("eval-sim")
@friendly_errors
@calls_models
def eval_sim_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: metrics.json, details.json, table.md, charts/*.png")],
    sim: Annotated[list[str] | None, typer.Option("--sim", help="a simulator, NAME=SPEC or SPEC (hf:PATH user LM, prompted:INNER_SPEC, openai:, scripted:); repeatable; none: only the Human row")] = None,
    data: Annotated[Path | None, typer.Option(help="prepared folder; default: the built-in testbed, prepared")] = None,
    split: Annotated[str, typer.Option(help="held-out split to evaluate on: validation or test")] = "test",
    n_first_turns: Annotated[int, typer.Option(help="first turns for diversity, decomposition and naturalness (paper: 2,000; capped by the split)")] = 2000,
    max_conversations: Annotated[int, typer.Option(help="real conversations replayed for termination and fidelity (and scored for perplexity)")] = 200,
    n_probes: Annotated[int, typer.Option(help="role and intent probes each (capped by the probe files)")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the samples and of the simulators' sampling")] = 0,
    guardrails: Annotated[str, typer.Option(help="off: the raw simulator (default); on: the model card's guardrails (never the end ban in the replay)")] = "off",
    judge: Annotated[str | None, typer.Option(help="model spec of an LLM judge for the adherence probes (default: the rule-based judges)")] = None,
    role_probes: Annotated[Path | None, typer.Option(help="JSONL multiple-choice probes, CommonsenseQA layout (default: built from the testbed's facts)")] = None,
    intent_probes: Annotated[Path | None, typer.Option(help="JSONL open questions, NQ-open layout (default: built from the testbed's facts)")] = None,
    assistant: Annotated[str | None, typer.Option(help="model spec of the assistant in the probes (default: templated assistant turns)")] = None,
    detector: Annotated[str, typer.Option(help="naturalness detector: 'default' (trained on the data's user vs assistant turns) or MODULE:ATTRIBUTE")] = "default",
    max_new_tokens: Annotated[int, typer.Option(help="most tokens per simulated turn (sampling: temperature 1.0, top-p 0.8, as the model card)")] = 96,
) -> None:
    """Score user simulators with the metrics of "Flipping the Dialogue" (Table 2), perplexity and behavioural fidelity."""
    from userloop.logs import library_log
    from userloop.metrics.evalsim import eval_sim, parse_sims

    sims = parse_sims(sim or [])
    data = data or _default_data(prepared=True)

    @contextmanager
    def progress(description: str, total: int):
        with _bar(description, total or None) as (bar, task):
            yield lambda n: bar.advance(task, n)

    with library_log(out):
        eval_sim(sims, data, out, split=split, n_first_turns=n_first_turns, max_conversations=max_conversations,
                 n_probes=n_probes, seed=seed, guardrails=guardrails, judge=judge, role_probes=role_probes,
                 intent_probes=intent_probes, assistant=assistant, detector=detector, max_new_tokens=max_new_tokens,
                 progress=progress)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/ (metrics.json, details.json, table.md, charts/)")


@app.command("eval-persona-sim")
@friendly_errors
@calls_models
def eval_persona_sim_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: report.json, report.md, scenario files, sim-NAME/ run folders (resumed when rerun)")],
    personas: Annotated[Path, typer.Option("--personas", help=_persona_sim_help("personas"))],
    assistant: Annotated[str, typer.Option("--assistant", help=_persona_sim_help("assistant"))],
    conditioned: Annotated[str | None, typer.Option("--conditioned", help=_persona_sim_help("conditioned"))] = None,
    unconditioned: Annotated[str | None, typer.Option("--unconditioned", help=_persona_sim_help("unconditioned"))] = None,
    data: Annotated[Path | None, typer.Option(help=_persona_sim_help("data"))] = None,
    split: Annotated[str, typer.Option(help=_persona_sim_help("split"))] = "test",
    truth: Annotated[Path | None, typer.Option(help=_persona_sim_help("truth"))] = None,
    n: Annotated[int, typer.Option("--n", help=_persona_sim_help("n"))] = 1,
    max_turns: Annotated[int, typer.Option("--max-turns", help=_persona_sim_help("max_user_turns"))] = 8,
    max_conversations: Annotated[int | None, typer.Option(help=_persona_sim_help("max_conversations"))] = None,
    min_group: Annotated[int, typer.Option(help=_persona_sim_help("min_group"))] = 5,
    seed: Annotated[int, typer.Option(help=_persona_sim_help("seed"))] = 0,
    assistant_max_new_tokens: Annotated[int, typer.Option(help=_persona_sim_help("assistant_max_new_tokens"))] = 256,
    user_max_new_tokens: Annotated[int, typer.Option(help=_persona_sim_help("user_max_new_tokens"))] = 64,
    max_batch_size: Annotated[int | None, typer.Option(help=_persona_sim_help("max_batch_size"))] = None,
) -> None:
    """Do simulated users given persona P behave like the real users with P? Per persona field, against an unconditioned user LM."""
    from userloop.metrics.persona_fidelity import PersonaSimConfig, evaluate_persona_sim

    config = PersonaSimConfig(personas=str(personas), assistant=assistant, conditioned=conditioned,
                              unconditioned=unconditioned, data=str(data) if data else None, split=split,
                              truth=str(truth) if truth else None, n=n, max_user_turns=max_turns,
                              max_conversations=max_conversations, min_group=min_group, seed=seed,
                              assistant_max_new_tokens=assistant_max_new_tokens, user_max_new_tokens=user_max_new_tokens,
                              max_batch_size=max_batch_size)
    if data is None:
        _default_data(prepared=True)
    try:
        with _simulation_bar("simulating") as progress:
            report = evaluate_persona_sim(config, out, progress=progress, on_message=lambda m: typer.echo(m, err=True))
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    for name, entry in report["fields"].items():
        typer.echo(f"{name}: " + "; ".join(
            f"{simulator} mean R where it matters {_format_optional(s['summary']['mean_reproduction_where_it_matters'])} "
            f"({s['summary']['statistics_that_matter']} statistics)" for simulator, s in entry["simulators"].items()))
    typer.echo(f"wrote {out}/ (report.json, report.md, sim-*/)")


def _format_optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# --------------------------------------------------------------------------- scenarios
scenarios_app = typer.Typer(help="Scenario files for simulations: math, code and open-intent tasks.", no_args_is_help=True)
app.add_typer(scenarios_app, name="scenarios")


@scenarios_app.command("build")
@friendly_errors
def scenarios_build_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="scenario file to write (JSONL)")],
    source: Annotated[Path | None, typer.Option(help="a Lost-in-Conversation sharded math file, a GSM8K JSONL, a HumanEval "
                                                     "JSONL(.gz), a prepared data folder, or with --kind math a testbed folder (its sharded "
                                                     "word problems); default: the built-in testbed")] = None,
    kind: Annotated[str | None, typer.Option(help="expected kind: open, math or code (checked against the source)")] = None,
    limit: Annotated[int | None, typer.Option(help="keep this many scenarios, drawn at random with --seed")] = None,
    split: Annotated[str | None, typer.Option(help="split of a prepared data folder (default: test)")] = None,
    seed: Annotated[int, typer.Option(help="random seed for --limit")] = 0,
) -> None:
    """Build a scenario file (docs/scenarios.md) from a task dataset or prepared conversations."""
    from userloop.simulate.scenarios import build_scenario_file

    check_output_file(out, "scenarios.jsonl")
    result = build_scenario_file(out, source or _default_data(prepared=True), kind=kind, limit=limit, split=split,
                                 seed=seed)
    report = result.to_dict()
    skipped = ", ".join(f"{reason}: {count}" for reason, count in report["skipped_by_reason"].items())
    kinds = ", ".join(sorted({scenario.kind for scenario in result.scenarios}))
    typer.echo(f"wrote {report['scenarios']:,} scenarios ({kinds}) to {out} from {report['records_read']:,} records of "
               f"{result.source}; skipped {report['skipped']:,}" + (f" ({skipped})" if skipped else "")
               + (f"; {result.not_drawn:,} not drawn by --limit" if result.not_drawn else "")
               + (f"; {result.renamed:,} reused task ids renamed ID#2, ID#3..." if result.renamed else ""))


# --------------------------------------------------------------------------- viewer
@app.command("view")
@friendly_errors
def view_command(
    paths: Annotated[list[str], typer.Argument(help="conversation files or folders, prepared folders, simulation run folders, "
                                                    "evaluate-assistant folders or a demo folder")],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)")] = 8765,
    no_open: Annotated[bool, typer.Option("--no-open", help="do not open a browser")] = False,
    allowed_host: Annotated[list[str] | None, typer.Option("--allowed-host", help="another Host name the page is reached by (repeatable; localhost, 127.0.0.1 and [::1] are always accepted)")] = None,
) -> None:
    """Browse conversations in a local web page: filter, search, inline events, real vs simulated side by side."""
    from userloop.report.viewer_server import view

    progress = _counter("indexing")
    task = progress.add_task("index", total=None)
    progress.start()

    def ready(url: str, index) -> None:
        progress.stop()
        overview = index.overview()
        typer.echo(f"viewing {overview['conversations']:,} conversations ({overview['real']:,} real, "
                   f"{overview['simulated']:,} simulated, {overview['unreadable']:,} unreadable records) at {url} ; "
                   "Ctrl-C stops")
        sys.stdout.flush()

    try:
        view(paths, port=port, open_browser=not no_open, on_ready=ready,
             on_progress=lambda n: progress.advance(task, n), allowed_hosts=allowed_host or ())
    except KeyboardInterrupt:
        typer.echo("viewer stopped", err=True)
        if _sigterm_received:
            raise typer.Exit(_stopped()[1]) from None
    finally:
        progress.stop()


@app.command("report")
@friendly_errors
def report_command(
    directory: Annotated[Path, typer.Argument(help="a demo folder (written by 'userloop demo': manifest.json and the stages' outputs)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the HTML file to write (default: DIR/report/index.html)")] = None,
) -> None:
    """Rebuild the static HTML report of a demo folder (opens from disk: no server, no network)."""
    from userloop.report import build_report

    typer.echo(f"wrote {build_report(directory, out)}")


# --------------------------------------------------------------------------- demo
def _demo_default(name: str):
    from userloop.demo import DemoConfig

    return next(f.default for f in fields(DemoConfig) if f.name == name)


@contextmanager
def _stage_bars():
    """One progress bar per demo stage (on stderr; each stays as a finished line); yields the demo's progress."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from userloop.demo import StageBar

    class Bar(StageBar):
        def __init__(self, task) -> None:
            self.task = task

        def start(self, total: int | None, note: str = "", completed: int = 0) -> None:
            bars.update(self.task, total=total, completed=completed, note=note)

        def advance(self, n: int = 1) -> None:
            bars.advance(self.task, n)

        def set(self, completed: int, total: int | None) -> None:
            bars.update(self.task, completed=completed, total=total)

    @contextmanager
    def stage(title: str):
        bars.start()  # with the first stage: an error found before any stage runs stays the only line
        task = bars.add_task(title, total=None, note="")
        try:
            yield Bar(task)
        finally:
            total = bars.tasks[task].total
            bars.update(task, total=total or 1, completed=total or 1)
            bars.stop_task(task)

    bars = Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                    TimeElapsedColumn(), console=Console(stderr=True))
    try:
        yield stage
    finally:
        if bars.live.is_started:
            bars.stop()


@app.command("demo")
@friendly_errors
@calls_models
def demo_command(
    out: Annotated[str, typer.Option("--out", "-o", help=_demo_help("out"))] = _demo_default("out"),
    data: Annotated[str | None, typer.Option("--data", help=_demo_help("data"))] = None,
    user_model: Annotated[str | None, typer.Option("--user-model", help=_demo_help("user_model"))] = None,
    assistant: Annotated[str | None, typer.Option("--assistant", help=_demo_help("assistant"))] = None,
    judge: Annotated[str | None, typer.Option("--judge", help=_demo_help("judge"))] = None,
    seed: Annotated[int, typer.Option(help=_demo_help("seed"))] = _demo_default("seed"),
    users: Annotated[int, typer.Option(help=_demo_help("users"))] = _demo_default("users"),
    user_lm_steps: Annotated[int, typer.Option(help=_demo_help("user_lm_steps"))] = _demo_default("user_lm_steps"),
    assistant_steps: Annotated[int, typer.Option(help=_demo_help("assistant_steps"))] = _demo_default("assistant_steps"),
    hidden_size: Annotated[int, typer.Option(help=_demo_help("hidden_size"))] = _demo_default("hidden_size"),
    conversations: Annotated[int, typer.Option(help=_demo_help("conversations"))] = _demo_default("conversations"),
    math_tasks: Annotated[int, typer.Option(help=_demo_help("math_tasks"))] = _demo_default("math_tasks"),
    max_turns: Annotated[int, typer.Option(help=_demo_help("max_turns"))] = _demo_default("max_turns"),
    max_new_tokens: Annotated[int, typer.Option(help=_demo_help("max_new_tokens"))] = _demo_default("max_new_tokens"),
    eval_conversations: Annotated[int, typer.Option(help=_demo_help("eval_conversations"))] = _demo_default("eval_conversations"),
    dpo_steps: Annotated[int, typer.Option(help=_demo_help("dpo_steps"))] = _demo_default("dpo_steps"),
    usereval_requests: Annotated[int, typer.Option(help=_demo_help("usereval_requests"))] = _demo_default("usereval_requests"),
    force: Annotated[bool, typer.Option("--force", help=_demo_help("force"))] = False,
) -> None:
    """The main job end to end: testbed, tiny user LM and assistant, simulations, simulator metrics, RLHI, DPO,
    UserEval, and one HTML report (docs/demo.md)."""
    from userloop.demo import DemoConfig, read_manifest, run_demo
    from userloop.logs import library_log

    config = DemoConfig(out=out, data=data, user_model=user_model, assistant=assistant, judge=judge, seed=seed,
                        users=users, user_lm_steps=user_lm_steps, assistant_steps=assistant_steps, hidden_size=hidden_size,
                        conversations=conversations, math_tasks=math_tasks, max_turns=max_turns,
                        max_new_tokens=max_new_tokens, eval_conversations=eval_conversations, dpo_steps=dpo_steps,
                        usereval_requests=usereval_requests, force=force)
    config.validate()
    with library_log(out), _stage_bars() as progress:
        report = run_demo(config, progress)
    for stage in read_manifest(out)["stages"]:
        peak = stage.get("peak_rss_mb")  # absent in manifests of earlier versions; None where not measured
        memory = f"{peak:>6,.0f} MB" if peak is not None else " " * 9
        typer.echo(f"{stage['title']:<40} {stage['status']:<8} {stage['seconds']:>7.1f}s {memory}  {stage['detail']}")
    typer.echo(f"report: {report} (open it in a browser; {Path(out) / 'manifest.json'} lists every output)")
    typer.echo(f"browse the conversations: userloop view {out}")


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":
    sys.exit(main())
