"""``userloop eval-sim``: how human-like user simulators are, in the shape of "Flipping the Dialogue"'s Table 2.

:func:`eval_sim` runs, for each simulator (a model spec driven through
:class:`~userloop.userlm.simulator.UserSimulator`) and for the real users of the data (the ``Human``
row, wherever a metric allows one):

1. first-turn diversity and 2. intent decomposition on first turns written for N intents sampled from
   the evaluation split (Human: the real first turns of those conversations);
3. dialogue termination on a replay of the split's conversations (:mod:`userloop.metrics.fidelity`);
4. naturalness of the same first turns under a detector (:mod:`userloop.metrics.naturalness`);
5. role and 6. intent adherence on probes (:mod:`userloop.metrics.adherence`);
7. perplexity of real user turns with and without the intent (``hf:`` user LMs only);
8. behavioural fidelity on the replay (Human: split-half of the real conversations).

It writes ``metrics.json`` (``{name: {metric: value}}``, None where a metric does not apply),
``details.json`` (counts, precision/recall, the detector's held-out accuracy, examples), ``table.md``
(with the paper's reference values) and one bar chart per metric in ``charts/``.

Guardrails: off by default (the raw simulator, what Table 2 measures as we read the paper: the
guardrails are the model card's advice for deployment). With ``on`` the model card's four guardrails
apply, except that the replay (termination, fidelity) never bans ending: ending is what it measures.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from userloop.config import option
from userloop.errors import UserError, missing_dependency
from userloop.files import write_atomic
from userloop.metrics import adherence
from userloop.metrics.fidelity import (
    alternating_messages,
    classify_feedback,
    fidelity_distances,
    real_behaviour,
    replay,
    simulated_behaviour,
    split_half,
)
from userloop.metrics.naturalness import cached_detector, import_detector, naturalness
from userloop.metrics.perplexity import user_turn_perplexity
from userloop.metrics.simulator_metrics import (
    first_turn_diversity,
    intent_decomposition,
    intent_overlap,
    termination_scores,
)
from userloop.models import load_model
from userloop.models.registry import PROVIDERS, parse_spec
from userloop.progress import Progress, no_progress
from userloop.userlm.flip import read_split
from userloop.userlm.simulator import DEFAULT_PARAMS, UserSimulator, guardrails_for

HUMAN = "Human"
# metric -> (column label, better: "higher" or "lower", table)
METRICS: dict[str, tuple[str, str, str]] = {
    "first_turn_diversity": ("diversity", "higher", "paper"),
    "intent_decomposition": ("decomposition", "lower", "paper"),
    "termination_f1": ("termination F1", "higher", "paper"),
    "naturalness": ("naturalness", "higher", "paper"),
    "role_adherence": ("role adherence", "higher", "paper"),
    "intent_adherence": ("intent adherence", "higher", "paper"),
    "perplexity_with_intent": ("PPL (intent)", "lower", "paper"),
    "perplexity_without_intent": ("PPL (no intent)", "lower", "paper"),
    "fidelity_turn_length_wasserstein": ("turn length W1", "lower", "fidelity"),
    "fidelity_turn_length_ks": ("turn length KS", "lower", "fidelity"),
    "fidelity_user_turns_wasserstein": ("user turns W1", "lower", "fidelity"),
    "fidelity_user_turns_ks": ("user turns KS", "lower", "fidelity"),
    "fidelity_end_turn_wasserstein": ("end turn W1", "lower", "fidelity"),
    "fidelity_end_turn_ks": ("end turn KS", "lower", "fidelity"),
    "fidelity_feedback_share_diff": ("feedback share diff", "lower", "fidelity"),
    "fidelity_vocabulary_overlap": ("vocabulary overlap", "higher", "fidelity"),
}
# "Flipping the Dialogue", Table 2 (WildChat): the values the issue quotes.
PAPER_REFERENCE: dict[str, dict[str, float]] = {
    "paper: Human": {"first_turn_diversity": 94.01, "intent_decomposition": 1.68},
    "paper: UserLM-8b": {"first_turn_diversity": 94.55, "intent_decomposition": 2.69, "termination_f1": 63.54},
    "paper: GPT-4o": {"first_turn_diversity": 74.42, "intent_decomposition": 7.68, "termination_f1": 1.38},
}


@dataclass
class EvalSimConfig:
    """What :func:`eval_sim` samples and how (``userloop eval-sim``'s options)."""

    split: str = option("test", "held-out split to evaluate on: validation or test")
    n_first_turns: int = option(2000, "first turns for diversity, decomposition and naturalness (paper: 2,000; capped by the split)")
    max_conversations: int = option(200, "real conversations replayed for termination and fidelity (and scored for perplexity)")
    n_probes: int = option(200, "role and intent probes each (capped by the probe files)")
    seed: int = option(0, "seed of the samples and of the simulators' sampling")
    guardrails: str = option("off", "off: the raw simulator (default); on: the model card's guardrails (never the end ban in the replay)")
    judge: str | None = option(None, "model spec of an LLM judge for the adherence probes (default: the rule-based judges)")
    role_probes: str | None = option(None, "JSONL multiple-choice probes, CommonsenseQA layout (default: built from the testbed's facts)")
    intent_probes: str | None = option(None, "JSONL open questions, NQ-open layout (default: built from the testbed's facts)")
    assistant: str | None = option(None, "model spec of the assistant in the probes (default: templated assistant turns)")
    detector: str = option("default", "naturalness detector: 'default' (trained on the data's user vs assistant turns) or MODULE:ATTRIBUTE")
    max_new_tokens: int = option(96, "most tokens per simulated turn (sampling: temperature 1.0, top-p 0.8, as the model card)")

    def validate(self) -> None:
        guardrails_for(self.guardrails)
        if self.n_first_turns < 2 or self.max_conversations < 1 or self.n_probes < 1 or self.max_new_tokens < 1:
            raise UserError("--n-first-turns must be at least 2, --max-conversations, --n-probes and --max-new-tokens "
                            "at least 1")
        if self.split == "train":
            raise UserError("evaluate on the validation or test split: the naturalness detector trains on train")

def parse_sims(values: list[str]) -> dict[str, str]:
    """``NAME=SPEC`` or ``SPEC`` (named by itself) -> ``{name: spec}``; names must be unique and not "Human"."""
    sims: dict[str, str] = {}
    for value in values:
        name, sep, spec = value.partition("=")
        prefix, colon, _ = value.partition(":")
        if not sep or colon and prefix in PROVIDERS:  # "hf:a=b" is a spec whose path holds "="; "prompted=..." a name
            name, spec = value, value
        name, spec = name.strip(), spec.strip()
        if not name or not spec:
            raise UserError(f"--sim must be NAME=SPEC or SPEC, got {value!r}")
        parse_spec(spec)  # a mistyped spec fails now, not after the Human row
        if name == HUMAN or name.startswith("paper: "):
            raise UserError(f"the simulator name {name!r} is reserved (the real users' row and the paper's rows)")
        if name in sims:
            raise UserError(f"two simulators are named {name!r}: name them with NAME=SPEC")
        sims[name] = spec
    return sims


def eval_sim(sims: Mapping[str, str], data: str | Path, out: str | Path, config: EvalSimConfig | None = None, *,
             cache: str | Path | None = None, progress: Progress = no_progress) -> dict[str, dict[str, float | None]]:
    """Evaluate the simulators ``sims`` (``{name: spec}``) on prepared folder ``data``; write the report to ``out``.

    ``cache`` is where the trained detector is kept (default ``$USERLOOP_CACHE``). Returns
    ``metrics.json``'s content; ``progress`` shows each step (:mod:`userloop.progress`).
    """
    config = config or EvalSimConfig()
    config.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder")
    conversations, filled = read_split(data, config.split)
    rng = random.Random(config.seed)
    openers = [c for c in conversations if _first_user_turn(c) is not None]
    distinct = list({_first_user_turn(c): c for c in openers}.values())  # one per opening (OASST trees share theirs)
    first = rng.sample(distinct, min(config.n_first_turns, len(distinct)))
    if len(first) < 2:
        raise UserError(f"{data}: the {config.split} split has fewer than two conversations opened by a user turn")
    replayed = rng.sample(conversations, min(config.max_conversations, len(conversations)))
    role = (adherence.read_choice_probes(config.role_probes) if config.role_probes
            else adherence.offline_choice_probes(config.seed))
    intent = adherence.read_open_probes(config.intent_probes) if config.intent_probes else adherence.offline_open_probes()
    n_probes = config.n_probes
    role, intent = rng.sample(role, min(n_probes, len(role))), rng.sample(intent, min(n_probes, len(intent)))

    if config.detector == "default":
        train, _ = read_split(data, "train")
        with progress("training the naturalness detector", 1) as advance:
            scorer = cached_detector(data, train, conversations, config.split, config.seed, Path(cache) if cache else None)
            advance(1)
    else:
        scorer = import_detector(config.detector)

    real_first = [_first_user_turn(c) for c in first]
    setup = {"data": str(data), "split": config.split, "conversations_in_split": len(conversations),
             "intents_filled_offline": filled, "intent_source": "the data's intents; missing ones from the offline rules "
             "(userloop.userlm.intents.offline_intent)", "first_turn_conversations": len(first),
             "first_turn_conversations_without_user_opening": len(conversations) - len(openers),
             "first_turn_conversations_repeating_an_opening": len(openers) - len(distinct),
             "replay_conversations": len(replayed), "role_probes": len(role),
             "role_probes_source": str(config.role_probes or "testbed facts"), "intent_probes": len(intent),
             "intent_probes_source": str(config.intent_probes or "testbed facts"), "guardrails": config.guardrails,
             "seed": config.seed, "max_new_tokens": config.max_new_tokens, "detector": config.detector,
             "detector_heldout_accuracy": getattr(scorer, "heldout_accuracy", None),
             "detector_heldout_examples": getattr(scorer, "heldout_examples", None),
             "detector_trained_on": getattr(scorer, "trained_on", None)}
    metrics: dict[str, dict[str, float | None]] = {}
    details: dict[str, Any] = {"setup": setup}
    context = _Context(first, real_first, replayed, role, intent, scorer, config.seed, config.guardrails, config.judge,
                       config.assistant, data, config.split, config.max_conversations, config.max_new_tokens, progress)
    metrics[HUMAN], details[HUMAN] = _human_row(context)
    for name, spec in sims.items():
        metrics[name], details[name] = _simulator_row(name, spec, context)
    write_report(metrics, details, out)
    return metrics


class _Context:
    def __init__(self, first, real_first, replayed, role, intent, detector, seed, guardrails, judge, assistant, data,
                 split, max_conversations, max_new_tokens, progress) -> None:
        self.first, self.real_first, self.replayed = first, real_first, replayed
        self.role, self.intent, self.detector = role, intent, detector
        self.seed, self.guardrails, self.judge, self.assistant = seed, guardrails, judge, assistant
        self.data, self.split, self.max_conversations, self.progress = data, split, max_conversations, progress
        self.max_new_tokens = max_new_tokens


def _first_user_turn(conversation) -> str | None:
    """The opening user turn (None: the conversation opens with the assistant, or with an empty user turn)."""
    messages = [m for m in conversation.messages if m.role != "system"]
    return messages[0].content if messages and messages[0].role == "user" and messages[0].content.strip() else None


def _first_turn_metrics(turns: list[str], context: _Context) -> tuple[dict, dict]:
    intents = [c.intent for c in context.first]
    without_content = sum(intent_overlap(t, i) is None for t, i in zip(turns, intents))
    decomposition = intent_decomposition(turns, intents) if without_content < len(turns) else None
    metrics = {"first_turn_diversity": first_turn_diversity(turns), "intent_decomposition": decomposition,
               "naturalness": naturalness(context.detector, turns)}
    return metrics, {"first_turns": len(turns), "first_turns_without_content_words": without_content}


def _human_row(context: _Context) -> tuple[dict, dict]:
    metrics, details = _first_turn_metrics(context.real_first, context)
    pairs = [(c, alternating_messages(c)) for c in context.replayed]
    real = [real_behaviour(c, m) for c, m in pairs if m is not None]
    classify_feedback(real)
    half_a, half_b = split_half(real, context.seed)
    metrics.update(fidelity_distances(half_a, half_b) if half_a and half_b else {})
    details.update({"fidelity": f"split-half: {len(half_a)} vs {len(half_b)} real conversations",
                    "replay_conversations_skipped": len(pairs) - len(real)})
    return {name: metrics.get(name) for name in METRICS}, details


def _guardrail_configs(setting: str):
    """The probes' and the replay's guardrails: the replay never bans ending (ending is what it measures)."""
    chosen = guardrails_for(setting)
    return chosen, replace(chosen, avoid_termination=False)


def _simulator_row(name: str, spec: str, context: _Context) -> tuple[dict, dict]:
    metrics, details = asyncio.run(_simulate(name, spec, context))
    if spec.startswith("hf:"):
        with context.progress(f"{name}: perplexity", 0) as advance:
            try:
                result = user_turn_perplexity(spec[3:], context.data, context.split, context.max_conversations,
                                              on_progress=advance)
            except UserError as err:
                details["perplexity"] = f"not computed: {err}"
            else:
                metrics["perplexity_with_intent"] = result["with_intent"]["perplexity"]
                metrics["perplexity_without_intent"] = result["without_intent"]["perplexity"]
                details["perplexity"] = result
    else:
        details["perplexity"] = "n/a: perplexity needs an hf: user LM (token probabilities under the UserLM template)"
    return {metric: metrics.get(metric) for metric in METRICS}, details


async def _simulate(name: str, spec: str, context: _Context) -> tuple[dict, dict]:
    model = load_model(spec)
    params = replace(DEFAULT_PARAMS, seed=context.seed, max_new_tokens=context.max_new_tokens)
    probing, replaying = _guardrail_configs(context.guardrails)
    simulator, replayer = UserSimulator(model, probing, params), UserSimulator(model, replaying, params)
    assistant = load_model(context.assistant) if context.assistant else None
    judge = adherence.ModelJudge(context.judge) if context.judge else None
    try:
        with context.progress(f"{name}: first turns", len(context.first)) as advance:
            turns = []
            for start in range(0, len(context.first), adherence.BATCH):
                batch = [c.intent for c in context.first[start:start + adherence.BATCH]]
                turns += await simulator.afirst_turns(batch)
                advance(len(batch))
        metrics, details = _first_turn_metrics([t.text for t in turns], context)
        details["first_turns_ended"] = sum(t.ended for t in turns)
        details["first_turn_examples"] = [t.text for t in turns[:5]]

        total = sum(1 + len(m) // 2 for m in map(alternating_messages, context.replayed) if m is not None)
        with context.progress(f"{name}: replay", total) as advance:
            replays, replay_counts = await replay(replayer, context.replayed, on_progress=advance)
        predicted = [p for r in replays for p in r.predicted_end()]
        gold = [g for r in replays for g in r.gold_end()]
        termination = termination_scores(predicted, gold)
        metrics["termination_f1"] = termination["f1"] if gold else None
        details["termination"] = {**termination, "decision_points": len(gold), "conversations": len(replays),
                                  "conversations_skipped": replay_counts,
                                  "conversations_without_observed_end": sum(not r.real_ended or r.truncated
                                                                            for r in replays)}
        complete = [r for r in replays if not r.truncated]
        simulated = [simulated_behaviour(r) for r in complete]
        real = [real_behaviour(r.conversation, r.messages) for r in complete]
        classify_feedback(simulated + real)
        metrics.update(fidelity_distances(simulated, real) if complete else {})
        details["fidelity"] = {"conversations": len(complete), "left_out_truncated": len(replays) - len(complete),
                               "simulated_never_ended": sum(r.simulated_end() is None for r in complete),
                               "simulated_followups": sum(len(b.followups) for b in simulated),
                               "real_followups": sum(len(b.followups) for b in real)}

        with context.progress(f"{name}: role probes", len(context.role)) as advance:
            role = await adherence.role_adherence(simulator, context.role, assistant, judge, context.seed, advance)
        with context.progress(f"{name}: intent probes", len(context.intent)) as advance:
            intent = await adherence.intent_adherence(simulator, context.intent, assistant, judge, context.seed, advance)
        metrics["role_adherence"], metrics["intent_adherence"] = role["score"], intent["score"]
        details["role_adherence"], details["intent_adherence"] = role, intent
    finally:
        await model.aclose()
        if assistant is not None:
            await assistant.aclose()
        if judge is not None:
            await judge.model.aclose()
    details["spec"] = spec
    return metrics, details


# --------------------------------------------------------------------------- the report
def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown_table(metrics: Mapping[str, Mapping[str, float | None]], table: str, reference: bool) -> str:
    names = [m for m, (_, _, t) in METRICS.items() if t == table]
    header = "| simulator | " + " | ".join(f"{METRICS[m][0]} {'↑' if METRICS[m][1] == 'higher' else '↓'}" for m in names) + " |"
    lines = [header, "|" + "---|" * (len(names) + 1)]
    rows = dict(metrics)
    if reference:
        rows.update({name: {m: values.get(m) for m in names} for name, values in PAPER_REFERENCE.items()})
    for name, values in rows.items():
        cells = ["—" if name.startswith("paper: ") and values.get(m) is None else _cell(values.get(m)) for m in names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(metrics: Mapping[str, Mapping[str, float | None]], details: Mapping[str, Any], out: Path) -> None:
    """details.json, table.md, charts/<metric>.png and, last (it marks the report complete), metrics.json in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "details.json").write_bytes(orjson.dumps(details, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    setup = details["setup"]
    text = ["# eval-sim", "",
            f"Data: `{setup['data']}`, split `{setup['split']}`; guardrails {setup['guardrails']}; seed {setup['seed']}.",
            (f"First turns: {setup['first_turn_conversations']}; replayed conversations: {setup['replay_conversations']}; "
            f"probes: {setup['role_probes']} role ({setup['role_probes_source']}), {setup['intent_probes']} intent "
            f"({setup['intent_probes_source']})."),
            f"Naturalness detector: {setup['detector']}"
            + (f", held-out accuracy {setup['detector_heldout_accuracy']:.2f}% on {setup['detector_heldout_examples']} "
               "user/assistant turns (a proxy: user vs assistant turns of this data)"
               if setup["detector_heldout_accuracy"] is not None else "") + ".",
            "", "## Table 2 metrics (rows 'paper: ...' are the paper's WildChat values)", "",
            markdown_table(metrics, "paper", reference=True), "",
            "## Behavioural fidelity (Human: split-half of the real conversations)", "",
            markdown_table(metrics, "fidelity", reference=False), ""]
    (out / "table.md").write_text("\n".join(text))
    write_charts(metrics, out / "charts")
    write_atomic(out / "metrics.json", orjson.dumps(metrics, option=orjson.OPT_INDENT_2))


def write_charts(metrics: Mapping[str, Mapping[str, float | None]], folder: Path) -> list[Path]:
    """One bar chart per metric (rows with a value), as PNG."""
    try:
        import matplotlib
    except ImportError:
        raise missing_dependency("matplotlib", "eval") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for metric, (label, better, _) in METRICS.items():
        rows = [(name, values[metric]) for name, values in metrics.items() if values.get(metric) is not None]
        if not rows:
            continue
        figure, axis = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 1.5), 3.2))
        bars = axis.bar([name for name, _ in rows], [value for _, value in rows],
                        color=["#888888" if name == HUMAN else "#3b75af" for name, _ in rows])
        axis.bar_label(bars, fmt="%.2f")
        axis.set_ylim(bottom=0, top=max(1e-9, *(value for _, value in rows)) * 1.15)
        axis.set_title(f"{label} ({better} is better)")
        axis.tick_params(axis="x", labelrotation=20)
        figure.tight_layout()
        path = folder / f"{metric}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
