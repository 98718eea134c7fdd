"""Persona fidelity: do simulated users given persona P behave like the real users with P?

A persona-conditioned user LM (``userloop train user-lm --personas``) reads the user's persona after
the intent; this measures whether that changes its behaviour the way the persona changes real users'
behaviour, against an unconditioned user LM trained identically without personas.

**Held-out users.** The real conversations of one split (default ``test``: no user of it is trained
on) whose user has a derived persona (``userloop personas``). Each becomes a scenario: its intent, and
for the conditioned simulator its user's persona (``metadata["persona"]``, read by the simulation
engine); the unconditioned simulator gets the same scenarios without it. Both talk to the same
assistant (``userloop simulate`` run folders, resumable), ``n`` conversations per scenario, at most
``max_user_turns`` user turns. Real conversations are cut to the same number of user turns.

**Behaviour statistics** of a group of conversations (the same code for real and simulated ones):

* ``feedback_rate``: share of follow-ups (user turns after an assistant turn) whose feedback type is
  not ``none``, as RLHI's offline follow-up classifier (:mod:`userloop.rlhi.followup_classifier`) labels them;
* ``followup_<relation>``: share of follow-ups with each relation (the follow-up type distribution);
* ``user_turns``: user turns per conversation (capped at ``max_user_turns``);
* ``ended_by_user``: share of conversations the user ended within the cap (simulated: wrote
  ``<|endconversation|>``; real: had at most ``max_user_turns`` user turns);
* ``turn_words``: words per user turn (whitespace-separated).

Rates carry the binomial standard error over their follow-ups, means the standard error of the mean
(both treat turns as independent, though a user's turns are not: the errors are a lower bound).

**Per persona field** (expertise, detail, tone, structure) and value v: the statistics of real users
whose derived field is v (``r_v``) and of simulated users conditioned on personas with v (``s_v``; for
the unconditioned simulator, those simulating the same users). For each statistic over the values
with at least ``min_group`` real and simulated conversations:

* ``real_spread`` = max_v r_v - min_v r_v, and whether it *matters*: larger than twice the standard
  error of the difference between those two values;
* ``error`` E = mean_v |(s_v - mean(s)) - (r_v - mean(r))|: how far the simulator's per-value
  differences are from the real ones, after removing each side's overall level (the assistant the
  simulated users face is not the one the real users faced, which moves absolute rates);
* ``reproduction`` R = 1 - E / E0 with E0 = mean_v |r_v - mean(r)| (the error of a simulator showing
  no difference between values): 1 reproduces the real differences exactly, 0 is no better than
  ignoring the field, below 0 gets them wrong;
* ``direction_agreement``: share of value pairs (with different real values) ordered the same way by
  the simulator as by the real users (a tie in the simulator does not agree).

A field's summary per simulator is the mean R over the statistics where the field matters. Where the
testbed's truth is at hand, the derived fields' agreement with the true personas is reported, and
the real statistics by *true* value beside those by derived value.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from userloop.config import option, require_at_least_one
from userloop.conversation import Conversation, Message
from userloop.data.personas import persona_records
from userloop.errors import UserError
from userloop.files import write_atomic
from userloop.progress import Progress, no_progress
from userloop.rlhi.followups import extract_followups
from userloop.rlhi.personas import FIELD_VALUES, PREFERENCE_FIELDS
from userloop.rlhi.taxonomy import RELATIONS
from userloop.simulate.engine import FAILED_END_REASONS
from userloop.simulate.runs import SimulationConfig, read_records, simulate
from userloop.simulate.scenarios import Scenario
from userloop.statistics import binomial_se, mean_se
from userloop.testbed.population import read_truth
from userloop.userlm.flip import read_split

if TYPE_CHECKING:
    from userloop.simulate.records import SimulatedConversation

STATISTICS: tuple[str, ...] = ("feedback_rate", *(f"followup_{r}" for r in RELATIONS), "user_turns", "ended_by_user",
                               "turn_words")
RATES = frozenset(s for s in STATISTICS if s not in ("user_turns", "turn_words"))


@dataclass
class PersonaSimConfig:
    """What ``userloop eval-persona-sim`` measures; validated by :meth:`validate`."""

    personas: str = option(None, "personas.jsonl ('userloop personas'): the held-out users' derived personas")
    assistant: str = option(None, "the assistant both simulators talk to (a model spec)")
    conditioned: str | None = option(None, "the persona-conditioned user LM (model spec): sees intent and persona")
    unconditioned: str | None = option(None, "the unconditioned user LM (model spec): sees the intent only")
    data: str | None = option(None, "prepared folder (default: the built-in testbed, prepared)")
    split: str = option("test", "the held-out split whose users are simulated")
    truth: str | None = option(None, "testbed truth.jsonl (or its folder) for agreement with the true personas; "
                                      "default: the built-in testbed's when data is the default")
    n: int = option(1, "simulated conversations per held-out conversation")
    max_user_turns: int = option(8, "user-turn cap of simulated conversations (real ones are cut to it)")
    max_conversations: int | None = option(None, "simulate only the first N held-out conversations (by id)")
    min_group: int = option(5, "a value enters a comparison with at least this many real and simulated conversations")
    seed: int = option(0, "simulation seed")
    assistant_max_new_tokens: int = option(256, "most tokens per assistant reply")
    user_max_new_tokens: int = option(64, "most tokens per user-turn sample")
    max_batch_size: int | None = option(None, "rows per batch for hf: models (None: the provider's default)")

    def validate(self) -> None:
        for name in ("personas", "assistant"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise UserError(f"{name} is required")
        if self.conditioned is None and self.unconditioned is None:
            raise UserError("give at least one simulator: conditioned and/or unconditioned")
        require_at_least_one(self, ("n", "max_user_turns", "min_group", "assistant_max_new_tokens",
                                    "user_max_new_tokens"))
        if self.max_conversations is not None and self.max_conversations < 1:
            raise UserError(f"max_conversations must be at least 1, got {self.max_conversations}")

    @property
    def simulators(self) -> dict[str, str]:
        return {name: spec for name, spec in (("conditioned", self.conditioned), ("unconditioned", self.unconditioned))
                if spec is not None}


# ---------------------------------------------------------------------------- personas
def read_persona_fields(path: Path) -> tuple[dict[str, dict[str, Any]], Counter]:
    """``personas.jsonl`` as records by user id (``persona`` text and the structured fields), and counts.

    A line that is no persona record is a one-line :class:`UserError` (``file:line``); a record with
    no persona text is skipped, and a field missing or outside its vocabulary is left out of that
    field's comparison (both counted)."""
    records: dict[str, dict[str, Any]] = {}
    counts: Counter = Counter()
    for row in persona_records(path):
        counts["records"] += 1
        persona = row["persona"]
        if not persona or not persona.strip():
            counts["without_persona_text"] += 1
            continue
        fields = {}
        for name in PREFERENCE_FIELDS:
            if row.get(name) in FIELD_VALUES[name]:
                fields[name] = row[name]
            else:
                counts[f"{name}_missing_or_unknown"] += 1
        records[str(row["user_id"])] = {"persona": persona, **fields}
    if not records:
        raise UserError(f"{path}: no persona in it (expected 'userloop personas' records with a persona text)")
    return records, counts


