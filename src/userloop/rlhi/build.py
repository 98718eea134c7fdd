"""``userloop rlhi build``: follow-up classification, personas and user-guided rewrites, end to end.

Reads conversations (any input the readers take; the default testbed, prepared, by default), and writes
into ``out``: ``followups.jsonl`` (every follow-up with its labels), ``personas.jsonl`` (users with at
least ``min_conversations`` conversations), ``pairs.parquet`` and ``pairs_dataset/`` (the preference
pairs, TRL conversational format) and ``report.json`` (counts at every step, nothing dropped silently).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from userloop.errors import UserError
from userloop.files import check_output_file, read_user_json, write_atomic
from userloop.rlhi.followups import FollowUp, Labels, extract_followups, followup_record
from userloop.rlhi.taxonomy import NEGATIVE_FEEDBACK

Advance = Callable[[int], None]
Progress = Callable[[str, int], Any]    # (description, total) -> context manager yielding an Advance


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Advance]:
    yield lambda n: None


@dataclass
class BuildConfig:
    """How ``rlhi build`` runs; every backend is ``offline``/``testbed``/``scorer`` or a chat model spec."""

    classifier: str = field(default="offline", metadata={"help": "follow-up classifier: offline, or a chat model spec (LLM judge)"})
    persona_model: str = field(default="offline", metadata={"help": "persona backend: offline, or a chat model spec"})
    rewriter: str = field(default="testbed", metadata={"help": "rewriter: testbed (the testbed's scripted assistant, style only), or a chat model spec"})
    judge: str = field(default="scorer", metadata={"help": "rewrite filter: scorer (testbed persona-match scorer, needs the truth), or a chat model spec"})
    min_conversations: int = field(default=3, metadata={"help": "users need at least this many conversations for a persona"})
    batch_size: int = field(default=256, metadata={"help": "items per batch sent to a chat model"})

    def validate(self) -> None:
        from userloop.models.registry import parse_spec

        for name, offline in (("classifier", "offline"), ("persona_model", "offline"), ("rewriter", "testbed"), ("judge", "scorer")):
            value = getattr(self, name)
            if value != offline:
                parse_spec(value)   # a UserError naming the accepted prefixes
        if self.min_conversations < 1:
            raise UserError(f"min_conversations must be at least 1, got {self.min_conversations}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {self.batch_size}")


def truth_folder(data: Path) -> Path | None:
    """Where the testbed truth of ``data`` is: the folder itself, or the input a prepared folder was made from."""
    if (data / "truth.jsonl").is_file():
        return data
    report = data / "report.json"
    if report.is_file():
        for source in read_user_json(report, "prepared data report").get("inputs", []):
            folder = Path(source) if Path(source).is_dir() else Path(source).parent
            if (folder / "truth.jsonl").is_file():
                return folder
    return None


def output_folder(path: Path) -> None:
    """Create the output folder ``path`` (a UserError when it is a file or cannot be created)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder {path}: {err.strerror}") from None


def _model(spec: str):
    from userloop.models import load_model

    return load_model(spec)


def build(data: Path, out: Path, config: BuildConfig, progress: Progress = no_progress) -> dict[str, Any]:
    """Run the pipeline (module docstring); returns the report (also written to ``out/report.json``)."""
    from userloop.rlhi.pairs import pair_record, write_pairs
    from userloop.rlhi.rewrites import (
        ModelJudge,
        ModelRewriter,
        ScorerJudge,
        TestbedRewriter,
        candidates,
        rewrite_and_filter,
    )
    from userloop.testbed import read_truth

    config.validate()
    started = time.perf_counter()
    if not data.exists():
        raise UserError(f"{data}: no such file or folder")
    truth = truth_folder(data)
    testbed_only = [f"--{name} {value}" for name, value in (("rewriter", config.rewriter), ("judge", config.judge))
                    if value in ("testbed", "scorer")]
    if testbed_only and truth is None:
        raise UserError(f"{data} is not the testbed (no truth.jsonl) and {' and '.join(testbed_only)} {'need' if len(testbed_only) > 1 else 'needs'} it: give "
                        "--rewriter SPEC and --judge SPEC (chat models); `userloop personas` runs offline on any data")
    output_folder(out)
    if config.judge == "scorer":
        users, _ = read_truth(truth)
        judge = ScorerJudge({user_id: record["persona"] for user_id, record in users.items()})
    else:
        judge = ModelJudge(_model(config.judge))
    rewriter = TestbedRewriter() if config.rewriter == "testbed" else ModelRewriter(_model(config.rewriter))
    offline, conversations, labelled, report = _classified(data, config, progress)
    with open(out / "followups.jsonl", "wb") as f:
        f.writelines(orjson.dumps(followup_record(followup, label, report["followups"]["backend"])) + b"\n"
                     for followup, label in labelled)
    personas, report["personas"] = _personas(conversations, labelled, offline, config, progress, out / "personas.jsonl")
    persona_text = {p.user_id: p.persona for p in personas}

    # 3. rewrites and pairs
    by_conversation: dict[str, list[tuple[FollowUp, Labels]]] = {}
    for followup, label in labelled:
        by_conversation.setdefault(followup.conversation_id, []).append((followup, label))
    found = [c for conversation in conversations for c in candidates(conversation, by_conversation.get(conversation.id, []))]
    answerable = [c for c in found if c.prompt and c.prompt[-1]["role"] == "user"]
    first: dict[tuple, Any] = {}
    for candidate in answerable:
        first.setdefault(candidate_key(candidate), candidate)
    todo = list(first.values())
    outcomes: Counter = Counter()
    records = []
    with progress("rewriting", len(todo)) as advance:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start:start + config.batch_size]
            for result in rewrite_and_filter(batch, [persona_text.get(c.followup.user_id or "") for c in batch], rewriter, judge):
                outcomes[result.why] += 1
                if result.accepted:
                    records.append(pair_record(result, persona_text.get(result.candidate.followup.user_id or "")))
            advance(len(batch))
    write_pairs(records, out / "pairs.parquet", out / "pairs_dataset")
    report["rewrites"] = {"candidates": len(todo), "skipped_no_request": len(found) - len(answerable),
                          "skipped_duplicate": len(answerable) - len(todo),
                          "attempted": len(todo) - outcomes["no rewrite"],
                          "outcomes": dict(outcomes.most_common()), "passed_filter": outcomes["passed"],
                          "rewriter": dict(rewriter.counts), "judge": dict(judge.counts)}
    report["pairs"] = len(records)
    report["pairs_with_persona"] = sum(r["persona"] is not None for r in records)
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def candidate_key(candidate) -> tuple:
    """What makes two rewrite candidates the same: prompt, original and follow-up (threads of one tree, as in
    OASST, or regenerated branches share them); each is rewritten and paired once."""
    return (tuple((m["role"], m["content"]) for m in candidate.prompt), candidate.original, candidate.followup.text)


