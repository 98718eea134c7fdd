"""Run folders: simulate into ``RUN/``, resume, summarise, compare.

``RUN/`` holds ``run.json`` (the configuration and the scenario file's SHA-256), ``conversations.jsonl``
(one record per finished conversation, appended and flushed one by one, so a crash loses only the
conversations in flight), ``summary.json`` and ``summary.md``. Running the same command again resumes:
a torn last line (a write cut by a crash) is cut off and counted, finished (scenario_id, sample) keys
are skipped, the rest are simulated. A different configuration is refused unless ``force``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from userloop.config import option
from userloop.data.sources import prepared_splits
from userloop.errors import UserError
from userloop.files import read_user_bytes, read_user_json, write_atomic
from userloop.models import GenerationParams, load_model
from userloop.models.registry import PROVIDERS, canonical_spec, load_role, needs_testbed, role_spec
from userloop.progress import Progress, no_progress
from userloop.simulate.answer_check import score_reply
from userloop.simulate.cost import check_priced, load_prices, run_cost
from userloop.simulate.engine import END_REASONS, SimulationEngine, pending_jobs
from userloop.simulate.records import RecordError, SimulatedConversation
from userloop.simulate.reply_kinds import REPLY_KINDS, load_reply_classifier
from userloop.simulate.reveal_stats import simulation_statistics
from userloop.simulate.scenarios import load_scenarios
from userloop.statistics import wilson_interval
from userloop.userlm.simulator import UserSimulator, guardrails_for
from userloop.version import __version__, package_versions

RECORDS = "conversations.jsonl"
RUN_FILE = "run.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
# Fields that change how fast a run goes or what its summary reports, not what it produces: a resume may change
# them, and run.json does not record them.
NOT_IDENTITY = ("concurrency", "max_batch_size", "prices", "data")
# Fields added after run.json files were first written, with the value that means what runs did before them: at
# that value they are left out of the identity, so older run folders resume.
ADDED_LATER = {"shard": None, "max_tool_calls_per_turn": 8, "guardrails": "on"}


@dataclass(frozen=True)
class SimulationConfig:
    """What a run simulates; validated by :meth:`validate` (a bad value raises :class:`UserError`)."""

    assistant: str = option(None, "the assistant: a model spec (hf:PATH, openai:MODEL@URL, scripted:FILE.json, ...)")
    scenarios: str = option(None, "JSONL file of scenarios (see docs/scenarios.md)")
    user: str | None = option(None, "the simulated user: a model spec behind the UserLM guardrails; None runs the "
                                     "single-turn setting (each scenario's full_prompt as the one user turn)")
    guardrails: str = option("on", "the UserLM guardrails around a model user: on (the model card's four) or off "
                                   "(the raw model, as eval-sim measures it)")
    n: int = option(1, "conversations per scenario (samples 0..N-1)")
    max_user_turns: int = option(6, "most user turns per conversation (a scenario's own max_user_turns can lower it)")
    max_tool_calls_per_turn: int = option(8, "most tool calls the assistant may run per turn in tool scenarios "
                                             "(docs/agents.md)")
    seed: int = option(0, "run seed: sample k of scenario s samples with a seed derived from (seed, s, k)")
    system_prompt: str | None = option(None, "the assistant's system prompt (none by default)")
    classifier: str = option("rules:classifier", "reply classifier: rules:classifier or a model spec for an LLM judge")
    assistant_max_new_tokens: int = option(512, "most tokens per assistant reply")
    assistant_temperature: float | None = option(None, "assistant sampling temperature (None: the model's default)")
    user_max_new_tokens: int = option(96, "most tokens per user-turn sample")
    user_temperature: float = option(1.0, "user sampling temperature (UserLM-8b model card: 1.0)")
    user_top_p: float = option(0.8, "user nucleus sampling (UserLM-8b model card: 0.8)")
    concurrency: int = option(256, "most conversations live at once")
    max_batch_size: int | None = option(None, "rows per batch for hf: models (None: the provider's default, 64)")
    shard: str | None = option(None, "I/N: simulate only shard I of N (1 <= I <= N): every N-th (scenario, sample) "
                                     "conversation, one run folder per shard; 'userloop runs merge' joins them")
    prices: str | None = option(None, "YAML or JSON price table: model spec -> {prompt, completion} per 1M tokens; "
                                      "the summary then gives the run's cost per role (docs/simulate.md)")
    data: str | None = option(None, "prepared folder whose test split is the human reference of the summary's "
                                    "realism block (None: the simulated users' realism alone)")

    def validate(self) -> None:
        for name in ("assistant", "scenarios"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise UserError(f"{name} is required")
        for name, low in (("n", 1), ("max_user_turns", 1), ("assistant_max_new_tokens", 1), ("user_max_new_tokens", 1),
                          ("concurrency", 1), ("max_tool_calls_per_turn", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_batch_size is not None and (not isinstance(self.max_batch_size, int) or self.max_batch_size < 1):
            raise UserError(f"max_batch_size must be an integer >= 1, got {self.max_batch_size!r}")
        role_spec("assistant", self.assistant)
        if self.user is not None:
            role_spec("user", self.user)
        guardrails_for(self.guardrails)
        role_spec("reply_classifier", self.classifier)
        GenerationParams(temperature=self.assistant_temperature, seed=self.seed)
        GenerationParams(temperature=self.user_temperature, top_p=self.user_top_p)
        if self.shard is not None:
            parse_shard(self.shard)
        if self.prices is not None:
            check_priced(load_prices(self.prices), {"user": self.user, "assistant": self.assistant}, self.prices)
        if self.data is not None and "test" not in prepared_splits(Path(self.data)):
            raise UserError(f"--data {self.data}: not a prepared folder with a test split "
                            "(run 'userloop data prepare')")

    @property
    def setting(self) -> str:
        return "single_turn" if self.user is None else "multi_turn"

    def identity(self) -> dict[str, Any]:
        """The fields that decide what the run produces (what a resume must match)."""
        identity = {k: v for k, v in asdict(self).items()
                    if k not in NOT_IDENTITY and not (k in ADDED_LATER and v == ADDED_LATER[k])}
        return {**identity, "classifier": canonical_spec("reply_classifier", self.classifier)}


@dataclass
class SimulationResult:
    out: Path
    summary: dict[str, Any]
    finished_now: int
    resumed: int
    torn_lines: int


def simulate(config: SimulationConfig, out: str | Path, *, force: bool = False, max_conversations: int | None = None,
             retry_errors: bool = False, progress: Progress = no_progress,
             summary_sections: Callable[[list[SimulatedConversation]], dict[str, Any]] | None = None
             ) -> SimulationResult:
    """Simulate every (scenario, sample) of ``config`` not yet in ``out``; write records and the summary.

    ``max_conversations`` stops after that many new conversations (the rest stay for a resume).
    ``retry_errors`` first removes the records of conversations that ended in error (a server that was
    down), so they run again; without it they count as finished.
    Ctrl-C (``KeyboardInterrupt``) stops launching conversations; what finished is on disk, the
    summary is written and the interrupt propagates. ``summary_sections`` adds top-level sections to the summary
    from the run's records (a higher layer's measures: :func:`userloop.metrics.run_realism.simulate_with_realism`).
    """
    import orjson

    config.validate()
    if max_conversations is not None and max_conversations < 0:
        raise UserError(f"max_conversations must be >= 0, got {max_conversations}")
    scenarios = load_scenarios(config.scenarios)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a run folder: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    run_file = _checked_run_file(out, config, force)
    records, torn = read_records(out / RECORDS, repair=True)
    errors_removed = _without_errors(out / RECORDS, records) if retry_errors else 0
    jobs = _pending(scenarios, config, records)
    resumed = len(records)
    if max_conversations is not None:
        jobs = jobs[:max_conversations]
    with progress("simulating", resumed + len(jobs)) as task:
        task.set(resumed, resumed + len(jobs))
        engine = _engine(config) if jobs else None
        if run_file is not None:  # only once the models loaded: a typo in a spec leaves no run behind
            write_atomic(out / RUN_FILE, run_file)
        finished_now = 0
        try:
            if engine is not None:
                with (out / RECORDS).open("ab") as file:
                    def write(record: SimulatedConversation) -> None:
                        nonlocal finished_now
                        file.write(orjson.dumps(record.to_dict()) + b"\n")
                        file.flush()
                        records.append(record)
                        finished_now += 1
                        task.advance()

                    asyncio.run(_run(engine, jobs, write, task.count))
        finally:
            timings = engine.timings.to_dict() if engine is not None else _previous_timings(out)
            summary = summarize(records, scenarios, config, timings=timings,
                                resume={"records_before": resumed, "finished_now": finished_now, "torn_lines_repaired": torn,
                                        "errors_removed": errors_removed,
                                        "pending": len(_pending(scenarios, config, records))},
                                classifier=engine.classifier if engine is not None else None)
            if summary_sections is not None:
                summary.update(summary_sections(records))
            write_summary(out, summary)
    return SimulationResult(out, summary, finished_now, resumed, torn)


def _pending(scenarios, config: SimulationConfig, records: Sequence[SimulatedConversation]) -> list:
    """The jobs of the run (of its shard, with ``config.shard``) that have no record yet, scenario-major."""
    done = {r.key for r in records}
    jobs = pending_jobs(scenarios, config.n, set())
    if config.shard is not None:
        index, count = parse_shard(config.shard)
        jobs = jobs[index - 1::count]
    return [job for job in jobs if (job.scenario.id, job.sample) not in done]


def parse_shard(text: str) -> tuple[int, int]:
    """``(I, N)`` of a shard written ``I/N`` with 1 <= I <= N; anything else is a :class:`UserError`."""
    index, slash, count = str(text).partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit() and 1 <= int(index) <= int(count)):
        raise UserError(f"shard must be I/N with 1 <= I <= N (e.g. 2/8 for the second of eight), got {text!r}")
    return int(index), int(count)


def _without_errors(path: Path, records: list[SimulatedConversation]) -> int:
    """Rewrite the records file (atomically) without the conversations that ended in error, and drop them from
    ``records``; returns how many were removed."""
    import orjson

    kept = [record for record in records if not record.error]
    removed = len(records) - len(kept)
    if removed:
        write_atomic(path, b"".join(orjson.dumps(record.to_dict()) + b"\n" for record in kept))
        records[:] = kept
    return removed


def _previous_timings(out: Path) -> dict | None:
    """The timings of the last invocation that ran conversations (a rerun with nothing to do keeps them)."""
    import orjson

    try:
        return orjson.loads((out / SUMMARY_JSON).read_bytes()).get("timings")
    except (OSError, orjson.JSONDecodeError):
        return None


async def _run(engine, jobs, write, on_turns) -> None:
    models = [engine.assistant, *([engine.user.model] if isinstance(engine.user, UserSimulator) else []),
              *([engine.classifier.model] if hasattr(engine.classifier, "model") else [])]
    try:
        await engine.run(jobs, write, on_turns)
    finally:
        for model in models:
            await model.aclose()


def _engine(config: SimulationConfig):
    """The engine with its models loaded (hf: models get ``max_batch_size`` when set)."""
    def load(spec: str):
        options = {"max_batch_size": config.max_batch_size} if spec.startswith("hf:") and config.max_batch_size else {}
        return load_model(spec, **options)

    user = None
    if config.user is not None and needs_testbed("user", config.user):  # a built-in user: testbed:users
        user = load_role("user", config.user)
    elif config.user is not None:
        user = UserSimulator(load(config.user), guardrails_for(config.guardrails), params=GenerationParams(
            max_new_tokens=config.user_max_new_tokens, temperature=config.user_temperature, top_p=config.user_top_p))
    assistant = (load_role("assistant", config.assistant) if needs_testbed("assistant", config.assistant)
                 else load(config.assistant))
    assistant_params = GenerationParams(max_new_tokens=config.assistant_max_new_tokens,
                                        temperature=config.assistant_temperature)
    return SimulationEngine(assistant, user, load_reply_classifier(config.classifier), score_reply,
                            assistant_params=assistant_params, system_prompt=config.system_prompt,
                            max_user_turns=config.max_user_turns, seed=config.seed, concurrency=config.concurrency,
                            max_tool_calls_per_turn=config.max_tool_calls_per_turn)


# ---------------------------------------------------------------------- run folder
def _checked_run_file(out: Path, config: SimulationConfig, force: bool) -> bytes | None:
    """``run.json`` to write (None when the existing one matches); a different configuration in the
    existing one is a :class:`UserError` unless ``force`` (then the old one is kept under ``previous``),
    and so is a damaged ``run.json`` (``force`` replaces it). The scenario file is the same when its
    content is (its SHA-256), whatever path names it; ``run.json`` records its resolved path."""
    import orjson

    scenarios = Path(config.scenarios)
    current = {"config": {**config.identity(), "scenarios": str(scenarios.resolve())},
               "scenarios_sha256": hashlib.sha256(read_user_bytes(scenarios, "scenario file")).hexdigest()}
    path = out / RUN_FILE
    previous: list = []
    if path.exists():
        try:
            existing = read_user_json(path, "run file")
            if not isinstance(existing, dict):
                raise UserError(f"{path} is not a run file (a JSON object with the run's config)")
        except UserError as err:
            if not force:
                raise UserError(f"{err}; pass --force to replace it with this configuration (finished conversations "
                                "are kept), or choose a new --out") from None
            existing = {}
        else:
            recorded = {"config": existing.get("config"), "scenarios_sha256": existing.get("scenarios_sha256")}
            if _run_identity(recorded) == _run_identity(current):
                return None
            if not force:
                raise UserError(f"{out} holds a run with a different configuration "
                                f"({_first_difference(recorded, current)}): rerun with the same options, choose a new "
                                "--out, or pass --force to continue it anyway")
            previous = [*existing.get("previous", []), recorded]
    run = {**current, "setting": config.setting, "userloop_version": __version__,
           "reproducibility": reproducibility(config), "previous": previous}
    return orjson.dumps(run, option=orjson.OPT_INDENT_2)


def reproducibility(config: SimulationConfig) -> dict[str, Any]:
    """What run.json records beside the configuration to redo a run: each role's model spec with the local path it
    resolves to, the versions of userloop, Python, torch and transformers (never part of a resume's identity), and
    the seeds. The scenario (task) file's SHA-256 is ``scenarios_sha256`` beside it."""
    classifier = canonical_spec("reply_classifier", config.classifier)
    return {"models": {role: _model_record(spec) for role, spec in
                       (("user", config.user), ("assistant", config.assistant), ("classifier", classifier))},
            "versions": package_versions(),
            "seeds": {"run": config.seed, "conversation": "derived from (run seed, scenario id, sample): each "
                      "record's seed; each turn's from it and the turn (userloop.simulate.engine.derive_seed)"}}


def _model_record(spec: str | None) -> dict[str, str | None] | None:
    """A model spec and, when its target (a wrapper's innermost one) is a local file or folder, its absolute path."""
    if spec is None:
        return None
    target = spec
    while target.partition(":")[0] in PROVIDERS:
        target = target.partition(":")[2]
    local = Path(target)
    return {"spec": spec, "path": str(local.resolve()) if target and local.exists() else None}


def _run_identity(run: dict) -> tuple:
    """What a resume must match: the configuration but the scenario file's path, and that file's content. A
    model spec that names the run's own scenario file (eval-validity's ``testbed:graded?scenarios=PATH``) is
    compared without that path too, so a run folder moved with its scenario file still resumes."""
    config = run["config"] if isinstance(run["config"], dict) else {}
    identity = {k: v for k, v in config.items() if k != "scenarios"}
    scenarios = config.get("scenarios")
    for role in ("user", "assistant"):
        if isinstance(identity.get(role), str) and isinstance(scenarios, str):
            identity[role] = _RUN_SCENARIOS.sub(
                lambda match: "scenarios=<run>" if match.group(1) == scenarios else match.group(0), identity[role])
    if "classifier" in identity:  # run.json files written before the role providers say "rules"
        identity["classifier"] = canonical_spec("reply_classifier", identity["classifier"])
    return identity, run["scenarios_sha256"]


_RUN_SCENARIOS = re.compile(r"scenarios=([^&]*)")


def _first_difference(recorded: dict, current: dict) -> str:
    old = recorded["config"] if isinstance(recorded["config"], dict) else {}
    new = current["config"]
    if recorded["scenarios_sha256"] != current["scenarios_sha256"]:
        if Path(str(old.get("scenarios"))).resolve() == Path(new["scenarios"]):
            return "the scenario file changed"
        return f"another scenario file: {old.get('scenarios')} in run.json, {new['scenarios']} now"
    old_identity, new_identity = _run_identity(recorded)[0], _run_identity(current)[0]
    changed = [name for name in new if name != "scenarios" and old_identity.get(name, _MISSING) != new_identity[name]]
    if changed:
        name = changed[0]
        return f"{name}: {repr(old[name]) if name in old else 'absent'} in run.json, {new[name]!r} now"
    return f"run.json has options this version does not know: {', '.join(sorted(set(old) - set(new)))}"


_MISSING = object()


def read_records(path: str | Path, repair: bool = False, on_bad: Callable[[str], None] | None = None
                 ) -> tuple[list[SimulatedConversation], int]:
    """The records of a ``conversations.jsonl`` (:class:`SimulatedConversation`) and how many torn last lines
    there were (0 or 1).

    A last line without its newline is a write cut short: it is not a record; with ``repair`` the
    file is truncated after the last complete line. Any other unreadable line, or a conversation
    recorded twice, is a :class:`UserError` naming the line (the file was edited by hand). With ``on_bad``,
    a line that names its conversation (scenario_id, sample) but is not a whole record is passed over and
    what is wrong with it ("without 'messages'", ...) goes to ``on_bad`` instead."""
    import orjson

    path = Path(path)
    if not path.exists():
        return [], 0
    data = read_user_bytes(path, "run records file")
    torn = 0
    if data and not data.endswith(b"\n"):
        torn, data = 1, data[:data.rfind(b"\n") + 1]
        if repair:
            with path.open("r+b") as file:
                file.truncate(len(data))
    records, seen = [], {}
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            key = (data["scenario_id"], data["sample"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: not a conversation record (the file was edited?)") from None
        if key in seen:
            raise UserError(f"{path}:{number}: conversation {key[0]!r} sample {key[1]} is already on line {seen[key]}")
        seen[key] = number
        try:
            records.append(SimulatedConversation.from_dict(data))
        except RecordError as err:
            if on_bad is None:
                raise UserError(f"{path}:{number}: not a conversation record: a record {err}; remove that line (a "
                                "resume simulates its conversation again) or simulate into a new --out") from None
            on_bad(str(err))
    return records, torn


# ---------------------------------------------------------------------- summaries
def summarize(records: Sequence[SimulatedConversation], scenarios=None, config: SimulationConfig | None = None, *,
              timings: dict | None = None, resume: dict | None = None, classifier=None) -> dict[str, Any]:
    """Per kind and overall: conversations, solved rate with its 95% Wilson interval (scenarios with a
    checker), user-turn mean/variance/min/max, end reasons, reply-classification shares, tokens; plus
    the run's timings and throughput, its cost when ``config.prices`` names a price table, and the Table-3
    simulation statistics of multi-turn runs."""
    kinds = sorted({r.kind for r in records})
    summary: dict[str, Any] = {
        "setting": config.setting if config else None,
        "user": config.user if config else None, "assistant": config.assistant if config else None,
        "scenarios": config.scenarios if config else None, "n": config.n if config else None,
        "conversations": len(records),
        "overall": group_summary(records),
        "by_kind": {kind: group_summary([r for r in records if r.kind == kind]) for kind in kinds},
        "timings": timings,
        "resume": resume,
    }
    if classifier is not None and hasattr(classifier, "fallbacks"):
        summary["classifier_fallbacks"] = classifier.fallbacks
    if config is not None and config.prices is not None:
        summary["cost"] = {"prices": config.prices, **run_cost(
            summary["overall"]["tokens"], {"user": config.user, "assistant": config.assistant},
            load_prices(config.prices), len(records))}
    tool_records = [r for r in records if r.kind == "tool"]
    if tool_records:
        summary["tool_tasks"] = tool_task_summary(tool_records)
    if scenarios is not None and records and (config is None or config.user is not None):
        summary["simulation_statistics"] = simulation_statistics(scenarios, list(records))
    return summary


def tool_task_summary(records: Sequence[SimulatedConversation]) -> dict[str, Any]:
    """pass^k of tool tasks (tau-bench, Yao et al. 2024, arXiv 2406.12045, §5.1): with n trials of a task and c
    of them solved, pass^k = C(c, k) / C(n, k), the chance that k trials drawn from the n all succeed, averaged
    over tasks, for k = 1 .. the fewest trials of any task (pass^1 is the mean success rate). A trial not scored
    (``solved`` None: it ended in error) counts as a failure. ``tasks`` is the per-task table."""
    trials: dict[str, list[SimulatedConversation]] = {}
    for record in records:
        trials.setdefault(record.scenario_id, []).append(record)
    table = [{"scenario_id": task, "trials": len(runs), "successes": sum(1 for r in runs if r.solved),
              "unscored": sum(1 for r in runs if r.solved is None)} for task, runs in trials.items()]
    most_k = min(row["trials"] for row in table)
    pass_hat_k = {str(k): statistics.fmean(math.comb(row["successes"], k) / math.comb(row["trials"], k)
                                           for row in table) for k in range(1, most_k + 1)}
    return {"tasks": len(table), "trials": sum(row["trials"] for row in table), "pass_hat_k": pass_hat_k,
            "per_task": table}


def group_summary(records: Sequence[SimulatedConversation]) -> dict[str, Any]:
    """The summary of one group of records (see :func:`summarize`)."""
    turns = [r.n_user_turns for r in records]
    scored = [r for r in records if r.solved is not None]
    solved = sum(1 for r in scored if r.solved)
    labels = Counter(m.classification for r in records for m in r.messages if m.role == "assistant")
    replies = sum(labels.values())
    events = Counter(e.get("action") for r in records for m in r.messages if m.role == "user" for e in m.events)
    tokens = {role: {part: sum(getattr(r.tokens[role], part) for r in records) for part in ("prompt", "completion")}
              for role in ("user", "assistant")}
    errors = Counter(r.error for r in records if r.error)
    return {
        "conversations": len(records),
        "solved": {"solved": solved, "scored": len(scored), "rate": solved / len(scored),
                   "ci95": list(wilson_interval(solved, len(scored)))} if scored else None,
        "user_turns": {"mean": statistics.fmean(turns), "variance": statistics.pvariance(turns),
                       "min": min(turns), "max": max(turns)} if turns else None,
        "end_reasons": {reason: sum(1 for r in records if r.end_reason == reason) for reason in END_REASONS},
        "reply_classification": {"replies": replies, **{kind: labels[kind] / replies if replies else 0.0
                                                        for kind in REPLY_KINDS}},
        "guardrail_events": {"resample": events["resample"], "fallback": events["fallback"]},
        "tokens": tokens,
        "errors": dict(errors.most_common(5)),
        "first_error": next((r.error for r in records if r.error), None),
    }


def write_summary(out: Path, summary: dict) -> None:
    import orjson

    write_atomic(out / SUMMARY_JSON, orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    write_atomic(out / SUMMARY_MD, summary_markdown(summary))


def summary_rows(group: dict) -> list[tuple[str, str]]:
    """(metric, value) rows of one group: what summary.md and :func:`compare_runs` show."""
    rows = [("conversations", f"{group['conversations']:,}")]
    solved = group["solved"]
    rows.append(("solved rate (95% CI)", f"{solved['rate']:.1%} [{solved['ci95'][0]:.1%}, {solved['ci95'][1]:.1%}] "
                                         f"({solved['solved']}/{solved['scored']})" if solved else "-"))
    turns = group["user_turns"]
    rows += [("user turns mean", f"{turns['mean']:.2f}" if turns else "-"),
             ("user turns variance", f"{turns['variance']:.2f}" if turns else "-"),
             ("user turns min-max", f"{turns['min']}-{turns['max']}" if turns else "-")]
    rows += [(f"end: {reason}", f"{count:,}") for reason, count in group["end_reasons"].items()]
    classes = group["reply_classification"]
    rows += [(f"replies: {kind}", f"{share:.1%}") for kind, share in classes.items() if kind != "replies"]
    rows += [("guardrail resamples", f"{group['guardrail_events']['resample']:,}"),
             ("user tokens (prompt/completion)", f"{group['tokens']['user']['prompt']:,}/{group['tokens']['user']['completion']:,}"),
             ("assistant tokens (prompt/completion)",
              f"{group['tokens']['assistant']['prompt']:,}/{group['tokens']['assistant']['completion']:,}")]
    return rows


def _timing_rows(summary: dict) -> list[tuple[str, str]]:
    t = summary.get("timings")
    if not t:
        return []
    return [("wall s (this invocation)", f"{t['wall_s']:.2f}"), ("in model calls s", f"{t['in_model_calls_s']:.2f}"),
            ("overhead share", f"{t['overhead_share']:.1%}"), ("conversations/s", f"{t['conversations_per_s']:.2f}"),
            ("turns/s", f"{t['turns_per_s']:.2f}")]


def summary_markdown(summary: dict) -> str:
    """summary.json as Markdown: one column per group (overall, then each kind), then timings."""
    groups = {"overall": summary["overall"], **summary["by_kind"]}
    columns = [summary_rows(group) for group in groups.values()]
    lines = [f"# Simulation summary ({summary.get('setting')})", "",
             (f"user: `{summary.get('user')}`, assistant: `{summary.get('assistant')}`, "
             f"scenarios: `{summary.get('scenarios')}`, n: {summary.get('n')}"), "",
             "| metric | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for i, (metric, _) in enumerate(columns[0]):
        lines.append(f"| {metric} | " + " | ".join(column[i][1] for column in columns) + " |")
    timing = _timing_rows(summary)
    if timing:
        lines += ["", "| timing | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in timing)]
    stats = summary.get("simulation_statistics")
    if stats:
        lines += ["", "Simulation statistics (UserLM paper, Table 3):", "", "| statistic | value |", "|---|---|"]
        lines += [f"| {k} | {format_value(v)} |" for k, v in flatten(stats)]
    tools = summary.get("tool_tasks")
    if tools:
        lines += ["", f"Tool tasks: {tools['tasks']} tasks, {tools['trials']} trials (pass^k, tau-bench):", "",
                  "| k | pass^k |", "|---|---|", *(f"| {k} | {v:.3f} |" for k, v in tools["pass_hat_k"].items()),
                  "", "| task | successes / trials |", "|---|---|",
                  *(f"| {row['scenario_id']} | {row['successes']}/{row['trials']} |" for row in tools["per_task"])]
    for title, rows in section_rows(summary).items():
        lines += ["", f"{title}:", "", "| statistic | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


SECTION_TITLES = {"realism": "Realism of the simulated users (docs/simulate.md, \"Realism\")",
                  "cost": "Cost (price table per 1M tokens, in its currency)"}


def section_rows(summary: dict) -> dict[str, list[tuple[str, str]]]:
    """(statistic, value) rows of the summary's realism and cost sections, by section title (those it has)."""
    return {title: [(k, format_value(v)) for k, v in flatten(summary[key])]
            for key, title in SECTION_TITLES.items() if summary.get(key)}


def flatten(value, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in flatten(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}")]
    return [(prefix, value)]


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def load_summary(run: str | Path) -> dict:
    """A run folder's summary.json (a missing one is a :class:`UserError`)."""
    path = Path(run) / SUMMARY_JSON if Path(run).is_dir() else Path(run)
    return read_user_json(path, "run summary")


def compare_runs(run_a: str | Path, run_b: str | Path) -> str:
    """Two runs side by side as Markdown: every summary row of each group, and whether they differ."""
    a, b = load_summary(run_a), load_summary(run_b)
    lines = [f"# {run_a} vs {run_b}", "",
             f"- A: user `{a.get('user')}`, assistant `{a.get('assistant')}`, {a.get('setting')}",
             f"- B: user `{b.get('user')}`, assistant `{b.get('assistant')}`, {b.get('setting')}", "",
             "| group | metric | A | B | difference |", "|---|---|---|---|---|"]
    for name in ["overall", *sorted(set(a["by_kind"]) | set(b["by_kind"]))]:
        group_a = a["overall"] if name == "overall" else a["by_kind"].get(name)
        group_b = b["overall"] if name == "overall" else b["by_kind"].get(name)
        rows_a = dict(summary_rows(group_a)) if group_a else {}
        rows_b = dict(summary_rows(group_b)) if group_b else {}
        for metric in dict.fromkeys([*rows_a, *rows_b]):
            value_a, value_b = rows_a.get(metric, "-"), rows_b.get(metric, "-")
            lines.append(f"| {name} | {metric} | {value_a} | {value_b} | {_difference(value_a, value_b)} |")
    for metric, value_a in _timing_rows(a):
        value_b = dict(_timing_rows(b)).get(metric, "-")
        lines.append(f"| timing | {metric} | {value_a} | {value_b} | {_difference(value_a, value_b)} |")
    for key in SECTION_TITLES:
        rows_a, rows_b = (dict(flatten(s.get(key) or {})) for s in (a, b))
        for metric in dict.fromkeys([*rows_a, *rows_b]):
            value_a, value_b = (format_value(rows[metric]) if metric in rows else "-" for rows in (rows_a, rows_b))
            lines.append(f"| {key} | {metric} | {value_a} | {value_b} | {_difference(value_a, value_b)} |")
    passes_a, passes_b = ((s.get("tool_tasks") or {}).get("pass_hat_k", {}) for s in (a, b))
    for k in dict.fromkeys([*passes_a, *passes_b]):
        value_a, value_b = (f"{passes[k]:.3f}" if k in passes else "-" for passes in (passes_a, passes_b))
        lines.append(f"| tool tasks | pass^{k} | {value_a} | {value_b} | {_difference(value_a, value_b)} |")
    return "\n".join(lines) + "\n"


def _difference(a: str, b: str) -> str:
    """B - A for two numbers (a percentage in points), "same" when equal, "" otherwise."""
    if a == b:
        return "same"
    x, y = _leading_number(a), _leading_number(b)
    if x is None or y is None:
        return "differs"
    if a.split()[0].endswith("%"):
        return f"{y - x:+.1f} pts"
    return f"{y - x:+,.2f}"


def _leading_number(text: str) -> float | None:
    head = text.split()[0].rstrip("%").replace(",", "").split("/")[0].split("-")[0] if text.strip() else ""
    try:
        return float(head)
    except ValueError:
        return None


# ---------------------------------------------------------------------- shards
def merge_runs(shards: Sequence[str | Path], out: str | Path, scenarios: str | Path | None = None) -> dict[str, Any]:
    """Join the run folders of the shards 1/N .. N/N of one simulation (``simulate --shard I/N``) into ``out``.

    The shards must share one configuration and scenario file (its SHA-256), each index must appear once, and
    every (scenario, sample) of the scenario file must be recorded once, by the shard it belongs to; otherwise
    nothing is written and a :class:`UserError` names what is missing or foreign (a shard that did not finish:
    rerun its command, it resumes). ``scenarios``: the scenario file, when the path in the shards' run.json is
    not on this machine (same content). ``out`` (new or empty) gets conversations.jsonl in scenario-major order,
    the summary, and a run.json that ``simulate`` with the same options and no ``--shard`` resumes as complete.
    Returns the summary."""
    import orjson

    runs = [(Path(shard), _shard_run(Path(shard))) for shard in shards]
    if not runs:
        raise UserError("give the run folders of the shards to merge")
    (first, run), *others = runs
    shared, sha256 = _shared_identity(run)
    for folder, other in others:
        other_config, other_sha256 = _shared_identity(other)
        if (other_config, other_sha256) != (shared, sha256):
            differing = sorted(k for k in {*shared, *other_config} if shared.get(k) != other_config.get(k))
            what = f"different {', '.join(differing)}" if differing else "another scenario file"
            raise UserError(f"{folder} was simulated with another configuration than {first} ({what}): only shards "
                            "of one run merge")
    count = parse_shard(run["config"]["shard"])[1]
    by_index: dict[int, Path] = {}
    for folder, other in runs:
        index, other_count = parse_shard(other["config"]["shard"])
        if other_count != count:
            raise UserError(f"{folder} is shard {index}/{other_count}, {first} is of {count} shards: only shards of one run merge")
        if index in by_index:
            raise UserError(f"shard {index}/{count} given twice: {by_index[index]} and {folder}")
        by_index[index] = folder
    missing_shards = [f"{index}/{count}" for index in range(1, count + 1) if index not in by_index]
    if missing_shards:
        raise UserError(f"shard {', '.join(missing_shards)} missing: a merge needs all {count} shards")

    scenario_file = Path(scenarios or run["config"]["scenarios"])
    if hashlib.sha256(read_user_bytes(scenario_file, "scenario file")).hexdigest() != sha256:
        raise UserError(f"{scenario_file} is not the scenario file the shards simulated (another SHA-256): "
                        "pass that file with --scenarios")
    config = _merged_config(run["config"], scenario_file)
    scenario_list = load_scenarios(scenario_file)
    position = {(job.scenario.id, job.sample): k for k, job in enumerate(pending_jobs(scenario_list, config.n, set()))}
    records: dict[tuple[str, int], SimulatedConversation] = {}
    for index, folder in sorted(by_index.items()):
        for record in read_records(folder / RECORDS)[0]:
            key = record.key
            if key not in position:
                raise UserError(f"{folder}: conversation {key[0]!r} sample {key[1]} is not in {scenario_file}")
            owner = position[key] % count + 1
            if owner != index:
                raise UserError(f"{folder}: conversation {key[0]!r} sample {key[1]} belongs to shard {owner}/{count}, "
                                f"not {index}/{count}")
            records[key] = record
    missing = [key for key in position if key not in records]
    if missing:
        short = Counter(f"{position[key] % count + 1}/{count}" for key in missing)
        raise UserError(f"{len(missing):,} of {len(position):,} conversations are not recorded (shards "
                        f"{', '.join(f'{shard}: {n:,}' for shard, n in sorted(short.items()))}): rerun those shards' "
                        "commands (they resume), then merge again")

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty: merge into a new --out")
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(records.values(), key=lambda r: position[r.key])
    merged_from = [{"shard": f"{index}/{count}", "run": str(folder),
                    "conversations": sum(1 for key in records if position[key] % count + 1 == index)}
                   for index, folder in sorted(by_index.items())]
    write_atomic(out / RECORDS, b"".join(orjson.dumps(record.to_dict()) + b"\n" for record in ordered))
    run_file = orjson.loads(_checked_run_file(out, config, force=False))
    write_atomic(out / RUN_FILE, orjson.dumps({**run_file, "merged_from": merged_from}, option=orjson.OPT_INDENT_2))
    summary = {**summarize(ordered, scenario_list, config), "merged_from": merged_from}
    write_summary(out, summary)
    return summary


def _shard_run(folder: Path) -> dict:
    """The run.json of a shard's run folder (a folder that is not one is a :class:`UserError`)."""
    run = read_user_json(folder / RUN_FILE, "run file") if folder.is_dir() else None
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
        raise UserError(f"{folder} is not a run folder (no run.json with the run's configuration)")
    if run["config"].get("shard") is None:
        raise UserError(f"{folder} is not a shard: its run was simulated without --shard I/N")
    return run


def _shared_identity(run: dict) -> tuple[dict, str]:
    """What the shards of one run share: the configuration but the shard and the scenario file's path, and that
    file's SHA-256."""
    return {k: v for k, v in run["config"].items() if k not in ("shard", "scenarios")}, run.get("scenarios_sha256")


def _merged_config(recorded: dict, scenario_file: Path) -> SimulationConfig:
    """The configuration of the whole run, from a shard's recorded one."""
    from dataclasses import fields

    known = {f.name for f in fields(SimulationConfig)}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise UserError(f"the shards' run.json has options this version does not know: {', '.join(unknown)}")
    return SimulationConfig(**{**recorded, "shard": None, "scenarios": str(scenario_file)})
