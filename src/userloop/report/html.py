"""The demo's report: one static ``index.html`` that opens from disk (no server, no network, no JavaScript).

:func:`build_report` reads a demo folder's ``manifest.json`` (:func:`userloop.report.manifest.read_manifest`)
and the files each stage wrote, and renders one section per part of the main job, each with a sentence on what
its figure shows and the definition it follows. Charts are inline SVG (:mod:`userloop.report.svg`). A
stage that did not run is "not run" with the manifest's reason; a missing or unreadable file is one line
in its section, never a failed report. All text from the data is HTML-escaped.
"""

from __future__ import annotations

import functools
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from userloop.conversation import read_parquet
from userloop.data.personas import read_personas
from userloop.data.sources import prepared_splits
from userloop.errors import UserError
from userloop.files import check_output_file, read_user_json, read_user_lines, write_atomic
from userloop.metrics.evalsim import METRICS, PAPER_REFERENCE
from userloop.metrics.run_realism import run_realism
from userloop.metrics.validity import GROUND_TRUTH, NAIVE
from userloop.report import svg
from userloop.report.manifest import MANIFEST, read_manifest
from userloop.simulate.engine import FAILED_END_REASONS
from userloop.simulate.runs import RECORDS, read_records
from userloop.version import __version__

if TYPE_CHECKING:
    from userloop.simulate.records import SimulatedConversation

# Stage of the manifest that writes each path key (the others share their key's name).
STAGE_OF_PATH = {"raw": "testbed", "prepared": "prepare", "simulations": "simulate"}
SECTIONS = (
    ("run", "Run"),
    ("data", "Data summary"),
    ("training", "Training loss curves"),
    ("metrics", "Simulator metrics"),
    ("distributions", "Real vs simulated users"),
    ("endings", "When users end conversations"),
    ("assistant", "Assistant task scores: single-turn vs multi-turn"),
    ("validity", "Simulator validity: ranking an assistant panel"),
    ("rlhi", "RLHI: follow-ups, personas and preference pairs"),
    ("usereval", "UserEval"),
)
# How a simulated conversation ended (userloop.simulate.engine.END_REASONS), in words.
END_REASON_TEXT = {
    "user_ended": "the user wrote <|endconversation|>",
    "max_turns": "cut at the turn cap",
    "solved": "task solved (the run stops on a correct answer)",
    "error": "a model call failed",
    "context": "the conversation outgrew a model's context",
}
MAX_TURN_BINS = 15


def build_report(demo_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of demo folder ``demo_dir`` (or of an ``eval-validity`` folder: its validity section) to
    ``out`` (default ``DIR/report/index.html``, its folder created; a given ``out`` is a file in an existing folder,
    or an existing folder); returns its path."""
    if out is not None and Path(out).is_dir():
        out = Path(out) / "index.html"
    elif out is not None:
        check_output_file(out, "index.html")
    manifest = validity_folder_manifest(Path(demo_dir)) or read_manifest(demo_dir)
    out = Path(out) if out is not None else manifest["dir"] / "report" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, render(manifest))


def validity_folder_manifest(directory: Path) -> dict[str, Any] | None:
    """For an ``eval-validity`` output folder (its ``report.json`` has ``validity``; no demo ``manifest.json``): a
    manifest whose report is the validity section alone; None for any other folder."""
    if (directory / MANIFEST).is_file() or not (directory / "report.json").is_file():
        return None
    try:
        report = orjson.loads((directory / "report.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(report, dict) or "validity" not in report or "outcomes" not in report:
        return None
    directory = directory.resolve()
    return {"dir": directory, "paths": {"validity": directory}, "stages": [], "sections": ["validity"],
            "title": "userloop eval-validity report"}


def render(manifest: dict[str, Any]) -> str:
    """The whole page for a manifest as :func:`~userloop.report.manifest.read_manifest` returns it (or
    :func:`validity_folder_manifest`: then only the sections it names)."""
    report = _Report(manifest)
    sections = {"run": report.run, "data": report.data, "training": report.training, "metrics": report.metrics,
                "distributions": report.distributions, "endings": report.endings, "assistant": report.assistant,
                "validity": report.validity, "rlhi": report.rlhi, "usereval": report.usereval}
    shown = [(key, title) for key, title in SECTIONS if key in manifest.get("sections", sections)]
    nav = "".join(f'<li><a href="#{key}">{escape(title)}</a></li>' for key, title in shown)
    body = "".join(f'<section id="{key}"><h2>{escape(title)}</h2>{sections[key]()}</section>' for key, title in shown)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = escape(manifest.get("title", "userloop demo report"))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{title}</h1><p class=\"sub\">{escape(str(manifest['dir']))} · generated "
            f"{generated} by userloop {escape(__version__)}</p><nav><ol>{nav}</ol></nav></header>"
            f"<main>{body}</main></body></html>\n")


# --------------------------------------------------------------------------- reading
def read_json(path: Path) -> Any:
    """A JSON file a stage wrote; missing or invalid is a :class:`UserError` naming it."""
    return read_user_json(path, "file")


def read_loss_curve(path: Path) -> list[dict]:
    """The rows of a ``loss_curve.jsonl`` (``train user-lm`` / ``train assistant``): step, and loss or eval_loss."""
    rows = []
    for number, line in read_user_lines(path, "file"):
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise UserError(f"{path}:{number} is not valid JSON") from None
    return rows


def real_conversations(prepared: Path, split: str = "test") -> list:
    """The conversations of one split of a prepared folder (``userloop data prepare``)."""
    splits = prepared_splits(prepared)
    if split not in splits:
        raise UserError(f"{prepared} has no {split} split (not a prepared folder?)")
    return list(read_parquet(splits[split]))


def simulated_records(run: Path) -> list[SimulatedConversation]:
    """The finished conversations of a simulation run folder (``conversations.jsonl``; a torn last line is not one)."""
    if not (run / RECORDS).is_file():
        raise UserError(f"file not found: {run / RECORDS}")
    return read_records(run / RECORDS)[0]


def turn_words(text: str) -> int:
    """User-turn length in whitespace-separated words (the definition of the fidelity metrics)."""
    return len(text.split())


# --------------------------------------------------------------------------- HTML pieces
def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table of escaped text (no header row for an empty ``head``); columns that hold only numbers (or
    blanks) are right-aligned."""
    rows = [list(row) for row in rows]
    numeric = [bool(column) and all(_number_like(v) for v in column) for column in zip(*rows, strict=True)] or [False] * len(head)

    def cells(row, tag):
        return "".join(f'<{tag}{" class=num" if numeric[i] else ""}>{escape(_text(v))}</{tag}>' for i, v in enumerate(row))
    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    thead = f"<thead><tr>{cells(head, 'th')}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


_NUMBER = re.compile(r"[-+]?\d[\d,.]*%?( \[[^\]]*\])?|[-+]?\d[\d,.]* / [-+]?\d[\d,.]*|–|")


def _number_like(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool)) or (
        isinstance(value, str) and _NUMBER.fullmatch(value) is not None)


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _interval(rate: dict | None) -> str:
    """A solved-rate or win-rate summary as "r% [low%, high%]"."""
    if not rate or rate.get("rate", rate.get("win_rate")) is None:
        return "–"
    value = rate.get("rate", rate.get("win_rate"))
    low, high = rate["ci95"]
    return f"{value:.1%} [{low:.1%}, {high:.1%}]"