# ---------------------------------------------------------------------------- behaviour
@dataclass(slots=True)
class Behaviour:
    """What one conversation says about its user (see the module docstring)."""

    user_id: str
    turns: int
    ended: bool
    turn_words: list[int]
    relations: list[str] = field(default_factory=list)
    feedback: list[bool] = field(default_factory=list)


def cut(conversation: Conversation, max_user_turns: int) -> Conversation:
    """The conversation up to (and with the reply to) its ``max_user_turns``-th user turn, system messages left out."""
    messages, turns = [], 0
    for message in conversation.messages:
        if message.role == "user":
            if turns == max_user_turns:
                break
            turns += 1
        if message.role in ("user", "assistant"):
            messages.append(message)
    return Conversation(messages, id=conversation.id, user_id=conversation.user_id, intent=conversation.intent)


def record_conversation(record: SimulatedConversation, user_id: str) -> Conversation:
    """A simulation record (``userloop simulate``) as a plain conversation of ``user_id``."""
    messages = [Message(m.role, m.content) for m in record.messages if m.role in ("user", "assistant")]
    return Conversation(messages, id=record.id, user_id=user_id, intent=record.intent)


def behaviours(conversations: Sequence[tuple[Conversation, bool]], classifier) -> list[Behaviour]:
    """Each ``(conversation, ended by its user)`` as a :class:`Behaviour`, its follow-ups classified in one call."""
    out, followups = [], []
    for conversation, ended in conversations:
        turns = conversation.user_turns
        out.append(Behaviour(conversation.user_id or "", len(turns), ended, [len(t.split()) for t in turns]))
        followups.append([f for f in extract_followups(conversation) if f.text.strip()])
    labels = iter(classifier.classify([f for group in followups for f in group]))
    for behaviour, group in zip(out, followups, strict=True):
        for _ in group:
            label = next(labels)
            behaviour.relations.append(label.relation)
            behaviour.feedback.append(label.feedback_type != "none")
    return out


