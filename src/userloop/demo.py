"""`userloop demo`: the main job end to end on the testbed (or real data and models), one report folder.

The stages call the library functions behind the commands of the same names: ``testbed generate``,
``data prepare``, ``train user-lm``, ``train assistant``, ``simulate`` (open intents), ``evaluate-assistant``
(the testbed's sharded math, single-turn vs multi-turn: the UserLM paper's section 5), ``eval-validity`` (the
user LM and the naive protocol against the ground-truth testbed users on the built-in assistant panel),
``eval-sim`` (the paper's Table 2 against the real users), ``rlhi build``, ``train dpo`` (persona-conditioned,
RLHI section 2.3), ``eval-personal`` (UserEval, RLHI section 3) and the report. Each writes into its own sub-folder of
the demo folder, and ``manifest.json`` (layout: docs/demo.md) is rewritten after every stage. A stage whose
outputs are complete is not redone when the demo runs again on the same folder (``force`` redoes all).
What a finished stage freed is returned to the system before the next one starts, and each stage's peak
resident memory is recorded in the manifest.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from userloop.config import option
from userloop.data.sources import prepared_splits
from userloop.errors import UserError
from userloop.files import read_user_json, write_atomic
from userloop.metrics.evalsim import EvalSimConfig, eval_sim
from userloop.metrics.run_realism import simulate_with_realism
from userloop.metrics.validity import GROUND_TRUTH, ValidityConfig, eval_validity
from userloop.models.registry import canonical_spec, needs_testbed, parse_spec, role_spec
from userloop.progress import Progress, Task, no_progress
from userloop.report import build_report
from userloop.report.manifest import MANIFEST, MANIFEST_VERSION, PATH_KEYS
from userloop.rlhi.build import BuildConfig, build
from userloop.rlhi.dpo import DPOTrainConfig, train_dpo
from userloop.rlhi.usereval import UserEvalConfig, eval_personal
from userloop.simulate.assistant_eval import evaluate_assistant
from userloop.simulate.runs import SUMMARY_JSON, SimulationConfig
from userloop.simulate.scenarios import build_scenario_file
from userloop.testbed import generate
from userloop.testbed.population import truth_folder
from userloop.train.common import release_freed_memory
from userloop.userlm.train import UserLMTrainConfig, train_user_lm

# (stage name, title): the order the stages run in.
STAGES = (
    ("testbed", "Generate the testbed"),
    ("prepare", "Prepare the data"),
    ("user_lm", "Train the user LM"),
    ("assistant", "Train the assistant"),
    ("simulate", "Simulate open intents"),
    ("evaluate_assistant", "Evaluate the assistant on sharded math"),
    ("validity", "Simulator validity on the assistant panel"),
    ("metrics", "Simulator metrics"),
    ("rlhi", "Build RLHI pairs"),
    ("dpo", "Persona-conditioned DPO"),
    ("usereval", "UserEval"),
    ("report", "Build the report"),
)
# Where each stage writes, relative to the demo folder.
OUTPUTS = {"testbed": "testbed", "prepare": "prepared", "user_lm": "models/user-lm", "assistant": "models/assistant",
           "simulate": "sims/open", "evaluate_assistant": "sims/math", "validity": "validity", "metrics": "metrics",
           "rlhi": "rlhi", "dpo": "models/dpo", "usereval": "usereval", "report": "report"}
REPORT = "report/index.html"
# The trainings' memory settings (benchmarks/README.md, "userloop demo: peak memory"): each update's 8 rows in 2 passes of 4
# whose gradients add up (the same update, up to float rounding), activations recomputed in the backward pass, and
# float32 on every CPU: bf16 autocast makes these tiny models no faster and nearly doubles the peak (1,317 vs 775 MiB).
LEAN_TRAINING = {"batch_size": 4, "gradient_accumulation_steps": 2, "gradient_checkpointing": True, "bf16": "false"}
# The file in a stage's output folder that it writes last: its outputs are complete when it is there.
DONE_FILES = {"testbed": "summary.json", "prepare": "report.json", "user_lm": "train_report.json",
              "assistant": "train_report.json", "simulate": "summary.json", "evaluate_assistant": "report.json",
              "validity": "report.json",
              "metrics": "metrics.json", "rlhi": "report.json", "dpo": "dpo_report.json", "usereval": "report.json",
              "report": "index.html"}


@dataclass
class DemoConfig:
    """What ``userloop demo`` runs; the sizes are chosen so the whole run takes about 10 minutes on 2 CPU cores."""

    out: str = option("demo", "the demo folder: one sub-folder per stage, manifest.json and report/index.html")
    data: str | None = option(None, "real conversations instead of the testbed: raw log files or a folder of them, "
                                    "hf:DATASET_ID, or a prepared folder (then testbed generation is skipped)")
    user_model: str | None = option(None, "use this user LM (e.g. hf:/models/UserLM-8b) instead of training a tiny one")
    assistant: str | None = option(None, "use this assistant (e.g. openai:llama@http://127.0.0.1:8000/v1) instead of "
                                          "training a tiny one; DPO and UserEval need a local hf: folder")
    judge: str | None = option(None, "judge of the RLHI rewrites and of UserEval: testbed:judge (the exact persona-match "
                                     "scorer; the default on the testbed) or a chat model spec; with real data and no "
                                     "judge, those stages are skipped")
    seed: int = option(0, "random seed of every stage")
    users: int = option(1000, "simulated users in the testbed")
    user_lm_steps: int = option(150, "updates of the tiny user LM (trained from scratch)")
    assistant_steps: int = option(150, "updates of the tiny assistant (trained from scratch)")
    hidden_size: int = option(128, "width of the tiny models (2 layers, 4 heads)")
    conversations: int = option(60, "simulated conversations on open intents (one per test-split intent)")
    math_tasks: int = option(40, "sharded math problems, each solved single-turn and multi-turn")
    validity_intents: int = option(6, "held-out math problems on which the user LM, the naive protocol and the "
                                       "ground-truth testbed users talk to each assistant of the built-in panel")
    max_turns: int = option(6, "most user turns per simulated conversation")
    max_new_tokens: int = option(96, "longest assistant answer in tokens (simulation and UserEval)")
    eval_conversations: int = option(60, "real test-split conversations replayed for termination and fidelity, "
                                         "and probes per adherence metric, in the simulator metrics")
    dpo_steps: int = option(50, "DPO updates of the assistant on the RLHI pairs")
    usereval_requests: int = option(60, "held-out users' requests judged in UserEval")
    force: bool = option(False, "redo every stage, even those whose outputs are complete")

    def validate(self) -> None:
        """Raise :class:`UserError` for a value that cannot work (before any stage runs)."""
        for name in ("users", "user_lm_steps", "assistant_steps", "conversations", "math_tasks", "validity_intents", "max_turns",
                     "max_new_tokens", "eval_conversations", "dpo_steps", "usereval_requests"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if self.validity_intents < 2:
            raise UserError(f"--validity-intents must be >= 2 (a rank correlation over problems needs two), "
                            f"got {self.validity_intents}")
        if self.hidden_size < 8 or self.hidden_size % 8:
            raise UserError(f"--hidden-size must be a multiple of 8 (4 heads, even head size), got {self.hidden_size}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise UserError(f"--out {self.out} is a file: give a folder")
        if self.data is not None and not self.data.startswith("hf:") and not Path(self.data).exists():
            raise UserError(f"--data {self.data}: no such file or folder")
        for name in ("user_model", "assistant"):
            if getattr(self, name) is not None:
                parse_spec(getattr(self, name))
        if self.judge is not None:
            for role in ("judge", "usereval_judge"):
                role_spec(role, self.judge)
            self.judge = role_spec("judge", self.judge)

    def command(self) -> str:
        """The ``userloop demo`` command line that gives this configuration."""
        parts = ["userloop demo"]
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            flag = f"--{f.name.replace('_', '-')}"
            parts.append(flag if value is True else f"{flag} {value}")
        return " ".join(parts)


class Skipped(Exception):
    """A stage that cannot run with the demo's inputs; the message says why (the manifest's detail)."""


def run_demo(config: DemoConfig, progress: Progress = no_progress) -> Path:
    """Run every stage not yet complete in ``config.out`` (all of them with ``force``); returns the report path.

    A stage that fails is recorded as failed in the manifest (the stages after it as skipped) and its
    error propagates."""
    config.validate()
    _quiet_libraries()
    demo = _Demo(config, progress)
    try:
        return demo.run()
    finally:
        demo.memory.stop()


def _quiet_libraries() -> None:
    """Each stage has its own progress bar: turn off the bars transformers and datasets draw (loading weights...)."""
    try:
        import datasets
        import transformers
    except ImportError:  # the stages that need them say which extra to install
        return
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


class _Demo:
    """One run of the demo: the folder, the inputs it resolved and the manifest it keeps up to date."""

    def __init__(self, config: DemoConfig, progress: Progress) -> None:
        self.config, self.progress = config, progress
        self.memory = _StageMemory()
        self.dir = Path(config.out)
        self.previous = self._previous_manifest()
        self.testbed = config.data is None
        self.prepared_input = self._prepared_input()
        self.has_truth = self.testbed or self._data_truth() is not None
        if config.judge is not None and needs_testbed("judge", config.judge) and not self.has_truth:
            raise UserError(f"--judge {config.judge} needs the testbed's truth, which --data {config.data} has not: "
                            "give a chat model spec")
        self.judge = config.judge or ("testbed:judge" if self.has_truth else None)
        self.user_spec = config.user_model or self._hf(OUTPUTS["user_lm"])
        self.assistant_spec = config.assistant or self._hf(OUTPUTS["assistant"])
        self.manifest: dict[str, Any] = {
            "version": MANIFEST_VERSION, "command": config.command(),
            "started": _now(), "finished": None,
            "data": "testbed" if self.testbed else config.data,
            "models": {"user": self.user_spec, "assistant": self.assistant_spec, "judge": self.judge, "policy": None},
            "settings": self._settings(),
            "stages": [],
            "paths": {key: ({} if key == "simulations" else None) for key in PATH_KEYS},
            "report": None,
        }

    # ------------------------------------------------------------------ set-up
    def _previous_manifest(self) -> dict[str, Any] | None:
        """The manifest of an earlier run in the folder (None: a new folder, or ``force``)."""
        if self.config.force or not (self.dir / MANIFEST).is_file():
            return None
        previous = read_user_json(self.dir / MANIFEST, "demo manifest")
        if not isinstance(previous, dict) or previous.get("version") != MANIFEST_VERSION:
            raise UserError(f"{self.dir / MANIFEST} was written by another userloop version: add --force to redo it")
        settings = dict(previous.get("settings") or {})
        if settings.get("judge") is not None:  # manifests written before the role providers say "testbed"
            settings["judge"] = canonical_spec("judge", settings["judge"])
        if settings != self._settings():
            changed = sorted(k for k, v in self._settings().items() if settings.get(k) != v)
            raise UserError(f"{self.dir} holds a demo run with other settings ({', '.join(changed)}): add --force to "
                            "redo it, or give another --out")
        return previous

    def _settings(self) -> dict[str, Any]:
        """What decides the outputs (everything but ``out`` and ``force``): a re-run must match it."""
        return {k: v for k, v in asdict(self.config).items() if k not in ("out", "force")}

    def _prepared_input(self) -> Path | None:
        """``--data`` when it is already a prepared folder, else None (then the demo prepares it)."""
        data = self.config.data
        if data is None or data.startswith("hf:") or not Path(data).is_dir():
            return None
        return Path(data) if prepared_splits(Path(data)) else None

    def _data_truth(self) -> Path | None:
        """The testbed truth of ``--data`` (a testbed folder, a file in one, or a folder prepared from one)."""
        data = Path(self.config.data)
        if self.config.data.startswith("hf:"):
            return None
        return truth_folder(data if data.is_dir() else data.parent)

    def _hf(self, relative: str) -> str:
        return f"hf:{self.dir / relative}"

    def _path(self, stage: str) -> Path:
        return self.dir / OUTPUTS[stage]

    def _relative(self, path: Path) -> str:
        """A path for the manifest: relative to the demo folder when inside it, else absolute."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.dir.resolve()))
        except ValueError:
            return str(path)

    @property
    def prepared(self) -> Path:
        return self.prepared_input or self._path("prepare")

    # ------------------------------------------------------------------ the run
    def run(self) -> Path:
        demo_folder = (self.dir / MANIFEST).is_file()  # --force removes stage folders only in a demo folder
        self.dir.mkdir(parents=True, exist_ok=True)
        previous_stages = {s["name"]: s for s in (self.previous or {}).get("stages", [])}
        ran_now = False
        for index, (name, title) in enumerate(STAGES):
            earlier = previous_stages.get(name)
            if earlier and earlier["status"] == "done" and self._complete(name) and not (name == "report" and ran_now):
                self._set_paths(name)
                self._record(earlier)
                continue
            self.memory.start()
            started = time.perf_counter()
            with self.progress(title) as bar:
                try:
                    if self.config.force and demo_folder and (self.dir / OUTPUTS[name]).is_dir():
                        shutil.rmtree(self.dir / OUTPUTS[name])
                    detail = getattr(self, f"_stage_{name}")(bar)
                    status = "done"
                    self._set_paths(name)
                except Skipped as skipped:
                    detail, status = str(skipped), "skipped"
                except BaseException as err:
                    self._record(self._entry(name, title, started, "failed", _one_line(err)))
                    for later, later_title in STAGES[index + 1:]:
                        self._record({"name": later, "title": later_title, "seconds": 0.0, "status": "skipped",
                                      "detail": f"not run: '{title}' failed", "peak_rss_mb": None})
                    self._write_manifest(finished=True)
                    raise
            ran_now = ran_now or status == "done"
            self._record(self._entry(name, title, started, status, detail))
            release_freed_memory()
        self._write_manifest(finished=True)
        return self.dir / REPORT

    def _entry(self, name: str, title: str, started: float, status: str, detail: str) -> dict[str, Any]:
        return {"name": name, "title": title, "seconds": round(time.perf_counter() - started, 1), "status": status,
                "detail": detail, "peak_rss_mb": self.memory.peak_mb()}

    def _record(self, entry: dict[str, Any]) -> None:
        self.manifest["stages"].append(entry)
        self._write_manifest(finished=False)

    def _write_manifest(self, finished: bool) -> None:
        if finished:
            self.manifest["finished"] = _now()
        write_atomic(self.dir / MANIFEST, orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2))

    def _set_paths(self, name: str) -> None:
        """Point the manifest at what stage ``name`` wrote (or, for the data, what it uses)."""
        paths = self.manifest["paths"]
        if name == "testbed":
            paths["raw"] = OUTPUTS["testbed"]
        elif name == "prepare":
            paths["prepared"] = self._relative(self.prepared)
            if not self.testbed and self.prepared_input is None and not self.config.data.startswith("hf:"):
                paths["raw"] = self._relative(Path(self.config.data))
        elif name == "simulate":
            paths["simulations"] = {"open": OUTPUTS["simulate"]}
        elif name == "dpo":
            paths["dpo"] = OUTPUTS["dpo"]
            self.manifest["models"]["policy"] = self._hf(OUTPUTS["dpo"])
        elif name == "report":
            self.manifest["report"] = REPORT
        else:
            paths[name] = OUTPUTS[name]

    def _complete(self, name: str) -> bool:
        """Whether stage ``name``'s outputs are all on disk (then a re-run keeps them)."""
        def finished(run: Path) -> bool:
            try:
                return orjson.loads((run / SUMMARY_JSON).read_bytes())["resume"]["pending"] == 0
            except (OSError, ValueError, KeyError, TypeError):
                return False

        if not (self._path(name) / DONE_FILES[name]).is_file():
            return False
        if name == "simulate":
            return finished(self._path("simulate"))
        if name == "evaluate_assistant":
            return all(finished(self._path(name) / setting) for setting in ("single_turn", "multi_turn"))
        return True

    # ------------------------------------------------------------------ stages
    def _stage_testbed(self, bar: Task) -> str:
        if not self.testbed:
            raise Skipped(f"--data {self.config.data} given")
        bar.start(self.config.users, "users")
        population = generate(self.config.users, self.config.seed, on_progress=bar.advance)
        population.write(self._path("testbed"))
        return f"{len(population.users):,} users, {len(population.records):,} conversations"

    def _stage_prepare(self, bar: Task) -> str:
        from userloop.data.prepare import PrepareConfig, prepare

        if self.prepared_input is not None:
            self.manifest["paths"]["prepared"] = self._relative(self.prepared_input)
            raise Skipped(f"--data {self.config.data} is already prepared")
        inputs = [str(self._path("testbed") / "conversations.jsonl")] if self.testbed else [self.config.data]
        bar.start(None, "conversations")
        result = prepare(inputs, self._path("prepare"), PrepareConfig(seed=self.config.seed), on_progress=bar.advance)
        splits = result.report["splits"]
        return ", ".join(f"{split} {s['conversations']:,}" for split, s in splits.items()) + " conversations"

    def _train_chat_lm(self, bar: Task, role: str, steps: int) -> str:
        config = UserLMTrainConfig(data=str(self.prepared), out=str(self._path("user_lm" if role == "user" else "assistant")),
                                   role=role, hidden_size=self.config.hidden_size, max_steps=steps,
                                   eval_steps=steps // 2 if steps >= 10 else 0, save_steps=0,
                                   logging_steps=max(steps // 30, 1), seed=self.config.seed,
                                   **LEAN_TRAINING)
        bar.start(steps, "updates")
        report = train_user_lm(config, on_progress=bar.set).report
        return (f"{report['steps']:,} updates, {report['parameters']:,} parameters: validation loss "
                f"{report['validation_loss']:.3f} nats/token (unigram baseline {report['unigram_baseline']:.3f})")

    def _stage_user_lm(self, bar: Task) -> str:
        if self.config.user_model is not None:
            raise Skipped(f"--user-model {self.config.user_model} given")
        return self._train_chat_lm(bar, "user", self.config.user_lm_steps)

    def _stage_assistant(self, bar: Task) -> str:
        if self.config.assistant is not None:
            raise Skipped(f"--assistant {self.config.assistant} given")
        return self._train_chat_lm(bar, "assistant", self.config.assistant_steps)

    def _scenarios(self, kind: str, limit: int) -> Path:
        path = self.dir / "scenarios" / f"{kind}.jsonl"
        if not path.is_file() or self.config.force:
            build_scenario_file(path, self.prepared, kind=kind, limit=limit, split="test", seed=self.config.seed)
        return path

    def _simulation_options(self) -> dict[str, Any]:
        return {"max_user_turns": self.config.max_turns, "seed": self.config.seed,
                "assistant_max_new_tokens": self.config.max_new_tokens, "user_max_new_tokens": 48}

    @staticmethod
    def _phases(bar: Task, note: str = "") -> Progress:
        """A :class:`Progress` whose steps are phases of the stage's bar, each named ``note`` or its description."""

        @contextmanager
        def phase(description: str, total: int | None = None) -> Iterator[Task]:
            bar.start(total, note or description)
            yield bar

        return phase

    def _stage_simulate(self, bar: Task) -> str:
        scenarios = self._scenarios("open", self.config.conversations)
        config = SimulationConfig(assistant=self.assistant_spec, user=self.user_spec, scenarios=str(scenarios),
                                  data=str(self.prepared), **self._simulation_options())
        summary = simulate_with_realism(config, self._path("simulate"),
                                        progress=self._phases(bar, "conversations")).summary
        ends = ", ".join(f"{reason} {count:,}" for reason, count in summary["overall"]["end_reasons"].items())
        return f"{summary['conversations']:,} conversations ({ends})"

    def _stage_evaluate_assistant(self, bar: Task) -> str:
        if not self.has_truth:
            raise Skipped("the sharded math problems come from the testbed's truth, which --data has not")
        scenarios = self._scenarios("math", self.config.math_tasks)

        report = evaluate_assistant(self.assistant_spec, self.user_spec, scenarios, self._path("evaluate_assistant"),
                                    progress=self._phases(bar), **self._simulation_options())
        score = report["scores"]["overall"]
        return (f"solved single-turn {score['single_turn']['rate']:.1%}, multi-turn {score['multi_turn']['rate']:.1%} "
                f"of {score['single_turn']['scored']:,} problems")

    def _stage_validity(self, bar: Task) -> str:
        if not self.has_truth:
            raise Skipped("the ground-truth users and the held-out problems come from the testbed's truth, "
                          "which --data has not")
        config = ValidityConfig(sim=(f"user-lm={self.user_spec}",), data=str(self.prepared),
                                intents=self.config.validity_intents, max_user_turns=self.config.max_turns,
                                seed=self.config.seed)
        return validity_detail(eval_validity(config, self._path("validity"), progress=self._phases(bar)))

    def _stage_metrics(self, bar: Task) -> str:
        n = self.config.eval_conversations
        config = EvalSimConfig(n_first_turns=max(4 * n, 2), max_conversations=n, n_probes=n, seed=self.config.seed,
                               max_new_tokens=48)
        eval_sim({"user-lm": self.user_spec}, self.prepared, self._path("metrics"), config, progress=self._phases(bar))
        return f"the Human row and the user LM on the test split ({n:,} conversations replayed, {n:,} probes each)"

    def _rlhi_backends(self) -> dict[str, str]:
        if self.judge is None:
            raise Skipped("no --judge for the rewrites on real data")
        # on the testbed the rewriter edits what the feedback asks for (testbed:editor); elsewhere the judge's model
        return {"rewriter": "testbed:editor", "judge": self.judge} if self.has_truth else {"rewriter": self.judge, "judge": self.judge}

    def _stage_rlhi(self, bar: Task) -> str:
        # the train split only (UserEval asks the test split's users), with persona-contrastive mirrors: what made
        # persona-conditioned DPO beat the base and persona-agnostic DPO on the testbed (docs/rlhi.md, run 3)
        report = build(self.prepared, self._path("rlhi"),
                       BuildConfig(**self._rlhi_backends(), split="train", mirrors=True), progress=self._phases(bar))
        return (f"{report['followups']['followups']:,} follow-ups, {report['personas']['written']:,} personas, "
                f"{report['pairs']:,} preference pairs ({report['mirrors']['pairs']:,} of them mirrors)")

    def _local_assistant(self) -> Path:
        """The assistant's model folder (DPO starts from it); Skipped when it is not a local hf: folder."""
        prefix, _, target = self.assistant_spec.partition(":")
        if prefix != "hf" or not (Path(target) / "config.json").is_file():
            raise Skipped(f"DPO starts from a local model folder; --assistant {self.assistant_spec} is not an hf: folder")
        return Path(target)

    def _stage_dpo(self, bar: Task) -> str:
        policy = self._local_assistant()
        if not self._complete("rlhi"):
            raise Skipped("no RLHI pairs (the RLHI stage did not run)")
        config = DPOTrainConfig(policy=str(policy), pairs=str(self._path("rlhi")), out=str(self._path("dpo")),
                                max_steps=self.config.dpo_steps, logging_steps=max(self.config.dpo_steps // 25, 1),
                                seed=self.config.seed, **LEAN_TRAINING)
        bar.start(self.config.dpo_steps, "updates")
        report = train_dpo(config, on_progress=bar.set).report
        return f"{report['steps']:,} updates on {report['pairs']:,} pairs, final loss {report['train_loss']:.4f}"

    def _stage_usereval(self, bar: Task) -> str:
        if self.judge is None:
            raise Skipped("no --judge for UserEval on real data")
        if not self._complete("dpo"):
            raise Skipped("no DPO policy (the DPO stage did not run)")

        config = UserEvalConfig(policy=self._hf(OUTPUTS["dpo"]), baseline=self.assistant_spec, judge=self.judge,
                                max_requests=self.config.usereval_requests, max_new_tokens=self.config.max_new_tokens,
                                seed=self.config.seed)
        report = eval_personal(self.prepared, self._path("usereval"), config, progress=self._phases(bar))
        personal, overall = report["personalisation"], report["overall"]
        return (f"DPO policy vs the assistant on {report['requests_used']:,} requests: personalisation win rate "
                f"{personal['win_rate']:.3f}, overall {overall['win_rate']:.3f}")

    def _stage_report(self, bar: Task) -> str:
        self._write_manifest(finished=False)
        bar.start(1, "report")
        path = build_report(self.dir)
        bar.advance()
        return f"{self._relative(path)}"


class _StageMemory:
    """The peak resident memory (RSS) of this process during one stage, in MiB (Linux; None elsewhere).

    A thread reads the RSS every 20 ms; when the stage takes the process to a new high, the kernel's exact
    high-water mark (``VmHWM``) is the stage's peak instead. The mark is never reset (``/proc/self/clear_refs``
    could): ``getrusage`` and ``/usr/bin/time -v`` report it as the whole run's peak."""

    INTERVAL_S = 0.02

    def __init__(self) -> None:
        self.peak_kib = self.high_water_at_start = 0
        self.sampler: threading.Thread | None = None
        self.stopped = threading.Event()

    def start(self) -> None:
        rss, high_water = _memory_kib("VmRSS"), _memory_kib("VmHWM")
        if rss is None or high_water is None:
            return
        self.peak_kib, self.high_water_at_start = rss, high_water
        if self.sampler is None:
            self.sampler = threading.Thread(target=self._sample, name="demo-stage-memory", daemon=True)
            self.sampler.start()

    def _sample(self) -> None:
        while not self.stopped.wait(self.INTERVAL_S):
            self.peak_kib = max(self.peak_kib, _memory_kib("VmRSS") or 0)

    def peak_mb(self) -> float | None:
        high_water = _memory_kib("VmHWM")
        if self.sampler is None or high_water is None:
            return None
        if high_water > self.high_water_at_start:  # a new high for the process: it happened in this stage
            return round(high_water / 1024, 1)
        return round(max(self.peak_kib, _memory_kib("VmRSS") or 0) / 1024, 1)

    def stop(self) -> None:
        self.stopped.set()
        if self.sampler is not None:
            self.sampler.join()


def _memory_kib(field: str) -> int | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (the most so far) of this process in KiB; None off Linux."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith(f"{field}:")), None)


def validity_detail(report: dict[str, Any]) -> str:
    """The validity stage's line: the ground-truth ranking, each simulator's Spearman, and the multi-turn drop of the
    assistant that answers at once on incomplete information (``hasty`` in the built-in panel)."""
    ranks = report["ranks"][GROUND_TRUTH]
    ranking = ", ".join(f"{name} {rank:g}" for name, rank in sorted(ranks.items(), key=lambda item: item[1]))
    spearman = ", ".join(f"{sim} {_value(row['spearman']['value'])}" for sim, row in report["validity"].items())
    line = f"{report['intents']} problems; ground-truth ranks {ranking}; Spearman {spearman}"
    hasty = (report.get("multi_turn_drop") or {}).get("hasty")
    if hasty:
        drops = ", ".join(f"{'ground truth' if user == GROUND_TRUTH else user} {d['value']:+.0f}"
                          for user, d in hasty["drop_points"].items())
        line += f"; hasty's multi-turn drop (points): {drops}"
    return line


def _value(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, UserError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
