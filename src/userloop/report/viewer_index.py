"""The conversation viewer's index: every conversation of the given paths in memory, searchable.

A path is a raw conversation file or folder (any format :mod:`userloop.data.readers` detects), a
prepared folder (every split, each conversation marked with its split), a simulation run folder
(``userloop simulate``), an ``evaluate-assistant`` folder (its ``single_turn/`` and ``multi_turn/``
runs), any folder holding run folders, or a ``userloop demo`` folder (the manifest's data and
simulation paths). Every conversation becomes one :class:`Entry` with the fields the viewer filters
on; what cannot be read is counted per source in :attr:`ViewerIndex.problems`, never dropped silently.

Testbed conversations get the testbed's hidden truth (intent, how the simulated user ended, whether
its tasks were solved) from the ``truth.jsonl`` beside the raw conversations. Real and simulated
conversations are matched for the side-by-side view by intent text, and an open-intent scenario
(built by ``userloop scenarios build`` from prepared data) by the id of the conversation it came from.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from userloop.data.readers import ReadReport, read_conversations
from userloop.data.sources import expand_inputs, prepared_splits
from userloop.errors import UserError
from userloop.metrics.run_realism import realism_line
from userloop.report.manifest import read_manifest
from userloop.simulate.runs import RECORDS, RUN_FILE, SUMMARY_JSON, read_records
from userloop.simulate.scenarios import load_scenarios
from userloop.testbed import read_truth
from userloop.testbed.population import truth_folder

if TYPE_CHECKING:
    from userloop.simulate.records import SimulatedConversation

PAGE_SIZE = 50
FACET_LIMIT = 100  # most values listed per facet (the rest are counted as "other values")
FACETS = ("source", "kind", "scenario", "outcome", "ended", "user")
SIMULATED_ENDINGS = {"user_ended": "user ended (<|endconversation|>)", "max_turns": "max turns",
                     "solved": "solved (answer accepted)", "error": "error", "context": "outgrew the context"}
TESTBED_ENDINGS = {"satisfied": "user satisfied", "tolerated": "user tolerated", "gave_up": "user gave up",
                   "turn_limit": "turn limit"}
SIDE_BY_SIDE_LIMIT = 5


@dataclass(slots=True)
class Entry:
    """One conversation as the viewer shows it."""

    key: str
    origin: str                      # "real" or "simulated"
    source: str                      # e.g. "real: prepared (train)", "simulated: sims/open"
    conversation_id: str
    user: str
    intent: str
    scenario: str                    # scenario id ("" for real conversations)
    kind: str                        # open / math / code for simulated, "real" for real conversations
    outcome: str                     # solved / failed / unscored
    ended: str                       # how the conversation ended (see SIMULATED_ENDINGS, TESTBED_ENDINGS)
    user_turns: int
    messages: list[dict[str, Any]]   # {role, content, events, classification?, score?, tool_steps?}
    end_events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    source_conversation: str | None = None  # open scenarios: the real conversation the intent came from
    task_score: dict[str, Any] | None = None  # tool scenarios: goal state reached and outputs told (Score)
    text: str = ""                   # lower-cased search text

    def facet(self, name: str) -> str:
        return getattr(self, name)

    def summary(self) -> dict[str, Any]:
        first = next((m["content"] for m in self.messages if m["role"] == "user"), "")
        return {"key": self.key, "origin": self.origin, "source": self.source, "user": self.user,
                "intent": self.intent, "scenario": self.scenario, "kind": self.kind, "outcome": self.outcome,
                "ended": self.ended, "user_turns": self.user_turns, "first_turn": first[:200]}

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "conversation_id": self.conversation_id, "messages": self.messages,
                "end_events": self.end_events, "error": self.error, "source_conversation": self.source_conversation,
                "task_score": self.task_score}


@dataclass(frozen=True)
class Filters:
    """What the list shows: exact values of the facets (None: any) and words that must all appear."""

    source: str | None = None
    kind: str | None = None
    scenario: str | None = None
    outcome: str | None = None
    ended: str | None = None
    user: str | None = None
    query: str = ""

    def matches_text(self, entry: Entry) -> bool:
        return all(word in entry.text for word in self.query.lower().split())

    def matches_facets(self, entry: Entry, skip: str | None = None) -> bool:
        """Whether ``entry`` has every chosen facet value (but the facet ``skip``)."""
        for name in FACETS:
            wanted = getattr(self, name)
            if name != skip and wanted is not None and entry.facet(name) != wanted:
                return False
        return True


@dataclass
class SourceSummary:
    """One source read: its label, the conversations it gave and what could not be read."""

    label: str
    path: str
    conversations: int = 0
    unreadable: int = 0
    notes: list[str] = field(default_factory=list)
    headline: str | None = None      # a simulation run's success and the realism of its users (summary.json)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "path": self.path, "conversations": self.conversations,
                "unreadable": self.unreadable, "notes": self.notes, "headline": self.headline}


class ViewerIndex:
    """All entries, the sources they came from, and the lookups of the list, detail and side-by-side views."""

    def __init__(self, entries: list[Entry], sources: list[SourceSummary]) -> None:
        self.entries, self.sources = entries, sources
        self.by_key = {entry.key: entry for entry in entries}
        self._by_intent: dict[str, list[Entry]] = defaultdict(list)
        self._real_by_id: dict[str, list[Entry]] = defaultdict(list)
        self._simulated_by_source_conversation: dict[str, list[Entry]] = defaultdict(list)
        for entry in entries:
            if entry.intent:
                self._by_intent[entry.intent.strip()].append(entry)
            if entry.origin == "real":
                self._real_by_id[entry.conversation_id].append(entry)
            elif entry.source_conversation:
                self._simulated_by_source_conversation[entry.source_conversation].append(entry)

    def overview(self) -> dict[str, Any]:
        """What the page header shows: totals per origin, every source, and what could not be read."""
        origins = Counter(entry.origin for entry in self.entries)
        return {"conversations": len(self.entries), "real": origins["real"], "simulated": origins["simulated"],
                "unreadable": sum(s.unreadable for s in self.sources), "sources": [s.to_dict() for s in self.sources],
                "page_size": PAGE_SIZE}

    def search(self, filters: Filters, page: int = 1) -> dict[str, Any]:
        """One page of the entries that match ``filters``, with the facet counts of the filter dropdowns
        (each facet counted over the entries that match every other filter)."""
        found = [entry for entry in self.entries if filters.matches_text(entry)] if filters.query.strip() else self.entries
        matching = [entry for entry in found if filters.matches_facets(entry)]
        pages = max(1, -(-len(matching) // PAGE_SIZE))
        if page < 1 or page > pages:
            raise UserError(f"page must be in 1..{pages}, got {page}")
        start = (page - 1) * PAGE_SIZE
        facets = {}
        for name in FACETS:
            counts = Counter(entry.facet(name) for entry in found if filters.matches_facets(entry, skip=name))
            top = counts.most_common(FACET_LIMIT)
            facets[name] = {"values": [[value, count] for value, count in top],
                            "other_values": len(counts) - len(top)}
        return {"total": len(matching), "page": page, "pages": pages, "page_size": PAGE_SIZE,
                "items": [entry.summary() for entry in matching[start:start + PAGE_SIZE]], "facets": facets}

    def conversation(self, key: str) -> dict[str, Any]:
        entry = self.by_key.get(key)
        if entry is None:
            raise KeyError(key)
        return entry.detail()

    def side_by_side(self, key: str) -> dict[str, Any]:
        """Real and simulated conversations with the intent of conversation ``key`` (the open one first):
        same intent text, or an open scenario built from this real conversation (or the real conversation
        a simulated one's scenario came from)."""
        entry = self.by_key.get(key)
        if entry is None:
            raise KeyError(key)
        related = list(self._by_intent.get(entry.intent.strip(), [])) if entry.intent else []
        if entry.origin == "real":
            related += self._simulated_by_source_conversation.get(entry.conversation_id, [])
        elif entry.source_conversation:
            related += self._real_by_id.get(entry.source_conversation, [])
        ordered = list({e.key: e for e in [entry, *related]}.values())
        columns = {}
        for origin in ("real", "simulated"):
            found = [e for e in ordered if e.origin == origin]
            columns[origin] = {"total": len(found), "conversations": [e.detail() for e in found[:SIDE_BY_SIDE_LIMIT]]}
        return {"key": key, "intent": entry.intent, **columns}


# ---------------------------------------------------------------------- loading
def load_index(paths: Iterable[str | Path], on_progress: Callable[[int], None] | None = None) -> ViewerIndex:
    """Read every path into one index (see the module docstring); ``on_progress(n)`` after each n conversations.

    A path that does not exist, or holds neither conversations nor unreadable records, is a :class:`UserError`."""
    entries: list[Entry] = []
    sources: list[SourceSummary] = []
    progress = on_progress or (lambda n: None)
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise UserError(f"{item}: no such file or folder")
        before, first_source = len(entries), len(sources)
        for source, conversations in _sources(path):
            sources.append(source)
            for entry in conversations:
                entry.key = str(len(entries))
                entries.append(entry)
                source.conversations += 1
                if source.conversations % 500 == 0:
                    progress(500)
            progress(source.conversations % 500)
        if len(entries) == before and not any(source.unreadable for source in sources[first_source:]):
            raise UserError(f"{item}: holds no conversations (expected conversation files, a prepared folder, "
                            "simulation runs or a demo folder)")
    return ViewerIndex(entries, sources)


def _sources(path: Path) -> Iterable[tuple[SourceSummary, Iterable[Entry]]]:
    """(summary, entries) for each source under ``path``; the entries fill the summary as they are read."""
    if path.is_dir() and (path / "manifest.json").is_file():
        yield from _demo_sources(path)
    elif path.is_dir() and _is_run(path):
        yield _run_source(path, path.name)
    elif path.is_dir() and prepared_splits(path):
        yield from _prepared_sources(path, path.name)
    elif path.is_dir() and (runs := _runs_under(path)):
        for run in runs:
            yield _run_source(run, run.relative_to(path).as_posix())
    else:
        yield _raw_source(path, path.name)


def _is_run(path: Path) -> bool:
    return (path / RUN_FILE).is_file() and (path / RECORDS).is_file()


def _runs_under(path: Path) -> list[Path]:
    return sorted(run.parent for run in path.rglob(RUN_FILE) if _is_run(run.parent))


def _demo_sources(folder: Path) -> Iterable[tuple[SourceSummary, Iterable[Entry]]]:
    """The demo's prepared data (or its raw data when it was not prepared) and every simulation run."""
    manifest = read_manifest(folder)
    paths = manifest["paths"]
    if paths.get("prepared") is not None:
        yield from _prepared_sources(paths["prepared"], "prepared", truth_from=paths.get("raw"))
    elif paths.get("raw") is not None:
        yield _raw_source(paths["raw"], "raw")
    runs = [run for run in (paths.get("simulations") or {}).values() if run is not None]
    if paths.get("evaluate_assistant") is not None:
        runs += _runs_under(paths["evaluate_assistant"])
    for run in runs:
        yield _run_source(run, _relative(run, manifest["dir"]))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# ---------------------------------------------------------------------- real conversations
def _raw_source(path: Path, name: str) -> tuple[SourceSummary, Iterable[Entry]]:
    expand_inputs([str(path)])  # a folder without conversation files is one line, before anything is read
    source = SourceSummary(f"real: {name}", str(path))
    truth = _truth(path if path.is_dir() else path.parent)

    def entries() -> Iterable[Entry]:
        report = ReadReport()
        for conversation in read_conversations([str(path)], report=report):
            yield _real_entry(conversation, source.label, truth)
        _note_bad_lines(source, report)

    return source, entries()


def _prepared_sources(folder: Path, name: str, truth_from: Path | None = None
                      ) -> Iterable[tuple[SourceSummary, Iterable[Entry]]]:
    truth = _truth(truth_from or folder)
    for split, file in prepared_splits(folder).items():
        source = SourceSummary(f"real: {name} ({split})", file)

        def entries(file: str = file, source: SourceSummary = source) -> Iterable[Entry]:
            report = ReadReport()
            for conversation in read_conversations([file], report=report):
                yield _real_entry(conversation, source.label, truth)
            _note_bad_lines(source, report)

        yield source, entries()


def _note_bad_lines(source: SourceSummary, report) -> None:
    bad = sum(report.bad_lines.values())
    if bad:
        source.unreadable += bad
        reasons = ", ".join(f"{reason} {count}" for reason, count in report.bad_lines.most_common())
        source.notes.append(f"{bad} unreadable lines ({reasons})")


def _truth(data: Path) -> dict[str, dict]:
    """The testbed truth of the conversations in ``data`` (a raw testbed folder, or a prepared folder made
    from one still on disk); empty for any other data."""

    folder = truth_folder(data)
    return read_truth(folder)[1] if folder is not None else {}


def _real_entry(conversation, label: str, truth: dict[str, dict]) -> Entry:
    messages = [{"role": m.role, "content": m.content, "events": []} for m in conversation.messages]
    known = truth.get(conversation.id)
    if known is not None:
        ended = TESTBED_ENDINGS.get(known.get("end_reason"), str(known.get("end_reason")))
        outcome = {True: "solved", False: "failed"}.get(known.get("solved"), "unscored")
    else:
        last = next((m.role for m in reversed(conversation.messages) if m.role != "system"), None)
        ended, outcome = f"last turn: {last or 'none'}", "unscored"
    intent = conversation.intent or (known or {}).get("intent") or ""
    user = conversation.user_id or "unknown"
    return Entry(key="", origin="real", source=label, conversation_id=conversation.id, user=user, intent=intent,
                 scenario="", kind="real", outcome=outcome, ended=ended, user_turns=conversation.n_user_turns,
                 messages=messages, text=_search_text(intent, conversation.id, user, messages))


def _search_text(intent: str, identifier: str, user: str, messages: list[dict[str, Any]]) -> str:
    return "\n".join([intent, identifier, user, *(m["content"] for m in messages)]).lower()


# ---------------------------------------------------------------------- simulated conversations
def _run_source(run: Path, name: str) -> tuple[SourceSummary, Iterable[Entry]]:
    source = SourceSummary(f"simulated: {name}", str(run), headline=_run_headline(run))

    def entries() -> Iterable[Entry]:
        bad: Counter[str] = Counter()
        try:
            records, torn = read_records(run / RECORDS, on_bad=lambda reason: bad.update([f"record {reason}"]))
        except UserError as err:
            lines = sum(1 for line in (run / RECORDS).read_bytes().splitlines() if line.strip())
            source.unreadable += lines
            source.notes.append(f"not shown: {err}")
            return
        if torn:
            source.unreadable += torn
            source.notes.append(f"{torn} torn last line (a write cut short; `userloop simulate` repairs it on resume)")
        origins = _scenario_origins(run)
        for record in records:
            yield _simulated_entry(record, source.label, origins)
        if bad:
            source.unreadable += sum(bad.values())
            source.notes.append(f"{sum(bad.values())} unreadable records (" + ", ".join(
                f"{reason} {count}" for reason, count in bad.most_common()) + ")")

    return source, entries()


def _run_headline(run: Path) -> str | None:
    """The run's solved count, pass^k (tool tasks) and the realism line of its users, from its summary.json (None:
    no summary yet)."""
    import orjson

    try:
        summary = orjson.loads((run / SUMMARY_JSON).read_bytes())
        solved = summary["overall"]["solved"]
        parts = [f"solved {solved['solved']:,}/{solved['scored']:,} ({solved['rate']:.1%})"] if solved else []
        tools = summary.get("tool_tasks")
        if tools and tools.get("pass_hat_k"):  # tool tasks: tau-bench's pass^k over the run's trials
            parts.append(", ".join(f"pass^{k} {value:.3f}" for k, value in tools["pass_hat_k"].items()))
        realism = realism_line(summary.get("realism"))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return "; ".join(parts + ([realism] if realism else [])) or None


def _scenario_origins(run: Path) -> dict[str, str]:
    """Scenario id -> the real conversation the scenario was built from: ``metadata["conversation_id"]``
    (testbed math problems) or, for open intents of prepared data, the scenario id itself (``scenarios
    build`` uses the conversation id; a renamed duplicate keeps it in ``metadata["task_id"]``). Read from
    the run's scenario file when it is still where ``run.json`` says; empty otherwise."""
    import orjson

    try:
        scenarios_path = Path(orjson.loads((run / RUN_FILE).read_bytes())["config"]["scenarios"])
        scenarios = load_scenarios(scenarios_path) if scenarios_path.is_file() else []
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, UserError):
        return {}
    origins = {}
    for scenario in scenarios:
        if "conversation_id" in scenario.metadata:
            origins[scenario.id] = str(scenario.metadata["conversation_id"])
        elif scenario.kind == "open" and "intent_from" in scenario.metadata:
            origins[scenario.id] = str(scenario.metadata.get("task_id", scenario.id))
    return origins