@dataclass(slots=True)
class Estimate:
    value: float
    se: float
    n: int


def _rate(hits: int, n: int) -> Estimate | None:
    if not n:
        return None
    return Estimate(hits / n, binomial_se(hits, n), n)


def _mean(values: Sequence[float]) -> Estimate | None:
    if not values:
        return None
    return Estimate(statistics.fmean(values), mean_se(values) if len(values) > 1 else 0.0, len(values))


def behaviour_statistics(group: Sequence[Behaviour]) -> dict[str, Estimate | None]:
    """The statistics of the module docstring over one group of conversations."""
    feedback = [f for b in group for f in b.feedback]
    relations = Counter(r for b in group for r in b.relations)
    follow_ups = sum(relations.values())
    return {"feedback_rate": _rate(sum(feedback), len(feedback)),
            **{f"followup_{r}": _rate(relations[r], follow_ups) for r in RELATIONS},
            "user_turns": _mean([b.turns for b in group]),
            "ended_by_user": _rate(sum(b.ended for b in group), len(group)),
            "turn_words": _mean([w for b in group for w in b.turn_words])}


# ---------------------------------------------------------------------------- comparison
def compare(real: dict[str, dict[str, Estimate | None]], simulated: dict[str, dict[str, Estimate | None]],
            sizes: dict[str, tuple[int, int]], min_group: int) -> dict[str, dict[str, Any]]:
    """Per statistic: how well ``simulated`` (per-value statistics) reproduces the differences between
    the values of ``real`` (module docstring); ``sizes[v]`` = (real, simulated) conversations of value v."""
    out = {}
    for stat in STATISTICS:
        values = [v for v in real if sizes[v][0] >= min_group and sizes[v][1] >= min_group
                  and real[v].get(stat) is not None and simulated.get(v, {}).get(stat) is not None]
        if len(values) < 2:
            out[stat] = {"values": values, "reproduction": None, "why": f"fewer than 2 values with {min_group}+ conversations"}
            continue
        r = {v: real[v][stat].value for v in values}
        s = {v: simulated[v][stat].value for v in values}
        high, low = max(values, key=r.get), min(values, key=r.get)
        spread = r[high] - r[low]
        spread_se = math.hypot(real[high][stat].se, real[low][stat].se)
        r_mean, s_mean = statistics.fmean(r.values()), statistics.fmean(s.values())
        error = statistics.fmean(abs((s[v] - s_mean) - (r[v] - r_mean)) for v in values)
        null_error = statistics.fmean(abs(r[v] - r_mean) for v in values)
        pairs = list(combinations(values, 2))
        agree = [_sign(s[a] - s[b]) == _sign(r[a] - r[b]) for a, b in pairs if r[a] != r[b]]
        out[stat] = {"values": values, "real_spread": spread, "spread_se": spread_se, "matters": spread > 2 * spread_se,
                     "simulated_spread": max(s.values()) - min(s.values()), "error": error, "null_error": null_error,
                     "reproduction": 1 - error / null_error if null_error > 0 else None,
                     "direction_agreement": sum(agree) / len(agree) if agree else None}
    return out


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _summary(comparison: dict[str, dict[str, Any]]) -> dict[str, Any]:
    mattering = [c["reproduction"] for c in comparison.values() if c.get("matters") and c["reproduction"] is not None]
    defined = [c["reproduction"] for c in comparison.values() if c["reproduction"] is not None]
    return {"statistics_that_matter": len(mattering),
            "mean_reproduction_where_it_matters": statistics.fmean(mattering) if mattering else None,
            "mean_reproduction_all": statistics.fmean(defined) if defined else None}


