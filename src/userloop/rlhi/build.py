"""``userloop rlhi build``: follow-up classification, personas and user-guided rewrites, end to end.

Reads conversations (any input the readers take, or one split of a prepared folder; the default testbed,
prepared, by default), and writes
into ``out``: ``followups.jsonl`` (every follow-up with its labels), ``personas.jsonl`` (users with at
least ``min_conversations`` conversations), ``pairs.parquet`` and ``pairs_dataset/`` (the preference
pairs, TRL conversational format; with ``mirrors``, their mirrors after them, :mod:`userloop.rlhi.mirrors`) and
``report.json`` (counts at every step, nothing dropped silently).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from userloop.conversation import Conversation, read_parquet
from userloop.data.readers import ReadReport, read_conversations
from userloop.data.sources import prepared_splits
from userloop.data.users import SPLIT_NAMES
from userloop.errors import UserError
from userloop.files import check_output_file, write_atomic
from userloop.models.registry import load_role, needs_testbed, role_spec
from userloop.progress import Progress, no_progress
from userloop.rlhi.followups import FollowUp, JudgeClassifier, Labels, extract_followups, followup_record
from userloop.rlhi.mirrors import mirror_pairs, with_mirrors
from userloop.rlhi.pairs import pair_record, write_pairs
from userloop.rlhi.pairwise_judges import load_judge
from userloop.rlhi.personas import ModelPersonas, group_histories
from userloop.rlhi.rewrites import ModelJudge, ModelRewriter, candidates, rewrite_and_filter
from userloop.rlhi.taxonomy import NEGATIVE_FEEDBACK
from userloop.testbed.population import truth_folder

# BuildConfig's fields that name a model role, and the role (models.registry.ROLES).
ROLE_FIELDS = {"classifier": "followup_classifier", "persona_model": "persona_model", "rewriter": "rewriter",
               "judge": "judge"}


@dataclass
class BuildConfig:
    """How ``rlhi build`` runs; every backend is a built-in provider or a chat model spec (docs/models.md,
    "Model roles")."""

    classifier: str = field(default="offline:classifier", metadata={"help": "follow-up classifier: offline:classifier, or a chat model spec (LLM judge)"})
    persona_model: str = field(default="offline:personas", metadata={"help": "persona backend: offline:personas, or a chat model spec"})
    rewriter: str = field(default="testbed:rewriter", metadata={"help": "rewriter: testbed:rewriter (the testbed's scripted assistant re-renders the answer, style only), testbed:editor (it edits only what the feedback asks for), testbed:corrector (the editor that also makes the corrections users state), or a chat model spec"})
    judge: str = field(default="testbed:judge", metadata={"help": "rewrite filter: testbed:judge (testbed persona-match scorer, needs the truth), or a chat model spec"})
    split: str | None = field(default=None, metadata={"help": "read only this split of a prepared folder (train: no held-out user in the pairs or the personas); default: every conversation of the input"})
    mirrors: bool = field(default=False, metadata={"help": "also pair each rewrite, reversed, with another user whose persona prefers the original, when the judge agrees (persona-contrastive mirrors, docs/rlhi.md)"})
    min_conversations: int = field(default=3, metadata={"help": "users need at least this many conversations for a persona"})
    batch_size: int = field(default=256, metadata={"help": "items per batch sent to a chat model"})

    def validate(self) -> None:
        for name, role in ROLE_FIELDS.items():
            role_spec(role, getattr(self, name))   # a UserError naming what the role takes
        if self.split is not None and self.split not in SPLIT_NAMES:
            raise UserError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {self.split!r}")
        if self.min_conversations < 1:
            raise UserError(f"min_conversations must be at least 1, got {self.min_conversations}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {self.batch_size}")


def output_folder(path: Path) -> None:
    """Create the output folder ``path`` (a UserError when it is a file or cannot be created)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder {path}: {err.strerror}") from None