def _p(text: str) -> str:
    """A paragraph of escaped text; `backticked` spans become code."""
    return '<p class="what">' + re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text)) + "</p>"


def _figure(chart: str, caption: str = "") -> str:
    return f"<figure>{chart}" + (f"<figcaption>{escape(caption)}</figcaption>" if caption else "") + "</figure>"


def _problem(message: str) -> str:
    return f'<p class="problem">{escape(message)}</p>'


def _part(render_part: Callable[..., str], *args: Any) -> str:
    """Render one figure or table; a missing or malformed input becomes one line instead of a failed report."""
    try:
        return render_part(*args)
    except UserError as err:
        return _problem(str(err))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:  # a file of another shape
        return _problem(f"could not render this part: unexpected content ({type(err).__name__}: {err})")


class _Report:
    """The sections of one report; each method returns a section's HTML body."""

    def __init__(self, manifest: dict[str, Any]):
        self.manifest = manifest
        self.paths: dict[str, Any] = manifest["paths"]
        self.stages = {s.get("name"): s for s in manifest.get("stages") or [] if isinstance(s, dict)}

    def not_run(self, key: str) -> str:
        """The line for a path the manifest has no output for, with the stage's status and detail."""
        stage = self.stages.get(STAGE_OF_PATH.get(key, key))
        if stage is None:
            return '<p class="not-run">Not run.</p>'
        detail = (stage.get("detail") or "").rstrip(".")
        return (f'<p class="not-run">Not run: {escape(stage.get("title") or stage.get("name") or key)} '
                f'({escape(stage.get("status") or "not run")}){": " + escape(detail) if detail else ""}.</p>')

    def simulations(self) -> dict[str, Path]:
        return {name: path for name, path in (self.paths.get("simulations") or {}).items() if path is not None}

    # ------------------------------------------------------------------ run
    def run(self) -> str:
        m = self.manifest
        finished = m.get("finished") or "(the report is the last stage: built before the run finished)"
        facts = [("command", m.get("command")), ("started", m.get("started")), ("finished", finished),
                 ("data", m.get("data"))]
        models = m.get("models") or {}
        roles = {"user": "simulated user", "assistant": "assistant", "judge": "judge", "policy": "policy (after DPO)"}
        head = _table([], facts + [(f"model: {roles.get(role, role)}", spec) for role, spec in models.items()])
        stages = m.get("stages") or []
        rows = [(s.get("title") or s.get("name"), s.get("status"), s.get("seconds"), s.get("detail") or "") for s in stages]
        total = sum(s.get("seconds") or 0 for s in stages if isinstance(s.get("seconds"), int | float))
        return (_p("What ran, on what, with which models, and how long each stage took (wall-clock seconds).") + head
                + "<h3>Stages</h3>" + _table(["stage", "status", "seconds", "detail"], rows + [("total", "", total, "")]))

    # ------------------------------------------------------------------ data
    def data(self) -> str:
        parts = []
        if self.paths.get("prepared") is None:
            parts.append(self.not_run("prepared"))
        else:
            parts.append(_part(self._prepared, self.paths["prepared"]))
        raw = self.paths.get("raw")
        if raw is not None and (raw / "summary.json").is_file():
            parts.append(_part(self._testbed, raw / "summary.json"))
        return "".join(parts)

    def _prepared(self, prepared: Path) -> str:
        report = read_json(prepared / "report.json")
        lines, conversations, config = report["lines"], report["conversations"], report.get("config") or {}
        dropped = conversations["dropped"]
        counts = [("input lines read", lines["lines_read"]), ("bad lines (unusable)", lines["bad_lines"]),
                  ("conversations read", conversations["read"])]
        counts += [(f"dropped: {reason.replace('_', ' ')}", n) for reason, n in dropped.items() if n]
        counts += [("dropped in all", sum(dropped.values())), ("kept", conversations["kept"])]
        splits = [(name, s["conversations"], s["users"]) for name, s in report["splits"].items()]
        splits.append(("all", sum(s["conversations"] for s in report["splits"].values()),
                       sum(s["users"] for s in report["splits"].values())))
        language = config.get("language") or "any"
        return (_p(f"From `userloop data prepare` (report.json): every input line is accounted for. Filters follow the "
                   f"UserLM paper: language {language}, toxic conversations dropped, exact and near-duplicate removal "
                   f"over user turns, then user-level {config.get('splits', '')} train/validation/test splits with no "
                   "user in two splits.")
                + '<div class="row">' + _table(["conversations", "count"], counts)
                + _table(["split", "conversations", "users"], splits) + "</div>")

    def _testbed(self, path: Path) -> str:
        summary = read_json(path)
        facts = [("users", summary["users"]), ("conversations", summary["conversations"]),
                 ("conversations per user (mean)", summary["conversations_per_user"]["mean"]),
                 ("user turns per conversation (mean)", summary["user_turns_per_conversation"]["mean"])]
        ends = [(reason.replace("_", " "), _pct(share)) for reason, share in (summary.get("end_reasons") or {}).items()]
        return ("<h3>Testbed</h3>" + _p("The synthetic population the data came from (testbed summary.json): every "
                                         "user has a hidden persona, every turn a ground-truth label.")
                + '<div class="row">' + _table(["testbed", "value"], facts)
                + _table(["why the testbed user ended (truth)", "share"], ends) + "</div>")

    # ------------------------------------------------------------------ training
    def training(self) -> str:
        parts = [_p("Training loss (mean cross-entropy in nats per target token) by update step, and the validation "
                    "loss where it was computed. User LM: loss on user turns and <|endconversation|> of flipped "
                    "conversations (UserLM paper); assistant: loss on assistant turns; DPO: the DPO loss on "
                    "persona-conditioned preference pairs (RLHI).")]
        for key, title in (("user_lm", "User LM"), ("assistant", "Assistant"), ("dpo", "DPO")):
            parts.append(f"<h3>{title}</h3>")
            parts.append(self.not_run(key) if self.paths.get(key) is None else _part(self._loss_curve, self.paths[key], title))
        return "".join(parts)

    def _loss_curve(self, folder: Path, title: str) -> str:
        report_file = next((folder / name for name in ("train_report.json", "dpo_report.json")
                            if (folder / name).is_file()), None)
        report = read_json(report_file) if report_file is not None else {}
        curve = folder / "loss_curve.jsonl"
        if not curve.is_file():
            if not report:
                raise UserError(f"missing file: {curve}")
            return (f'<p class="note">No loss curve in {escape(str(folder))}: this trainer writes only its final '
                    f'numbers ({escape(report_file.name)}; final loss {escape(_text(report.get("train_loss")))}), '
                    'shown with the RLHI section below.</p>')
        rows = read_loss_curve(curve)
        series = {"train": [(r["step"], r["loss"]) for r in rows if "loss" in r],
                  "validation": [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]}
        if not any(series.values()):
            raise UserError(f"{curve} has no loss values")
        references = {"unigram baseline": report["unigram_baseline"]} if report.get("unigram_baseline") else None
        chart = svg.line_chart(series, title=f"{title} loss", x_label="update step", y_label="loss (nats/token)",
                               references=references)
        last = series["train"][-1][1] if series["train"] else None
        facts = [f"{len(series['train'])} logged steps", f"final train loss {_text(last)}"]
        if series["validation"]:
            facts.append(f"validation loss {_text(series['validation'][-1][1])}")
        if references:
            facts.append(f"unigram baseline {_text(report['unigram_baseline'])} (the loss of predicting each token "
                         "by its training frequency)")
        if report.get("parameters"):
            facts.append(f"{report['parameters']:,} parameters")
        return _figure(chart, "; ".join(facts) + ".")

    # ------------------------------------------------------------------ simulator metrics
    def metrics(self) -> str:
        if self.paths.get("metrics") is None:
            return self.not_run("metrics")
        return _part(self._metrics_tables, self.paths["metrics"])

    def _metrics_tables(self, folder: Path) -> str:
        metrics = read_json(folder / "metrics.json")
        if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
            raise UserError(f"{folder / 'metrics.json'} is not a {{simulator: {{metric: value}}}} object")
        rows = {**metrics, **PAPER_REFERENCE}

        def table(kind: str) -> str:
            names = [m for m, (_, _, table) in METRICS.items() if table == kind]
            head = ["simulator", *(f"{METRICS[m][0]} {'↑' if METRICS[m][1] == 'higher' else '↓'}" for m in names)]
            shown = rows if kind == "paper" else metrics
            return _table(head, [(name, *(values.get(m) for m in names)) for name, values in shown.items()])

        percent_metrics = [m for m in ("first_turn_diversity", "intent_decomposition", "termination_f1", "naturalness",
                                       "role_adherence", "intent_adherence") if any(v.get(m) is not None for v in rows.values())]
        chart = svg.bar_chart([METRICS[m][0] for m in percent_metrics],
                              {name: [values.get(m) for m in percent_metrics] for name, values in rows.items()},
                              title="Simulator metrics (0-100) next to the paper's Table 2", y_label="score")
        return (_p("The six metrics of \"Flipping the Dialogue\" (Table 2) and perplexity for each simulator and for the "
                   "real users (Human), from `userloop eval-sim` (metrics.json); rows 'paper: ...' are the paper's "
                   "WildChat values. Diversity: distinct first-turn n-grams; decomposition: share of first turns "
                   "stating the whole intent (lower is better); termination F1: predicting the real end of "
                   "conversations; naturalness: the share a detector judges human-written; adherence: staying in the "
                   "user role and on the intent (probes). Empty cells: the metric does not apply.")
                + table("paper") + _figure(chart)
                + "<h3>Behavioural fidelity</h3>"
                + _p("Distances between simulated and real distributions on a replay of held-out conversations "
                     "(Wasserstein-1 and Kolmogorov-Smirnov; lower is closer), the feedback-share difference "
                     "(points) and the vocabulary overlap (Jaccard x100, higher is closer). Human: one half of the "
                     "real conversations against the other.")
                + table("fidelity"))

    # ------------------------------------------------------------------ distributions
    def distributions(self) -> str:
        if self.paths.get("prepared") is None:
            return self.not_run("prepared")
        if not self.simulations():
            return self.not_run("simulations")
        return _part(self._distribution_charts)

    @functools.cached_property
    def samples(self) -> tuple[list, dict[str, list[SimulatedConversation]]]:
        """The real test-split conversations and each simulation run's records (read once, for two sections)."""
        real = real_conversations(self.paths["prepared"])
        return real, {name: simulated_records(path) for name, path in self.simulations().items()}

    def _distribution_charts(self) -> str:
        real, simulated = self.samples
        turns = {"real": [turn_words(t) for c in real for t in c.user_turns]}
        lengths = {"real": [c.n_user_turns for c in real]}
        for name, records in simulated.items():
            label = f"simulated ({name})"
            turns[label] = [turn_words(text) for r in records for text in r.user_turns if text]
            lengths[label] = [r.n_user_turns for r in records if r.end_reason not in FAILED_END_REASONS]
        word_edges = svg.nice_ticks(0, max(1.0, _quantile([v for vs in turns.values() for v in vs], 0.95)), 10)
        longest = max([1, *(v for vs in lengths.values() for v in vs)])
        top = min(MAX_TURN_BINS, longest)
        turn_edges = list(range(1, top + 1)) if longest > top else list(range(1, top + 2))
        return (_p("Real users are the conversations of the prepared test split; simulated users are the finished "
                   "conversations of each simulation run (conversations.jsonl; failed ones left out). Each bar is the "
                   "share of that group's turns or conversations in the bin, so groups of different sizes compare. "
                   "Turn length counts whitespace-separated words, as the fidelity metrics do.")
                + _figure(svg.histogram(turns, word_edges, title="User-turn length", x_label="words per user turn"))
                + _figure(svg.histogram(lengths, turn_edges, title="Conversation length",
                                        x_label="user turns per conversation", open_ended=longest > top)))

    # ------------------------------------------------------------------ endings
    def endings(self) -> str:
        if not self.simulations():
            return self.not_run("simulations")
        if self.paths.get("prepared") is None:
            return self.not_run("prepared")
        return _part(self._ending_table)

    def _ending_table(self) -> str:
        real, simulated = self.samples
        ended = {"real": [c.n_user_turns for c in real]}
        totals = {"real": len(real)}
        for name, records in simulated.items():
            ended[f"simulated ({name})"] = [r.n_user_turns for r in records if r.end_reason == "user_ended"]
            totals[f"simulated ({name})"] = len(records)
        longest = max([1, *(v for vs in ended.values() for v in vs),
                       *(r.n_user_turns for records in simulated.values() for r in records)])
        top = min(MAX_TURN_BINS, longest)
        categories = [str(k) for k in range(1, top)] + [f"{top}+" if longest > top else str(top)]
        shares = {f"{group} (n={totals[group]:,})": [sum(1 for v in values if min(v, top) == k) / totals[group]
                                                     if totals[group] else None for k in range(1, top + 1)]
                  for group, values in ended.items()}
        chart = svg.bar_chart(categories, shares, title="Share of conversations the user ended at each user turn",
                              y_label="share of conversations", x_label="user turn", percent=True)
        rows = []
        for name, records in simulated.items():
            reasons = Counter(r.end_reason for r in records)
            alone = sum(1 for r in records if r.end_reason == "user_ended"
                        and not any(m.ended for m in r.messages if m.role == "user"))
            for reason, text in END_REASON_TEXT.items():
                count = reasons.pop(reason, 0)
                detail = (f"{alone:,} with the token alone, {count - alone:,} after a last message"
                          if reason == "user_ended" and count else "")
                rows.append((name, text, count, _pct(count / len(records)) if records else "–", detail))
            rows += [(name, str(reason), count, _pct(count / len(records)), "") for reason, count in reasons.items()]
        return (_p("A real conversation ends when its user stops writing: after its last user turn. A simulated user "
                   "ends one by writing <|endconversation|> (UserLM-8b's end token); the others were cut at the "
                   "run's turn cap, stopped on a solved task, or failed, so the simulated bars sum to the share the "
                   "user ended. Real: the prepared test split; simulated: each run's conversations.jsonl.")
                + _figure(chart) + "<h3>How the simulated conversations ended</h3>"
                + _table(["run", "end", "conversations", "share", "detail"], rows)
                + _part(realism_table, self.simulations()) + _part(tool_tasks_table, self.simulations()))

    # ------------------------------------------------------------------ assistant
    def assistant(self) -> str:
        if self.paths.get("evaluate_assistant") is None:
            return self.not_run("evaluate_assistant")
        return _part(self._assistant_scores, self.paths["evaluate_assistant"])

    def _assistant_scores(self, folder: Path) -> str:
        report = read_json(folder / "report.json")
        scores, reference = report["scores"], report["paper_reference"]
        groups = list(scores)
        settings = (("single_turn", "single-turn (full task in one turn)"),
                    ("multi_turn", "multi-turn (simulated user reveals it)"))
        series = {label: [(scores[g][key] or {}).get("rate") for g in groups] for key, label in settings}
        intervals = {label: [tuple(scores[g][key]["ci95"]) if scores[g][key] else None for g in groups]
                     for key, label in settings}
        refs = {"paper, GPT-4o assistant, GPT-4o user": reference["solved_with_prompted_gpt4o_user"],
                "paper, GPT-4o assistant, UserLM-8b user": reference["solved_with_userlm8b_user"]}
        chart = svg.bar_chart(groups, series, intervals=intervals, references=refs, percent=True, y_max=1.0,
                              title="Share of tasks solved (95% Wilson interval)", y_label="solved", x_label="tasks")
        rows = [(g, _interval(scores[g]["single_turn"]), _interval(scores[g]["multi_turn"]),
                 f"{scores[g]['drop_points']:+.1f}" if scores[g].get("drop_points") is not None else None) for g in groups]
        turns = report.get("multi_turn_user_turns") or {}
        return (_p("The UserLM paper's experiment (section 5): the same tasks given to the assistant fully specified "
                   "in one turn, and revealed shard by shard by the simulated user over several turns, from "
                   "`evaluate-assistant` (report.json). A task is solved when the checker accepts the assistant's "
                   f"answer. Dashed lines: {reference['source']}.")
                + _figure(chart)
                + _table(["tasks", "single-turn solved (95% CI)", "multi-turn solved (95% CI)", "drop (points)"], rows)
                + (_p(f"Simulated user turns per conversation: mean {turns['mean']:.2f}, range {turns['min']}-"
                      f"{turns['max']}; assistant {report.get('assistant')}, user {report.get('user')}.") if turns else "")
                + (_part(realism_table, {"multi-turn": folder / "multi_turn"}) if (folder / "multi_turn").is_dir() else ""))

    # ------------------------------------------------------------------ validity
    def validity(self) -> str:
        if self.paths.get("validity") is None:
            return self.not_run("validity")
        return _part(validity_tables, self.paths["validity"])

    # ------------------------------------------------------------------ RLHI
    def rlhi(self) -> str:
        parts = []
        if self.paths.get("rlhi") is None:
            parts.append(self.not_run("rlhi"))
        else:
            parts.append(_part(self._rlhi_build, self.paths["rlhi"]))
        parts.append("<h3>Persona-conditioned DPO</h3>")
        parts.append(self.not_run("dpo") if self.paths.get("dpo") is None else _part(self._dpo, self.paths["dpo"]))
        return "".join(parts)

    def _rlhi_build(self, folder: Path) -> str:
        report = read_json(folder / "report.json")
        followups, personas, rewrites = report["followups"], report["personas"], report["rewrites"]
        funnel = [("conversations read", report["conversations"]), ("follow-up user turns", followups["followups"]),
                  ("↳ with any feedback", followups["with_any_feedback"]),
                  ("↳ with negative feedback", followups["with_negative_feedback"]),
                  ("users", personas["users"]), (f"↳ with >= {personas['min_conversations']} conversations: personas",
                                                 personas["written"]),
                  ("rewrite candidates", rewrites["candidates"]), ("↳ rewrites attempted", rewrites["attempted"]),
                  ("↳ passed the filter: preference pairs", report["pairs"]),
                  ("↳ pairs with a persona", report["pairs_with_persona"])]
        by_type = followups["by_feedback_type"]
        chart = svg.bar_chart([t.replace("_", " ") for t in by_type], {"follow-ups": list(by_type.values())},
                              title="Follow-ups by feedback type", y_label="follow-ups")
        sources = [("user-guided rewrites (rlhi build)", report["pairs"], report["pairs_with_persona"])]
        outcomes = list((rewrites.get("outcomes") or {}).items())
        examples = _part(self._persona_examples, folder / "personas.jsonl")
        return (_p("RLHI (\"learning from human interaction\"): follow-up user turns are classified by relation and "
                   "feedback type, each user with enough history gets a persona, and a follow-up with feedback turns "
                   "the assistant's answer into a rejected response and its user-guided rewrite (kept if the filter "
                   "accepts it) into the chosen one, from `rlhi build` (report.json).")
                + f'<div class="row">{_table(["step", "count"], funnel)}'
                + _table(["pair source", "pairs", "with persona"], sources)
                + _table(["rewrite outcome", "candidates"], outcomes) + "</div>"
                + _figure(chart, f"classifier: {followups.get('backend')}; personas: {personas.get('backend')}.")
                + examples)

    def _persona_examples(self, path: Path, count: int = 3) -> str:
        personas = list(read_personas(path).values())[:count]
        return ("<h3>Example personas</h3><ul class=\"personas\">"
                + "".join(f"<li>{escape(persona)}</li>" for persona in personas) + "</ul>") if personas else ""

    def _dpo(self, folder: Path) -> str:
        report = read_json(folder / "dpo_report.json")
        facts = [("method", report.get("method")), ("persona in the prompt", report.get("persona")),
                 ("pairs", report.get("pairs")), ("pairs with a persona", report.get("pairs_with_persona")),
                 ("malformed pairs left out", report.get("pairs_skipped_malformed")), ("updates", report.get("steps")),
                 ("training loss (mean)", report.get("train_loss")),
                 *((f"{name.replace('_', ' ')} (last / mean)",
                    f"{_text(report.get(name + '_last'))} / {_text(report.get(name + '_mean'))}")
                   for name in ("reward_accuracy", "reward_margin"))]
        return (_p("DPO of the assistant on the pairs with the user's persona as a system message (RLHI section 2.3), "
                   "from `train dpo` (dpo_report.json). Reward accuracy: share of pairs where the policy's implicit "
                   "reward ranks the chosen answer above the rejected one.") + _table(["", "value"], facts)
                + _p("What a run of the demo's size can show: the pipeline end to end, not personalisation. "
                     "Persona-conditioned DPO can only personalise a policy that reads the persona line. On the "
                     "testbed, a 2-layer, width-128 assistant does not: its answers scored under the asker's true "
                     "persona are worth +0.016 more with the right persona than with another user's. The small "
                     "preset's assistant (4 layers, width 256, 900 updates; configs/preset-small-assistant.yaml) "
                     "does: +0.169 (+0.219 trained in bf16). From that base, DPO on RLHI's pairs did not beat it, "
                     "whether the rewrites re-render or edit the logged answer or edit the policy's own. With each "
                     "edit also mirrored for a user who prefers the opposite (what this demo's RLHI stage builds), "
                     "it beat the base by +0.037 (95% interval [+0.020, +0.054]) and persona-agnostic DPO by "
                     "+0.076 over five seeds (three quarters of the gain also shows with another user's persona). "
                     "A policy that does not read the persona cannot fit mirrored pairs "
                     "(a mirror and its pair differ only in the persona): its DPO loss stays near log 2 = 0.693 and "
                     "it drifts from the base, as the persona-agnostic control did there. docs/rlhi.md, run 3, has "
                     "the figures."))

    # ------------------------------------------------------------------ UserEval
    def usereval(self) -> str:
        if self.paths.get("usereval") is None:
            return self.not_run("usereval")
        return _part(self._usereval_results, self.paths["usereval"])

    def _usereval_results(self, folder: Path) -> str:
        report = read_json(folder / "report.json")
        kinds = (("personalisation", "personalised (judged for this user)"), ("overall", "overall (any user)"))
        rates = [report[k]["win_rate"] for k, _ in kinds]
        chart = svg.bar_chart([label for _, label in kinds], {"policy win rate": rates},
                              intervals={"policy win rate": [tuple(report[k]["ci95"]) for k, _ in kinds]},
                              references={"no difference (50%)": 0.5}, percent=True, y_max=1.0,
                              title="UserEval: policy vs baseline (95% interval)", y_label="win rate")
        rows = [(label, _interval(report[k]), report[k]["wins"], report[k]["ties"], report[k]["losses"],
                 report[k]["inconsistent_orders"]) for k, label in kinds]
        config = report.get("config") or {}
        match = report.get("mean_persona_match")
        return (_p("UserEval (RLHI section 3): held-out users' opening requests answered by the policy and by the "
                   "baseline; a judge compares the two answers in both orders, once for the user's persona "
                   "(personalised) and once for any user (overall). Win rate = (wins + ties / 2) / requests, from "
                   "`eval-personal` (report.json).")
                + _figure(chart, f"policy {config.get('policy')} vs baseline {config.get('baseline')}; judge "
                                 f"{report.get('judge')}; {report.get('requests_used', 0):,} requests.")
                + _table(["judged", "win rate (95% CI)", "wins", "ties", "losses", "inconsistent orders"], rows)
                + (_p(f"Mean persona-match score (testbed scorer, 0-1): policy {match['policy']:.3f}, baseline "
                      f"{match['baseline']:.3f}.") if match else ""))