def _by_value(items: Sequence[Behaviour], value_of: Callable[[str], str | None]) -> dict[str, list[Behaviour]]:
    groups: dict[str, list[Behaviour]] = {}
    for behaviour in items:
        value = value_of(behaviour.user_id)
        if value is not None:
            groups.setdefault(value, []).append(behaviour)
    return groups


def _table(groups: dict[str, list[Behaviour]]) -> dict[str, dict[str, Estimate | None]]:
    return {value: behaviour_statistics(group) for value, group in groups.items()}


def field_report(real: Sequence[Behaviour], simulated: dict[str, Sequence[Behaviour]], personas: dict[str, dict],
                 min_group: int, true_personas: dict[str, dict] | None = None) -> dict[str, Any]:
    """Per persona field: per-value statistics of the real and each simulated population, and each
    simulator's :func:`compare` against the real one."""
    report = {}
    for name in PREFERENCE_FIELDS:
        def derived(user_id: str, name=name) -> str | None:
            return personas.get(user_id, {}).get(name)

        real_groups = _by_value(real, derived)
        entry: dict[str, Any] = {"real": _serialise(_table(real_groups)),
                                 "real_conversations": {v: len(g) for v, g in real_groups.items()}, "simulators": {}}
        if true_personas is not None:
            true_groups = _by_value(real, lambda user_id, name=name: true_personas.get(user_id, {}).get(name))
            entry["real_by_true_value"] = _serialise(_table(true_groups))
        for simulator, items in simulated.items():
            groups = _by_value(items, derived)
            sizes = {v: (len(real_groups[v]), len(groups.get(v, []))) for v in real_groups}
            comparison = compare(_table(real_groups), _table(groups), sizes, min_group)
            entry["simulators"][simulator] = {"statistics": _serialise(_table(groups)),
                                              "conversations": {v: len(g) for v, g in groups.items()},
                                              "comparison": comparison, "summary": _summary(comparison)}
        report[name] = entry
    return report


def _serialise(table: dict[str, dict[str, Estimate | None]]) -> dict[str, dict[str, dict | None]]:
    return {v: {s: asdict(e) if e is not None else None for s, e in stats.items()} for v, stats in table.items()}


def truth_agreement(personas: dict[str, dict], true_personas: dict[str, dict], users: set[str]) -> dict[str, Any]:
    """Per field, the share of ``users`` whose derived value equals their true one."""
    out = {}
    for name in PREFERENCE_FIELDS:
        pairs = [(personas[u][name], true_personas[u][name]) for u in users
                 if name in personas.get(u, {}) and name in true_personas.get(u, {})]
        out[name] = {"users": len(pairs), "accuracy": sum(a == b for a, b in pairs) / len(pairs) if pairs else None}
    return out