def read_split_conversations(data: Path, split: str) -> list[Conversation]:
    """One split of a prepared folder (``userloop data prepare``)."""
    if not data.exists():
        raise UserError(f"{data}: no such folder")
    splits = prepared_splits(data)
    if split not in splits:
        raise UserError(f"{data}: not a prepared folder with a {split} split (run 'userloop data prepare' first)")
    return list(read_parquet(splits[split]))


def build(data: Path, out: Path, config: BuildConfig, progress: Progress = no_progress) -> dict[str, Any]:
    """Run the pipeline (module docstring); returns the report (also written to ``out/report.json``)."""
    config.validate()
    started = time.perf_counter()
    if not data.exists():
        raise UserError(f"{data}: no such file or folder")
    truth = truth_folder(data)
    testbed_only = [f"--{name} {value}" for name, value in (("rewriter", config.rewriter), ("judge", config.judge))
                    if needs_testbed(ROLE_FIELDS[name], value)]
    if testbed_only and truth is None:
        raise UserError(f"{data} is not the testbed (no truth.jsonl) and {' and '.join(testbed_only)} {'need' if len(testbed_only) > 1 else 'needs'} it: give "
                        "--rewriter SPEC and --judge SPEC (chat models); `userloop personas` runs offline on any data")
    output_folder(out)
    judge = load_role("judge", config.judge, ModelJudge, data=data)
    rewriter = load_role("rewriter", config.rewriter, ModelRewriter)
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
    report["rewrites"] = {"candidates": len(todo), "skipped_no_request": len(found) - len(answerable),
                          "skipped_duplicate": len(answerable) - len(todo),
                          "attempted": len(todo) - outcomes["no rewrite"],
                          "outcomes": dict(outcomes.most_common()), "passed_filter": outcomes["passed"],
                          "rewriter": dict(rewriter.counts), "judge": dict(judge.counts)}
    if config.mirrors:
        pair_judge = load_judge(config.judge, data)   # the same --judge, comparing two answers for one user
        with progress("mirroring", len(records)) as advance:
            mirrors, mirror_outcomes = mirror_pairs(records, personas, pair_judge, config.batch_size, advance)
        records = with_mirrors(records, mirrors)
        report["mirrors"] = {"outcomes": dict(mirror_outcomes.most_common()), "pairs": len(mirrors),
                             "judge": dict(pair_judge.counts)}
    write_pairs(records, out / "pairs.parquet", out / "pairs_dataset", mirrors=config.mirrors)
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
    from userloop.rlhi.followup_classifier import load_offline

    offline = load_offline()
    read_report = ReadReport()
    if config.split is None:
        conversations = list(read_conversations([str(data)], report=read_report))
    else:
        conversations = read_split_conversations(data, config.split)
    if not conversations:
        raise UserError(f"{data}: no conversations read ({sum(read_report.bad_lines.values()):,} bad lines)")
    turns: list[FollowUp] = [f for c in conversations for f in extract_followups(c)]
    followups = [f for f in turns if f.text.strip()]
    classifier = load_role("followup_classifier", config.classifier,
                           lambda model: JudgeClassifier(model, offline, config.batch_size), offline=offline)
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
    histories = group_histories(conversations, labelled)
    eligible = [h for h in histories.values() if len(h.conversations) >= config.min_conversations]
    counts: dict[str, Any] = {"users": len(histories), "conversations_without_user_id": sum(not c.user_id for c in conversations),
                              "users_with_enough_history": len(eligible), "min_conversations": config.min_conversations,
                              "backend": config.persona_model}
    with progress("deriving personas", len(eligible)) as advance:
        backend = load_role("persona_model", config.persona_model,
                            lambda model: ModelPersonas(model, offline.domains, config.batch_size),
                            domain_of=offline.domains)
        personas = backend.derive(eligible, advance)
        if isinstance(backend, ModelPersonas):
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