def validity_tables(folder: Path) -> str:
    """The validity section from an ``eval-validity`` folder's report.json (docs/validity.md): validity per simulator,
    success per assistant by each user (chart), outcomes per assistant and user, and the multi-turn drop."""
    report = read_json(folder / "report.json")
    outcomes, ranks, validity = report["outcomes"], report["ranks"], report["validity"]
    users, sims = list(outcomes), list(validity)
    assistants = list(outcomes[GROUND_TRUTH])

    def name(user: str) -> str:
        return {GROUND_TRUTH: "ground truth", NAIVE: "naive protocol"}.get(user, user)

    statistics_rows = [("Spearman", *(_estimate(validity[s]["spearman"]) for s in sims)),
                       ("Kendall tau-b", *(_estimate(validity[s]["kendall"]) for s in sims))]
    statistics_rows += [(f"MAE {outcome.replace('_', ' ')}", *(_estimate(validity[s]["mae"][outcome]) for s in sims))
                        for outcome in validity[sims[0]]["mae"]] if sims else []
    chart = svg.bar_chart(assistants, {name(u): [outcomes[u][a]["success"] for a in assistants] for u in users},
                          percent=True, y_max=1.0, title="Task success per assistant, by user", y_label="success",
                          x_label="assistant")
    outcome_rows = [(a, name(u), ranks[u][a], _pct(o["success"]), f"{o['turns']:.2f}", _pct(o["feedback"]), _pct(o["satisfied"]),
                     _pct(o.get("end_user_ended")), _pct(o.get("end_max_turns")))
                    for a in assistants for u in users for o in [outcomes[u][a]]]
    expected = (report.get("panel") or {}).get("expected_order")
    inputs = (f"Ground truth `{report.get('ground_truth')}`; {report['intents']} held-out problems x {report['n']} "
              f"conversation(s) per assistant and user; assistants ranked by {report['ranked_by']}"
              + (f"; expected order by construction: {', '.join(expected)}." if expected else "."))
    return (_p("Every user simulator and the ground-truth users (the interactive testbed users, who check answers and "
               "act by their persona) talk to every assistant of a panel whose quality is known by construction, on "
               "the same held-out problems and seeds (`eval-validity`, report.json; docs/validity.md). A simulator is "
               "valid when it ranks the assistants as the ground truth does (Spearman and Kendall tau-b over the "
               "assistants' success, as SimulatorArena validates simulators against human ratings) and reproduces the "
               "outcomes (MAE: mean over assistants of the absolute difference from the ground truth). Intervals: 95% "
               "percentile bootstrap over problems; \"undefined\" when a side ranks every assistant equal. The naive "
               "protocol gives the full task in one turn and never ends: today's single-turn evaluation.")
            + _p(inputs)
            + _table(["against the ground truth (95% CI)", *map(name, sims)], statistics_rows)
            + _figure(chart) + "<h3>Outcomes per assistant</h3>"
            + _table(["assistant", "user", "rank", "success", "user turns", "feedback", "satisfied", "user ended",
                      "turn cap"], outcome_rows)
            + _part(_drop_table, report, name))