# ---------------------------------------------------------------------------- the measurement
def held_out_scenarios(conversations: Sequence[Conversation], personas: dict[str, dict], max_user_turns: int,
                       max_conversations: int | None = None) -> list:
    """One open scenario per held-out conversation whose user has a persona (sorted by id, the first
    ``max_conversations``): the conversation's intent, the persona in ``metadata``."""
    chosen = sorted((c for c in conversations if c.user_id in personas and c.user_turns), key=lambda c: c.id)
    return [Scenario(id=c.id, kind="open", intent=c.intent, shards=[], full_prompt=c.user_turns[0],
                     max_user_turns=max_user_turns,
                     metadata={"persona": personas[c.user_id]["persona"], "user_id": c.user_id})
            for c in chosen[:max_conversations]]


def write_scenarios(scenarios: Sequence, path: Path, with_persona: bool) -> Path:
    """The scenarios as a JSONL file (written atomically: a run resumed from it checks its content);
    without ``with_persona`` the persona is left out of ``metadata``."""
    rows = []
    for scenario in scenarios:
        row = scenario.to_dict()
        if not with_persona:
            row["metadata"] = {k: v for k, v in row["metadata"].items() if k != "persona"}
        rows.append(orjson.dumps(row) + b"\n")
    return write_atomic(path, b"".join(rows))


