"""The ``userloop`` command: a thin typer layer; each command calls one library function.

Options come from the config dataclasses (:mod:`userloop.cli_options`), what a command shows from
:mod:`userloop.display`, one-line errors from :mod:`userloop.cli_errors`. Heavy libraries are imported inside the
commands, so ``userloop --help`` stays fast.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from userloop import display
from userloop.cli_errors import OneLineUsageErrors, friendly_errors, on_sigterm, resumable, stopped
from userloop.cli_options import Flag, as_text, command, default_data, print_version
from userloop.config import avoid_termination_turns
from userloop.errors import UserError
from userloop.files import check_output_file

app = typer.Typer(help="userloop: model the users of chat assistants.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=OneLineUsageErrors)
data_app = typer.Typer(help="Read, prepare and summarise chat logs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
testbed_app = typer.Typer(help="The built-in population of simulated users with known ground truth.", no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")
rlhi_app = typer.Typer(help="RLHI: learn from users' follow-ups: classify them, derive personas, build preference pairs.",
                       no_args_is_help=True)
app.add_typer(rlhi_app, name="rlhi")
train_app = typer.Typer(help="Train models on prepared conversations.", no_args_is_help=True)
app.add_typer(train_app, name="train")
runs_app = typer.Typer(help="Inspect and compare simulation runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
scenarios_app = typer.Typer(help="Scenario files for simulations: math, code and open-intent tasks.", no_args_is_help=True)
app.add_typer(scenarios_app, name="scenarios")

GUARDRAILS = "userloop.userlm.simulator:GuardrailConfig"
SERVE = "userloop.userlm.serving:ServeConfig"
BUILD = "userloop.rlhi.build:BuildConfig"
SIMULATION = "userloop.simulate.runs:SimulationConfig"
REQUIRED = Flag(required=True)
PATH = Flag(type=Path | None, to_field=as_text)  # a path option for a field that holds text


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True, help="print the version")] = False) -> None:
    """userloop: model the users of chat assistants."""


# --------------------------------------------------------------------------- data, testbed
@command(data_app, "prepare", "userloop.data.prepare:PrepareConfig",
         language=Flag(type=str, to_field=lambda language: None if language.lower() == "any" else language),
         drop_toxic=Flag(("--drop-toxic/--keep-toxic",)), drop_redacted=Flag(("--drop-redacted/--keep-redacted",)),
         drop_synthetic=Flag(("--drop-synthetic/--keep-synthetic",)))
def prepare_command(out: Annotated[Path, typer.Option("--out", "-o", help="output folder: train/validation/test.parquet, report.json, bad_lines.jsonl")],
                    inputs: Annotated[list[str] | None, typer.Argument(help="files (.jsonl, .jsonl.gz, .json, .parquet), folders of shards, or dataset ids (hf:NAME[:SPLIT]); default: the built-in testbed")] = None, *, config) -> None:
    """Filter, dedupe and split chat logs into Parquet (the UserLM paper's recipe)."""
    from userloop.data.prepare import prepare
    from userloop.data.sources import expand_inputs

    inputs = inputs or [str(default_data(prepared=False) / "conversations.jsonl")]
    expand_inputs(inputs)  # a missing input is reported before any work starts
    with display.Counter("preparing") as counter:
        result = prepare(inputs, out, config, on_progress=counter.advance)
    display.prepare_summary(result.report, result.out)


@command(data_app, "stats")
def stats_command(paths: Annotated[list[str] | None, typer.Argument(help="inputs as for 'prepare', or a prepared folder; default: the built-in testbed, prepared")] = None,
                  format: Annotated[str | None, typer.Option("--format", help="force the input format")] = None,
                  as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False) -> None:
    """Summarise conversations: counts, turns, lengths, languages, users."""
    from userloop.data.sources import expand_inputs
    from userloop.data.summary import stats

    paths = paths or [str(default_data(prepared=True))]
    expand_inputs(paths)
    with display.Counter("reading") as counter:
        summary = stats(paths, fmt=format, on_progress=counter.advance)
    display.echo_json(summary) if as_json else display.stats_tables(summary)


@command(data_app, "synthetic")
def synthetic_command(out: Annotated[Path, typer.Option("--out", "-o", help="file to write (.jsonl or .jsonl.gz)")],
                      n: Annotated[int, typer.Option("--n", help="number of conversations")] = 5000,
                      seed: Annotated[int, typer.Option(help="random seed")] = 0) -> None:
    """Write random conversations in the WildChat layout (for trying the pipeline; no behaviour)."""
    from userloop.data.synthetic import write_wildchat

    if n < 1:
        raise UserError("--n must be at least 1")
    check_output_file(out, "conversations.jsonl")
    write_wildchat(out, n, seed)
    typer.echo(f"wrote {n:,} WildChat-layout conversations to {out}")


@command(testbed_app, "generate")
def testbed_generate_command(out: Annotated[Path, typer.Option("--out", "-o", help="folder for conversations.jsonl, truth.jsonl and summary.json")],
                             users: Annotated[int, typer.Option("--users", help="number of simulated users")] = 2000,
                             seed: Annotated[int, typer.Option(help="random seed (the same seed gives the same population)")] = 0) -> None:
    """Generate simulated users with known personas and their conversations (WildChat layout) plus the truth."""
    from userloop.testbed import generate

    with display.bars() as progress, progress("generating users", users) as bar:
        population = generate(users, seed, on_progress=bar)
    population.write(out)
    display.testbed_summary(out)


# --------------------------------------------------------------------------- models and user LMs
@command(app, "serve", SERVE)
def serve_command(spec: Annotated[str, typer.Argument(help="model to serve: hf:PATH_OR_HUB_ID (or scripted:FILE.json for demos); with --simulator any user-LM spec (hf:, openai:, vllm:, prompted:, scripted:)")], *, config) -> None:
    """Serve a model over the OpenAI chat-completions API (/v1/chat/completions, /v1/models, /health)."""
    from userloop.userlm.serving import serve_model

    serve_model(spec, config, on_ready=display.serving(spec, config))


@command(app, "intents", models=True, config_file=True)
def intents_command(out: Annotated[Path, typer.Option("--out", "-o", help="output folder: a copy of DATA (same splits) with every conversation's intent filled")],
                    data: Annotated[Path | None, typer.Option("--data", help="a folder written by 'userloop data prepare' (default: the built-in testbed, prepared)")] = None,
                    model: Annotated[str | None, typer.Option("--model", help="model that writes the intents (hf:, openai:, vllm:, scripted:); without it, the offline rules")] = None,
                    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace intents the conversations already carry (the testbed's are true ones)")] = False,
                    seed: Annotated[int, typer.Option(help="sampling seed of the model")] = 0) -> None:
    """Write one high-level intent per conversation, as the UserLM paper conditions its user LM."""
    from userloop.userlm.intents import count_conversations, write_intents

    data = data or default_data(prepared=True)
    with display.bars() as progress, progress("writing intents", count_conversations(data)) as bar:
        result = write_intents(data, out, model=model, overwrite=overwrite, seed=seed, on_progress=bar)
    display.intents_summary(result.report, result.out)


@command(app, "user-turn", GUARDRAILS, models=True, end_token_ids=Flag(("--end-token-id",)),
         avoid_termination_turns=Flag(type=str, default="2", to_field=avoid_termination_turns,
                                      help="how many user turns may not end the conversation: a number, or 'always'"))
def user_turn_command(user: Annotated[str, typer.Option("--user", help="the user LM: hf:PATH, openai:MODEL@URL (served with the UserLM chat template), scripted:FILE.json")],
                      intent: Annotated[str, typer.Option("--intent", help="the task intent (the system message), e.g. 'You are a user chatting with an assistant language model to ...'")],
                      history: Annotated[Path | None, typer.Option("--history", help="JSON file: a list of messages (user first, alternating, ending with the assistant) or an object with 'messages'")] = None,
                      *, config,
                      seed: Annotated[int | None, typer.Option(help="sampling seed (the same seed gives the same turn)")] = None,
                      temperature: Annotated[float, typer.Option(help="sampling temperature (model card: 1.0)")] = 1.0,
                      top_p: Annotated[float, typer.Option(help="nucleus sampling (model card: 0.8)")] = 0.8,
                      max_new_tokens: Annotated[int, typer.Option(help="most tokens per sample")] = 96) -> None:
    """Write the user's next turn and print {"text", "ended", "events"} as one JSON object."""
    import orjson

    from userloop.models import GenerationParams
    from userloop.userlm.simulator import UserSimulator, read_history, user_prompt

    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    messages = read_history(history) if history else []
    user_prompt(intent, messages)  # a bad intent or history fails before the model loads
    turn = UserSimulator(user, config, params).next_turn(intent, messages)
    typer.echo(orjson.dumps(turn.to_dict()).decode())


# --------------------------------------------------------------------------- RLHI
_DATA_HELP = "conversations (file, folder or prepared folder); default: the built-in testbed, prepared"
_PREPARED_HELP = "a prepared folder; default: the built-in testbed, prepared"


@command(app, "personas", BUILD, fields=("min_conversations", "persona_model", "classifier"), models=True)
def personas_command(out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file: one persona per user (user_id, persona, structured fields)")],
                     data: Annotated[Path | None, typer.Option("--data", help=_DATA_HELP)] = None, *, config) -> None:
    """Derive each user's persona from their conversation history (RLHI)."""
    from userloop.rlhi.build import derive_personas

    with display.bars() as progress:
        counts = derive_personas(data or default_data(prepared=True), out, config, progress=progress)
    display.personas_summary(counts, out, config.min_conversations)


@command(rlhi_app, "build", BUILD, models=True)
def rlhi_build_command(out: Annotated[Path, typer.Option("--out", "-o", help="folder: followups.jsonl, personas.jsonl, pairs.parquet, pairs_dataset/, report.json")],
                       data: Annotated[Path | None, typer.Option("--data", help=_DATA_HELP)] = None, *, config) -> None:
    """Classify follow-ups, derive personas, rewrite answers the users complained about, write preference pairs."""
    from userloop.rlhi.build import build

    with display.bars(log_to=out) as progress:
        report = build(data or default_data(prepared=True), out, config, progress=progress)
    display.rlhi_build_summary(report, out)


@command(rlhi_app, "evaluate")
def rlhi_evaluate_command(data: Annotated[Path | None, typer.Option("--data", help="a testbed folder (raw or prepared, with its truth); default: the built-in testbed, prepared")] = None,
                          real_labels: Annotated[Path | None, typer.Option(help="hand-labelled OASST follow-ups (JSONL of message ids, labels, span offsets)")] = None,
                          oasst: Annotated[Path | None, typer.Option(help="folder of the OASST trees the labels refer to")] = None,
                          as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False) -> None:
    """Precision / recall / F1 per class of the offline follow-up classifier, and persona accuracy."""
    from userloop.rlhi.extraction_eval import evaluate

    report = evaluate(data or default_data(prepared=True), real_labels, oasst)
    display.echo_json(report) if as_json else display.rlhi_evaluation_tables(report)


@command(rlhi_app, "policy-data")
def rlhi_policy_data_command(out: Annotated[Path, typer.Option("--out", "-o", help="folder: the prepared splits with each user's persona as a system message")],
                             personas: Annotated[Path, typer.Option("--personas", help="personas.jsonl of 'rlhi build' (derived personas)")],
                             data: Annotated[Path | None, typer.Option("--data", help=_PREPARED_HELP)] = None) -> None:
    """Write the base policy's training data: conversations conditioned on the user's derived persona."""
    from userloop.rlhi.policy import write_policy_data

    display.policy_data_summary(write_policy_data(data or default_data(prepared=True), personas, out), out)


@command(rlhi_app, "rewards", "userloop.rlhi.user_rewards:RewardsConfig", first=("policy", "out", "scorer", "data", "n"), policy=REQUIRED, models=True)
def rlhi_rewards_command(out: Annotated[Path, typer.Option("--out", "-o", help="folder: pairs.parquet, pairs_dataset/, report.json")],
                         data: Annotated[Path | None, typer.Option("--data", help=_PREPARED_HELP)] = None, *, config) -> None:
    """User-based rewards: sample N answers for requests without feedback, score them for the user, pair best with worst."""
    from userloop.rlhi.user_rewards import user_based_rewards

    with display.bars(log_to=out) as progress:
        report = user_based_rewards(data or default_data(prepared=True), out, config, progress=progress)
    display.rewards_summary(report, out)


@command(rlhi_app, "loop", "userloop.rlhi.loop:LoopConfig", first=("policy", "user", "out"), policy=REQUIRED, user=REQUIRED,
         data=PATH, personas=PATH, models=True)
def rlhi_loop_command(out: Annotated[Path, typer.Option("--out", "-o", help="folder: config.json, users.json, rounds.jsonl, round-K/, report.json, report.md (a re-run resumes)")], *, config) -> None:
    """Close the loop: simulated users talk to the policy, their follow-ups become RLHI pairs, DPO, repeat; evaluated on held-out users."""
    from userloop.rlhi.loop import run_loop

    if config.data is None:
        config.data = str(default_data(prepared=True))
    with display.bars(log_to=out) as progress:
        report = run_loop(config, out, progress=progress)
    display.loop_summary(report, out)


@command(rlhi_app, "anchors", "userloop.rlhi.task_answers:AnchorsConfig", first=("policy", "tasks", "data", "personas"),
         policy=REQUIRED, data=PATH, personas=PATH)
def rlhi_anchors_command(out: Annotated[Path, typer.Option("--out", "-o", help="the anchors file (JSONL; its counts go to NAME.report.json beside it)")], *, config) -> None:
    """Checked anchors for 'train dpo --anchors': the policy's answers to training users' tasks that pass the task's check."""
    from userloop.rlhi.task_answers import make_anchors

    with display.bars(log_to=out.parent) as progress:
        display.anchors_summary(make_anchors(config, out, progress=progress), out)


@command(app, "eval-personal", "userloop.rlhi.usereval:UserEvalConfig", first=("policy", "baseline", "out", "judge", "data"),
         policy=REQUIRED, baseline=REQUIRED, models=True)
def eval_personal_command(out: Annotated[Path, typer.Option("--out", "-o", help="folder: report.json and comparisons.jsonl (every answer and verdict)")],
                          data: Annotated[Path | None, typer.Option("--data", help=_PREPARED_HELP)] = None, *, config) -> None:
    """UserEval: personalised and overall win rates of a policy against a baseline on held-out users (both orders, ties half)."""
    from userloop.rlhi.usereval import eval_personal

    with display.bars(log_to=out) as progress:
        report = eval_personal(data or default_data(prepared=True), out, config, progress=progress)
    display.usereval_summary(report, out)


# --------------------------------------------------------------------------- train (TrlParser: --config and --FIELD flags)
_TRAIN = {"add_help_option": False, "context_settings": {"allow_extra_args": True, "ignore_unknown_options": True}}


@train_app.command("user-lm", **_TRAIN)
@friendly_errors
def train_user_lm_command(ctx: typer.Context) -> None:
    """Train a user LM on flipped conversations: --config FILE.yaml and/or --FIELD VALUE flags (--help lists them)."""
    _train_chat_lm(ctx.args, "user")


@train_app.command("assistant", **_TRAIN)
@friendly_errors
def train_assistant_command(ctx: typer.Context) -> None:
    """Train the same model as an assistant (loss on assistant turns): the same flags as 'train user-lm'."""
    _train_chat_lm(ctx.args, "assistant")


def _train_chat_lm(args: list[str], role: str) -> None:
    from userloop.userlm.train import parse_config, train_user_lm

    config = parse_config(args, role)
    display.user_lm_training_summary(display.run_training(train_user_lm, config))


@train_app.command("dpo", **_TRAIN)
@friendly_errors
def train_dpo_command(ctx: typer.Context) -> None:
    """Persona-conditioned DPO (offline on --pairs, or --online iterative), or SFT on the chosen answers (--method sft)."""
    from userloop.rlhi.dpo import parse_config, train_dpo

    config = parse_config(ctx.args)
    display.dpo_summary(display.run_training(train_dpo, config), config)


@train_app.command("reward", **_TRAIN)
@friendly_errors
def train_reward_command(ctx: typer.Context) -> None:
    """Train a persona-conditioned reward model (TRL RewardTrainer): --config FILE.yaml and/or --FIELD VALUE flags (--help lists them)."""
    from userloop.rlhi.reward_model import parse_config, train_reward_model

    config = parse_config(ctx.args)
    display.reward_model_summary(display.run_training(train_reward_model, config))


# --------------------------------------------------------------------------- simulations and their metrics
@command(app, "eval-ppl", config_file=True)
def eval_ppl_command(checkpoint: Annotated[Path, typer.Argument(help="a user LM folder (UserLM special tokens), e.g. from 'userloop train user-lm'")],
                     data: Annotated[Path | None, typer.Option(help="prepared folder; default: the built-in testbed, prepared")] = None,
                     split: Annotated[str, typer.Option(help="split to score: train, validation or test")] = "test",
                     max_conversations: Annotated[int | None, typer.Option(help="score only the first N conversations")] = None,
                     batch_size: Annotated[int, typer.Option(help="conversations per forward pass")] = 8,
                     max_batch_tokens: Annotated[int, typer.Option(help="most padded tokens per forward pass (a longer conversation alone)")] = 4096,
                     max_length: Annotated[int, typer.Option(help="longest sequence in tokens; turns beyond it are not scored")] = 2048,
                     device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
                     as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Per-token perplexity of real user turns, with and without the intent (the paper's Table 1)."""
    from userloop.metrics.perplexity import user_turn_perplexity

    with display.bars() as progress, progress("scoring") as bar:
        result = user_turn_perplexity(checkpoint, data or default_data(prepared=True), split, max_conversations, batch_size,
                                      max_length, device, max_batch_tokens, on_progress=bar, on_total=bar.start)
    display.echo_json(result) if as_json else display.perplexity_summary(result, checkpoint, split)


@command(app, "simulate", SIMULATION, first=("user", "assistant", "scenarios", "out"), assistant=REQUIRED,
         user=Flag(type=str, required=True, help="the simulated user LM: hf:PATH, openai:MODEL@URL (UserLM template), prompted:SPEC, scripted:FILE.json"),
         scenarios=Flag(type=Path, required=True, to_field=as_text), max_user_turns=Flag(("--max-turns",)), models=True)
def simulate_command(out: Annotated[Path, typer.Option("--out", "-o", help="run folder: conversations.jsonl, run.json, summary.json, summary.md (an existing run is resumed)")],
                     *, config,
                     max_conversations: Annotated[int | None, typer.Option(help="stop after this many new conversations (resume later)")] = None,
                     force: Annotated[bool, typer.Option("--force", help="continue a run folder made with a different configuration")] = False,
                     retry_errors: Annotated[bool, typer.Option("--retry-errors", help="run again the conversations of this run folder that ended in error")] = False,
                     as_json: Annotated[bool, typer.Option("--json", help="print summary.json instead of the summary lines")] = False) -> None:
    """Simulate N conversations per scenario between a user LM and an assistant (resumable run folder).

    Exits 1 when every conversation in the run ended in error (the first error is printed), else 0."""
    from userloop.metrics.run_realism import simulate_with_realism

    with resumable(out), display.bars(log_to=out) as progress:
        result = simulate_with_realism(config, out, force=force, max_conversations=max_conversations,
                                       retry_errors=retry_errors, progress=progress)
    display.echo_json(result.summary) if as_json else display.simulation_summary(result)
    overall = result.summary["overall"]
    if overall["end_reasons"]["error"] and overall["end_reasons"]["error"] == result.summary["conversations"]:
        typer.echo(f"error: every conversation ended in error, the first with: {overall['first_error']}", err=True)
        raise typer.Exit(1)


@command(app, "evaluate-assistant", SIMULATION, fields=("assistant", "user", "scenarios", "n", "max_user_turns", "seed", "system_prompt", "classifier",
             "assistant_max_new_tokens", "concurrency", "max_batch_size"),
         first=("assistant", "user", "scenarios", "out"), assistant=REQUIRED,
         user=Flag(type=str, required=True, help="the simulated user of the multi-turn setting (a model spec)"),
         scenarios=Flag(type=Path, required=True, help="JSONL file of math/code scenarios (see docs/scenarios.md)"),
         max_user_turns=Flag(("--max-turns",)), models=True)
def evaluate_assistant_command(out: Annotated[Path, typer.Option("--out", "-o", help="folder: single_turn/ and multi_turn/ run folders, report.json, report.md")],
                               force: Annotated[bool, typer.Option("--force", help="continue run folders made with a different configuration")] = False,
                               **options) -> None:
    """Score an assistant on the same problems fully specified in one turn vs revealed by a simulated user."""
    from userloop.simulate.assistant_eval import evaluate_assistant, report_markdown

    with resumable(out), display.bars(log_to=out) as progress:
        report = evaluate_assistant(options.pop("assistant"), options.pop("user"), options.pop("scenarios"), out,
                                    force=force, progress=progress, **options)
    display.assistant_eval_summary(report_markdown(report), out)


@command(runs_app, "compare")
def runs_compare_command(run_a: Annotated[Path, typer.Argument(help="a run folder (with summary.json)")],
                         run_b: Annotated[Path, typer.Argument(help="another run folder")]) -> None:
    """Two simulation runs side by side (Markdown), with the differences."""
    from userloop.simulate.runs import compare_runs

    typer.echo(compare_runs(run_a, run_b), nl=False)


@command(runs_app, "merge")
def runs_merge_command(
    shards: Annotated[list[Path], typer.Argument(help="the run folders of shards 1/N .. N/N (simulate --shard I/N)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the merged run folder (new or empty)")],
    scenarios: Annotated[Path | None, typer.Option(help="the scenario file, when the path in the shards' run.json is not on this machine (same content)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print summary.json instead of the summary lines")] = False) -> None:
    """Join the shards of a simulation into one run folder; refuses shards that are missing, from another run, or
    with a conversation not recorded or recorded by the wrong shard."""
    from userloop.simulate.runs import merge_runs

    summary = merge_runs(shards, out, scenarios)
    display.echo_json(summary) if as_json else display.merge_summary(summary, out)


@command(app, "eval-sim", "userloop.metrics.evalsim:EvalSimConfig", models=True,
         role_probes=PATH, intent_probes=PATH)
def eval_sim_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: metrics.json, details.json, table.md, charts/*.png")],
    sim: Annotated[list[str] | None, typer.Option("--sim", help="a simulator, NAME=SPEC or SPEC (hf:PATH user LM, prompted:INNER_SPEC, openai:, scripted:); repeatable; none: only the Human row")] = None,
    data: Annotated[Path | None, typer.Option(help="prepared folder; default: the built-in testbed, prepared")] = None, *, config) -> None:
    """Score user simulators with the metrics of "Flipping the Dialogue" (Table 2), perplexity and behavioural fidelity."""
    from userloop.metrics.evalsim import eval_sim, parse_sims

    sims = parse_sims(sim or [])
    with display.bars(log_to=out) as progress:
        eval_sim(sims, data or default_data(prepared=True), out, config, progress=progress)
    display.eval_sim_summary(out)


@command(app, "eval-validity", "userloop.metrics.validity:ValidityConfig", models=True, panel=PATH, data=PATH)
def eval_validity_command(out: Annotated[Path, typer.Option("--out", "-o", help="folder: report.json, report.md, scenarios.jsonl, runs/ (resumed when rerun)")], *, config,
                          as_json: Annotated[bool, typer.Option("--json", help="print report.json instead of the tables")] = False) -> None:
    """Rank a panel of assistants with each user simulator and with the ground-truth testbed users: rank correlation, outcome errors, multi-turn drop."""
    from userloop.metrics.validity import eval_validity

    with resumable(out), display.bars(log_to=out) as progress:
        report = eval_validity(config, out, progress=progress)
    display.validity_summary(report, out, as_json)


@command(app, "eval-persona-sim", "userloop.metrics.persona_fidelity:PersonaSimConfig", personas=Flag(type=Path, required=True, to_field=as_text),
         assistant=REQUIRED, data=PATH, truth=PATH, max_user_turns=Flag(("--max-turns",)), models=True)
def eval_persona_sim_command(out: Annotated[Path, typer.Option("--out", "-o", help="output folder: report.json, report.md, scenario files, sim-NAME/ run folders (resumed when rerun)")], *, config) -> None:
    """Do simulated users given persona P behave like the real users with P? Per persona field, against an unconditioned user LM."""
    from userloop.metrics.persona_fidelity import evaluate_persona_sim

    if config.data is None:
        default_data(prepared=True)
    with resumable(out), display.bars() as progress:
        report = evaluate_persona_sim(config, out, progress=progress, on_message=lambda m: typer.echo(m, err=True))
    display.persona_sim_summary(report, out)


# --------------------------------------------------------------------------- scenarios, viewer, report, demo
@command(scenarios_app, "build")
def scenarios_build_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="scenario file to write (JSONL)")],
    source: Annotated[Path | None, typer.Option(help="a Lost-in-Conversation sharded math file, a GSM8K JSONL, a HumanEval JSONL(.gz), a prepared data folder, with --kind math a testbed folder (its sharded word problems), with --kind tool a domain: shop or tau:FOLDER; default: the built-in testbed (--kind tool: shop)")] = None,
    kind: Annotated[str | None, typer.Option(help="expected kind: open, math, code or tool (checked against the source)")] = None,
    limit: Annotated[int | None, typer.Option(help="keep this many scenarios, drawn at random with --seed")] = None,
    split: Annotated[str | None, typer.Option(help="split of a prepared data folder (default: test)")] = None,
    seed: Annotated[int, typer.Option(help="random seed for --limit")] = 0,
    testbed_users: Annotated[bool, typer.Option(help="one scenario per conversation of a testbed folder (or a folder prepared from one) for --user testbed:users (docs/testbed.md)")] = False) -> None:
    """Build a scenario file (docs/scenarios.md) from a task dataset or prepared conversations."""
    from userloop.simulate.scenarios import build_scenario_file, write_scenarios
    from userloop.simulate.testbed_users import testbed_scenarios

    check_output_file(out, "scenarios.jsonl")
    source = source if source or kind == "tool" else default_data(prepared=True)
    if testbed_users:
        if kind is not None:
            raise UserError("--testbed-users builds the scenarios of its own kinds: leave out --kind")
        result = testbed_scenarios(source, split=split, limit=limit, seed=seed)
        write_scenarios(result.scenarios, out)
    else:
        result = build_scenario_file(out, source, kind=kind, limit=limit, split=split, seed=seed)
    display.scenarios_summary(result, out)


@command(app, "view")
def view_command(
    paths: Annotated[list[str], typer.Argument(help="conversation files or folders, prepared folders, simulation run folders, evaluate-assistant folders or a demo folder")],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)")] = 8765,
    no_open: Annotated[bool, typer.Option("--no-open", help="do not open a browser")] = False,
    allowed_host: Annotated[list[str] | None, typer.Option("--allowed-host", help="another Host name the page is reached by (repeatable; localhost, 127.0.0.1 and [::1] are always accepted)")] = None) -> None:
    """Browse conversations in a local web page: filter, search, inline events, real vs simulated side by side."""
    from userloop.report.viewer_server import view

    try:
        with display.Counter("indexing") as counter:
            view(paths, port=port, open_browser=not no_open, on_ready=display.viewer_ready(counter),
                 on_progress=counter.advance, allowed_hosts=allowed_host or ())
    except KeyboardInterrupt:
        typer.echo("viewer stopped", err=True)
        word, status = stopped()
        if word == "terminated":
            raise typer.Exit(status) from None


@command(app, "report")
def report_command(
    directory: Annotated[Path, typer.Argument(help="a demo folder ('userloop demo': manifest.json, the stages' outputs) or an eval-validity folder")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the HTML file to write (default: DIR/report/index.html)")] = None) -> None:
    """Rebuild the static HTML report of a demo folder, or write one of an eval-validity folder (opens from disk)."""
    from userloop.report import build_report

    typer.echo(f"wrote {build_report(directory, out)}")


@command(app, "demo", "userloop.demo:DemoConfig", out=Flag(("--out", "-o")), models=True)
def demo_command(*, config) -> None:
    """The main job end to end: testbed, tiny user LM and assistant, simulations, simulator metrics, RLHI, DPO,
    UserEval, and one HTML report (docs/demo.md)."""
    from userloop.demo import run_demo
    from userloop.report.manifest import read_manifest

    with display.bars(keep=True, log_to=config.out) as progress:
        report = run_demo(config, progress)
    display.demo_summary(read_manifest(config.out), report, config.out)


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    app()


if __name__ == "__main__":
    sys.exit(main())