def _drop_table(report: dict, name: Callable[[str], str]) -> str:
    """The multi-turn drop per assistant (report.json's ``multi_turn_drop``) as a table and a chart; empty without
    the naive runs."""
    drops = report.get("multi_turn_drop")
    if not drops:
        return _p("Multi-turn drop: not measured (the naive protocol was not run).")
    assistants = list(drops)
    users = list(drops[assistants[0]]["multi_turn"])
    sims = [u for u in users if u != GROUND_TRUTH]
    head = ["assistant", "single turn", *(f"{name(u)}: multi-turn, drop (points, 95% CI)" for u in users),
            *(f"{name(s)}: drop in the ground truth's direction" for s in sims)]
    rows = [(a, _pct(d["single_turn"]),
             *(f"{_pct(d['multi_turn'][u])}, {_estimate(d['drop_points'][u], '+.1f')}" for u in users),
             *(d["same_direction_as_ground_truth"][s] for s in sims)) for a, d in drops.items()]
    chart = svg.bar_chart(assistants,
                          {name(u): [drops[a]["drop_points"][u]["value"] for a in assistants] for u in users},
                          intervals={name(u): [_pair(drops[a]["drop_points"][u]["ci95"]) for a in assistants]
                                     for u in users},
                          title="Multi-turn drop: single-turn minus multi-turn success (points, 95% interval)",
                          y_label="drop (points)", x_label="assistant")
    return ("<h3>Multi-turn drop</h3>"
            + _p("Success when the problem is fully specified in one turn (the naive runs) minus success when each user "
                 "reveals it over turns, in points (the UserLM paper: GPT-4o 74.6% -> 57.4% with UserLM-8b; "
                 "Lost in Conversation: 39% on average). It should appear for assistants that answer before they have "
                 "the information, not for those that ask.")
            + _figure(chart) + _table(head, rows))