def evaluate_persona_sim(config: PersonaSimConfig, out: str | Path, progress: Progress = no_progress,
                         on_message: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Simulate the held-out users with each simulator and compare them with the real ones per persona
    field (module docstring); writes ``report.json``, ``report.md``, the scenario files and one
    ``userloop simulate`` run folder per simulator (``sim-<name>/``, resumable) into ``out``."""
    from userloop.rlhi.followup_classifier import load_offline
    from userloop.testbed.default import default_data

    config.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder: choose another --out")
    default = config.data is None
    data = str(default_data(prepared=True)) if default else config.data
    truth = config.truth or (str(default_data(prepared=False)) if default else None)
    personas, persona_counts = read_persona_fields(Path(config.personas))
    conversations, filled = read_split(data, config.split)
    users = {c.user_id for c in conversations if c.user_id}
    held_out = users & personas.keys()
    if not held_out:
        raise UserError(f"{config.personas}: none of its {len(personas):,} users has a conversation in the "
                        f"{config.split} split of {data} ({len(users):,} users there)")
    scenarios = held_out_scenarios(conversations, personas, config.max_user_turns, config.max_conversations)
    out.mkdir(parents=True, exist_ok=True)
    true_personas = None
    if truth is not None:
        true_users, _ = read_truth(truth)
        true_personas = {user_id: row["persona"] for user_id, row in true_users.items()}

    classifier = load_offline()
    simulated_users = {s.id: s.metadata["user_id"] for s in scenarios}
    by_id = {c.id: c for c in conversations}
    real = behaviours([(cut(by_id[s.id], config.max_user_turns), len(by_id[s.id].user_turns) <= config.max_user_turns)
                       for s in scenarios], classifier)
    simulated, runs = {}, {}
    for name, spec in config.simulators.items():
        scenario_file = write_scenarios(scenarios, out / f"scenarios-{name}.jsonl", with_persona=name == "conditioned")
        on_message(f"simulating {len(scenarios) * config.n:,} conversations with the {name} user LM ({spec})")
        run = simulate(SimulationConfig(assistant=config.assistant, scenarios=str(scenario_file), user=spec, n=config.n,
                                        max_user_turns=config.max_user_turns, seed=config.seed,
                                        assistant_max_new_tokens=config.assistant_max_new_tokens,
                                        user_max_new_tokens=config.user_max_new_tokens,
                                        max_batch_size=config.max_batch_size),
                       out / f"sim-{name}", progress=progress)
        records, _ = read_records(run.out / "conversations.jsonl")
        usable = [r for r in records if r.end_reason not in FAILED_END_REASONS]
        simulated[name] = behaviours([(record_conversation(r, simulated_users[r.scenario_id]),
                                       r.end_reason == "user_ended") for r in usable], classifier)
        runs[name] = {"spec": spec, "conditioned": name == "conditioned", "run": str(run.out),
                      "conversations": len(records), "errors": len(records) - len(usable),
                      "end_reasons": dict(Counter(r.end_reason for r in records))}

    report = {
        "config": asdict(config) | {"data": data, "truth": truth},
        "held_out": {"split": config.split, "conversations": len(conversations), "users": len(users),
                     "users_with_persona": len(held_out), "scenarios": len(scenarios),
                     "intents_filled_offline": filled, "personas_file": dict(persona_counts),
                     "personas_of_other_users": len(personas) - len(held_out)},
        "truth_agreement": truth_agreement(personas, true_personas, held_out) if true_personas is not None else None,
        "simulators": runs,
        "overall": {"real": _serialise({"all": behaviour_statistics(real)})["all"],
                    **{name: _serialise({"all": behaviour_statistics(items)})["all"] for name, items in simulated.items()}},
        "fields": field_report(real, simulated, personas, config.min_group, true_personas),
    }
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_atomic(out / "report.md", report_markdown(report))
    return report


def _cell(estimate: dict | None, stat: str) -> str:
    if estimate is None:
        return "-"
    value, se = estimate["value"], estimate["se"]
    return f"{100 * value:.1f}±{100 * se:.1f}%" if stat in RATES else f"{value:.2f}±{se:.2f}"


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report_markdown(report: dict[str, Any]) -> str:
    """``report.md``: per field, the per-value statistics and each simulator's reproduction."""
    held = report["held_out"]
    lines = ["# Persona fidelity of simulated users", "",
             f"{held['scenarios']:,} held-out conversations ({held['users_with_persona']:,} users with a persona, "
             f"split {held['split']}); simulators: "
             + ", ".join(f"{name} = `{run['spec']}`" for name, run in report["simulators"].items())
             + f"; assistant `{report['config']['assistant']}`.", ""]
    if report["truth_agreement"]:
        lines += ["Derived persona fields against the testbed's true personas: "
                  + ", ".join(f"{name} {100 * a['accuracy']:.0f}%" for name, a in report["truth_agreement"].items()
                              if a["accuracy"] is not None) + ".", ""]
    names = list(report["simulators"])
    overall = report["overall"]
    lines += ["## All held-out users", "", "| statistic | real | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    lines += [f"| {stat} | {_cell(overall['real'][stat], stat)} | "
              + " | ".join(_cell(overall[name][stat], stat) for name in names) + " |" for stat in STATISTICS]
    for name, entry in report["fields"].items():
        values = list(entry["real"])
        lines += ["", f"## {name}", "", "Conversations per value (real): "
                  + ", ".join(f"{v} {n}" for v, n in entry["real_conversations"].items()) + ".", "",
                  "| statistic | real per value | real spread | matters | "
                  + " | ".join(f"{s} per value | {s} R | {s} direction" for s in names) + " |",
                  "|---|---|---|---|" + "---|---|---|" * len(names)]
        for stat in STATISTICS:
            first = entry["simulators"][names[0]]["comparison"][stat] if names else {}
            row = [stat, " / ".join(f"{v} {_cell(entry['real'][v][stat], stat)}" for v in values),
                   _number(first.get("real_spread"), 3), {True: "yes", False: "no"}.get(first.get("matters"), "-")]
            for simulator in names:
                sim = entry["simulators"][simulator]
                comparison = sim["comparison"][stat]
                row += [" / ".join(f"{v} {_cell(sim['statistics'].get(v, {}).get(stat), stat)}" for v in values),
                        _number(comparison["reproduction"]), _number(comparison.get("direction_agreement"))]
            lines.append("| " + " | ".join(row) + " |")
        lines += [""] + [f"- {simulator}: mean R where the field matters "
                         f"{_number(entry['simulators'][simulator]['summary']['mean_reproduction_where_it_matters'])} "
                         f"({entry['simulators'][simulator]['summary']['statistics_that_matter']} statistics), "
                         f"over all statistics {_number(entry['simulators'][simulator]['summary']['mean_reproduction_all'])}"
                         for simulator in names]
    return "\n".join(lines) + "\n"