def _simulated_entry(record: SimulatedConversation, label: str, origins: dict[str, str]) -> Entry:
    messages = []
    for message in record.messages:
        shown = {"role": message.role, "content": message.content, "events": list(message.events)}
        for name, value in (("classification", message.classification),
                            ("score", message.score.to_dict() if message.score is not None else None),
                            ("ended", message.ended or None), ("finish_reason", message.finish_reason),
                            ("tool_steps", [step.to_dict() for step in message.tool_steps] or None)):
            if value is not None:
                shown[name] = value
        messages.append(shown)
    reason = record.end_reason
    outcome = {True: "solved", False: "failed"}.get(record.solved, "unscored")
    intent = record.intent or ""
    scenario = str(record.scenario_id)
    user = record.user_model or "single-turn prompt"
    return Entry(key="", origin="simulated", source=label, conversation_id=f"{scenario}/{record.sample}",
                 user=user, intent=intent, scenario=scenario, kind=record.kind, outcome=outcome,
                 ended=SIMULATED_ENDINGS.get(reason, str(reason)), user_turns=record.n_user_turns,
                 messages=messages, end_events=list(record.end_events), error=record.error,
                 source_conversation=origins.get(scenario),
                 task_score=record.task_score.to_dict() if record.task_score is not None else None,
                 text=_search_text(intent, scenario, user, messages))