def _estimate(entry: dict, spec: str = ".2f") -> str:
    """A report.json statistic ``{"value", "ci95"}`` as "v [low, high]" ("undefined" for a null value)."""
    value, ci = entry["value"], entry.get("ci95")
    if value is None:
        return "undefined"
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else f"{value:{spec}}"


def _pair(ci: list[float] | None) -> tuple[float, float] | None:
    return tuple(ci) if ci else None


def realism_table(runs: dict[str, Path]) -> str:
    """Each run's success beside the realism of its simulated users (summary.json's ``realism``, or computed from the
    records of a run written before it had one), and the real users of the reference split when a run has them."""
    rows, human = [], None
    for name, run in runs.items():
        summary = read_json(run / "summary.json")
        block = summary["realism"] if "realism" in summary else run_realism(simulated_records(run))
        if block:
            human = human or block.get("human")
            rows.append(_realism_row(name, _interval(summary["overall"]["solved"]), block))
    if human:
        rows.append(_realism_row(f"real users ({human['split']} split)", None, human))
    if not rows:
        return ""
    return ("<h3>Realism of the simulated users</h3>"
            + _p("How human-like the users behind each score were (summary.json's realism block, docs/simulate.md): "
                 "first-turn diversity (higher is more diverse) and intent decomposition (lower copies less of the "
                 "intent) as in Flipping the Dialogue's Table 2, the share of conversations the user ended, user turns "
                 "per conversation and words per user turn. Failed conversations are left out.")
            + _table(["run", "conversations", "solved (95% CI)", "first-turn diversity", "decomposition", "user ended",
                      "user turns (mean)", "words per turn (median)"], rows))