def _classified(data: Path, config: BuildConfig, progress: Progress):
    """Read ``data`` and classify every follow-up: (offline classifier, conversations, labelled, report)."""
    from userloop.data.readers import ReadReport, read_conversations
    from userloop.rlhi.followup_classifier import load_offline
    from userloop.rlhi.followups import JudgeClassifier

    offline = load_offline()
    read_report = ReadReport()
    conversations = list(read_conversations([str(data)], report=read_report))
    if not conversations:
        raise UserError(f"{data}: no conversations read ({sum(read_report.bad_lines.values()):,} bad lines)")
    turns: list[FollowUp] = [f for c in conversations for f in extract_followups(c)]
    followups = [f for f in turns if f.text.strip()]
    classifier = offline if config.classifier == "offline" else JudgeClassifier(_model(config.classifier), offline, config.batch_size)
    with progress("classifying follow-ups", len(followups)) as advance:
        labels = classifier.classify(followups, advance)
    labelled = list(zip(followups, labels, strict=True))
    report: dict[str, Any] = {"data": str(data), "config": asdict(config), "classifier_trained_on": offline.trained_on,
                              "conversations": len(conversations), "bad_lines": sum(read_report.bad_lines.values()),
                              "followups": {"backend": config.classifier, "skipped_empty": len(turns) - len(followups),
                                            **followup_counts(conversations, labelled)}}
    if classifier is not offline:
        report["followups"]["judge"] = dict(classifier.counts)
    return offline, conversations, labelled, report


def _personas(conversations, labelled, offline, config: BuildConfig, progress: Progress, path: Path):
    """Derive personas of users with enough history and write them to ``path``: (personas, counts)."""
    from userloop.rlhi.personas import ModelPersonas, derive_offline, group_histories

    histories = group_histories(conversations, labelled)
    eligible = [h for h in histories.values() if len(h.conversations) >= config.min_conversations]
    counts: dict[str, Any] = {"users": len(histories), "conversations_without_user_id": sum(not c.user_id for c in conversations),
                              "users_with_enough_history": len(eligible), "min_conversations": config.min_conversations,
                              "backend": config.persona_model}
    with progress("deriving personas", len(eligible)) as advance:
        if config.persona_model == "offline":
            personas = []
            for history in eligible:
                personas.append(derive_offline(history, offline.domains))
                advance(1)
        else:
            backend = ModelPersonas(_model(config.persona_model), offline.domains, config.batch_size)
            personas = backend.derive(eligible, advance)
            counts["model"] = dict(backend.counts)
    with open(path, "wb") as f:
        f.writelines(orjson.dumps(persona.to_dict()) + b"\n" for persona in personas)
    counts["written"] = len(personas)
    return personas, counts


def derive_personas(data: Path, out_file: Path, config: BuildConfig, progress: Progress = no_progress) -> dict[str, Any]:
    """``userloop personas``: classify follow-ups, derive personas, write ``out_file`` (JSONL); returns counts."""
    config.validate()
    check_output_file(out_file, "personas.jsonl")
    offline, conversations, labelled, _ = _classified(data, config, progress)
    return _personas(conversations, labelled, offline, config, progress, out_file)[1]


def followup_counts(conversations, labelled: list[tuple[FollowUp, Labels]]) -> dict[str, Any]:
    """Follow-ups by class and the population statistics: share of conversations and users with
    feedback follow-ups (negative feedback: RLHI's "unsatisfying answer followed by feedback"; any feedback)."""
    negative = [f for f, label in labelled if label.feedback_type in NEGATIVE_FEEDBACK]
    any_feedback = [f for f, label in labelled if label.feedback_type != "none"]
    users = {c.user_id for c in conversations if c.user_id}

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "followups": len(labelled),
        "by_relation": dict(Counter(label.relation for _, label in labelled).most_common()),
        "by_feedback_type": dict(Counter(label.feedback_type for _, label in labelled).most_common()),
        "with_negative_feedback": len(negative),
        "with_any_feedback": len(any_feedback),
        "share_of_conversations_with_negative_feedback": share(len({f.conversation_id for f in negative}), len(conversations)),
        "share_of_conversations_with_any_feedback": share(len({f.conversation_id for f in any_feedback}), len(conversations)),
        "share_of_users_with_negative_feedback": share(len({f.user_id for f in negative if f.user_id}), len(users)),
        "share_of_users_with_any_feedback": share(len({f.user_id for f in any_feedback if f.user_id}), len(users)),
    }