def tool_tasks_table(runs: dict[str, Path]) -> str:
    """pass^k of the runs with tool tasks (summary.json's ``tool_tasks``, docs/agents.md); empty when none has them."""
    rows = []
    for name, run in runs.items():
        tools = read_json(run / "summary.json").get("tool_tasks")
        if tools:
            rows.append((name, tools["tasks"], tools["trials"],
                         ", ".join(f"pass^{k} {value:.3f}" for k, value in tools["pass_hat_k"].items())))
    if not rows:
        return ""
    return ("<h3>Tool tasks: pass^k</h3>"
            + _p("Tasks where the assistant calls tools on a database: a trial succeeds when the final database equals "
                 "the task's goal state and the user was told what it had to be told; pass^k is the chance that k "
                 "trials of a task all succeed (tau-bench), averaged over tasks. Per-task counts: the run's summary.md.")
            + _table(["run", "tasks", "trials", "pass^k"], rows))


def _realism_row(name: str, solved: str | None, stats: dict) -> tuple:
    return (name, stats["conversations"], solved, stats["first_turn_diversity"], stats["intent_decomposition"],
            _pct(stats["termination"]["user_ended"]), (stats["user_turns"] or {}).get("mean"),
            (stats["user_turn_words"] or {}).get("p50"))


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 1.0
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, round(q * 100) - 1))]


CSS = """
:root { --ink: #1d232b; --muted: #5b6572; --line: #d9dee4; --accent: #0072b2; --bad: #a3321c; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: #fafbfc; }
header { padding: 24px max(24px, calc(50vw - 520px)) 12px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 26px; } h2 { margin: 0 0 8px; font-size: 21px; } h3 { margin: 18px 0 6px; font-size: 16px; }
.sub, .muted { color: var(--muted); } .sub { margin: 4px 0 8px; font-size: 13px; word-break: break-all; }
nav ol { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0; padding: 0; list-style: none; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; } nav a:hover { text-decoration: underline; }
main { max-width: 1040px; margin: 0 auto; padding: 8px 24px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 18px 22px; margin: 18px 0; }
p.what { margin: 0 0 12px; color: var(--muted); max-width: 80ch; }
p.not-run, p.note { color: var(--muted); font-style: italic; } p.problem { color: var(--bad); }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-weight: 600; background: #f3f5f7; } td.num, th.num { text-align: right; } td { word-break: break-word; }
.row { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
figure { margin: 8px 0 14px; } figcaption { color: var(--muted); font-size: 13px; }
svg.chart { width: 100%; max-width: 760px; height: auto; display: block; font-family: inherit; }
svg .chart-title { font-size: 15px; font-weight: 600; fill: var(--ink); }
svg .tick, svg .legend { font-size: 11px; fill: var(--muted); } svg .reference-label { font-size: 10px; fill: #444; } svg .axis-label { font-size: 12px; fill: var(--ink); }
svg .grid { stroke: #eceff2; } svg .axis { stroke: #8a939e; }
svg .reference { stroke: #444; stroke-width: 1.5; stroke-dasharray: 5 4; } svg .interval { stroke: #222; fill: none; stroke-width: 1.3; }
ul.personas { margin: 4px 0; padding-left: 20px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f0f2f4; padding: 0 3px; border-radius: 3px; }
@media print {
  body { background: #fff; font-size: 12px; } header { padding: 0 0 8px; } nav { display: none; }
  main { max-width: none; padding: 0; } section { border: none; padding: 0; margin: 0 0 16px; break-inside: avoid-page; }
  figure, table { break-inside: avoid; }
}
"""
