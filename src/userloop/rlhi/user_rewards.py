"""User-based rewards (RLHI section 2.2): preference pairs for requests that got no feedback.

For a user request that no feedback followed, the policy samples ``n`` candidate answers with the
user's persona in the system message (:func:`~userloop.rlhi.conditioning.with_persona`; RLHI: N = 4,
temperature 0.6, top_p 0.9), a scorer rates each for that user (a persona-conditioned reward model,
an LLM judge, or the testbed's persona-match scorer), and the best and the worst candidate become a
pair (chosen, rejected). A request whose candidates all score the same (within ``1e-9``) gives no
pair and is counted.

"No feedback" uses part 1's follow-up labels: a user request (a user turn that asks for something:
the first turn, or a follow-up whose relation is not ``none``) counts when its next user turn has
``feedback_type`` ``none``, or when the conversation ends without another user turn. The labels come
from ``followups.jsonl`` (``rlhi build``) when given, else from the offline classifier; personas from
``personas.jsonl`` when given, else derived offline from the split's own conversations (users with at
least ``min_conversations`` conversations; others get no persona and are counted). A conversation without a
user id (anonymous logs) still gives requests, with user id ``""`` and no persona
(``conversations_without_user_id``); only the testbed scorer, which looks the user up, cannot score them.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from userloop.config import require_at_least_one
from userloop.conversation import Conversation
from userloop.data.personas import read_personas
from userloop.errors import UserError
from userloop.files import read_user_lines, write_atomic
from userloop.models import GenerationParams, load_model
from userloop.models.registry import parse_spec, role_spec
from userloop.progress import Progress, no_progress
from userloop.rlhi.build import output_folder, read_split_conversations
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.followups import FollowUp, Labels, extract_followups
from userloop.rlhi.pairs import write_pairs
from userloop.rlhi.personas import DerivedPersona, derive_offline, group_histories
from userloop.rlhi.reward_scorers import Scorer, ScoreRequest, load_scorer

TIE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class UserRequest:
    """A user's request in context: the messages up to and including it (no persona), and who asked."""

    conversation_id: str
    user_id: str            # "" when the conversation has no user id
    persona: str | None
    prompt: list[dict]
    index: int              # the request's position in the conversation's messages
    feedback: bool          # whether the user's next turn gave feedback on the answer


# ----------------------------------------------------------------------------- reading requests
def read_labels(path: Path) -> dict[tuple[str, int], Labels]:
    """``followups.jsonl`` (``rlhi build``) as labels by (conversation id, turn index)."""
    out = {}
    for number, line in read_user_lines(path, "follow-ups file"):
        try:
            row = orjson.loads(line)
            out[(row["conversation_id"], row["index"])] = Labels(row["relation"], row["feedback_type"], row["feedback_text"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: not a follow-up record of 'rlhi build'") from None
    return out


def label_followups(conversations: Sequence[Conversation], followups_file: Path | None,
                    counts: Counter) -> list[tuple[FollowUp, Labels]]:
    """Every follow-up of ``conversations`` with its labels: from ``followups_file`` where it has them, the
    offline classifier for the rest (counted as ``labels_from_classifier``)."""
    from userloop.rlhi.followup_classifier import load_offline

    followups = [f for c in conversations for f in extract_followups(c)]
    known = read_labels(followups_file) if followups_file is not None else {}
    labels: list[Labels | None] = [known.get((f.conversation_id, f.index)) for f in followups]
    missing = [i for i, label in enumerate(labels) if label is None]
    if missing:
        for i, label in zip(missing, load_offline().classify([followups[i] for i in missing]), strict=True):
            labels[i] = label
    counts["labels_from_file"] += len(followups) - len(missing)
    counts["labels_from_classifier"] += len(missing)
    return list(zip(followups, labels, strict=True))


def derived_personas(conversations: Sequence[Conversation], labelled: Sequence[tuple[FollowUp, Labels]],
                     min_conversations: int) -> list[DerivedPersona]:
    """Offline personas (part 1's derivation) of the users with at least ``min_conversations`` conversations."""
    from userloop.rlhi.followup_classifier import load_offline

    domains = load_offline().domains
    return [derive_offline(h, domains) for h in group_histories(conversations, labelled).values()
            if len(h.conversations) >= min_conversations]


def derive_personas(conversations: Sequence[Conversation], labelled: Sequence[tuple[FollowUp, Labels]],
                    min_conversations: int) -> dict[str, str]:
    """:func:`derived_personas` as persona text by user id."""
    return {p.user_id: p.persona for p in derived_personas(conversations, labelled, min_conversations)}


def user_requests(conversations: Sequence[Conversation], labelled: Sequence[tuple[FollowUp, Labels]],
                  personas: dict[str, str], counts: Counter) -> list[UserRequest]:
    """Every request of ``conversations`` (module docstring), whether feedback followed it or not."""
    by_turn = {(f.conversation_id, f.index): label for f, label in labelled}
    out = []
    for conversation in conversations:
        user_id = conversation.user_id or ""
        if not user_id:
            counts["conversations_without_user_id"] += 1
        messages = [{"role": m.role, "content": m.content} for m in conversation.messages]
        user_turns = [i for i, m in enumerate(messages) if m["role"] == "user"]
        for position, i in enumerate(user_turns):
            own = by_turn.get((conversation.id, i))
            if own is not None and own.relation == "none":
                counts["skipped_not_a_request"] += 1
                continue
            following = user_turns[position + 1] if position + 1 < len(user_turns) else None
            reaction = by_turn.get((conversation.id, following)) if following is not None else None
            out.append(UserRequest(conversation.id, user_id, personas.get(user_id) if user_id else None,
                                   messages[:i + 1], i, reaction is not None and reaction.feedback_type != "none"))
    return out


def requests_without_feedback(data: Path, split: str = "train", followups: Path | None = None,
                              personas: Path | None = None, min_conversations: int = 3,
                              counts: Counter | None = None) -> list[UserRequest]:
    """The requests of ``data``'s ``split`` that got no feedback, each with its user's derived persona
    (module docstring); ``counts`` receives what was read and skipped."""
    counts = Counter() if counts is None else counts
    conversations = read_split_conversations(data, split)
    labelled = label_followups(conversations, followups, counts)
    persona_text = read_personas(personas) if personas is not None else derive_personas(conversations, labelled, min_conversations)
    requests = user_requests(conversations, labelled, persona_text, counts)
    without = [r for r in requests if not r.feedback]
    counts["conversations"] += len(conversations)
    counts["requests"] += len(requests)
    counts["requests_with_feedback"] += len(requests) - len(without)
    counts["requests_without_feedback"] += len(without)
    counts["requests_without_feedback_or_persona"] += sum(r.persona is None for r in without)
    return without


# ----------------------------------------------------------------------------- sampling and pairing
def sample_candidates(policy, prompts: Sequence[list[dict]], n: int = 4, temperature: float = 0.6, top_p: float = 0.9,
                      seed: int | None = None, max_new_tokens: int = 256, batch_size: int = 64,
                      on_progress: Callable[[int], None] | None = None) -> list[list[str]]:
    """``n`` sampled answers of ``policy`` (a :class:`~userloop.models.ChatModel`) per prompt; the prompts
    already carry whatever conditioning they need (e.g. :func:`with_persona`)."""
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, n=n)
    out: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start:start + batch_size])
        out.extend([choice.text for choice in completion.choices] for completion in policy.generate(batch, params))
        if on_progress:
            on_progress(len(batch))
    return out


def best_worst_pairs(requests: Sequence[UserRequest], candidates: Sequence[Sequence[str]],
                     scores: Sequence[Sequence[float]], counts: Counter | None = None,
                     tolerance: float = TIE_TOLERANCE) -> list[dict[str, Any]]:
    """One pair per request: the best-scored candidate chosen, the worst rejected (the first of equals),
    as rows in part 1's pair format plus ``chosen_score`` / ``rejected_score``. Requests whose candidates
    all score within ``tolerance`` of each other are skipped (``counts["all_tied"]``)."""
    counts = Counter() if counts is None else counts
    rows = []
    for request, texts, values in zip(requests, candidates, scores, strict=True):
        if len(texts) != len(values) or not texts:
            raise ValueError(f"request {request.conversation_id}#{request.index}: {len(texts)} candidates, {len(values)} scores")
        best = max(range(len(values)), key=lambda i: values[i])
        worst = min(range(len(values)), key=lambda i: values[i])
        if values[best] - values[worst] <= tolerance:
            counts["all_tied"] += 1
            continue
        counts["paired"] += 1
        rows.append({"prompt": request.prompt, "chosen": [{"role": "assistant", "content": texts[best]}],
                     "rejected": [{"role": "assistant", "content": texts[worst]}], "user_id": request.user_id or None,
                     "persona": request.persona, "feedback": None, "conversation_id": request.conversation_id,
                     "chosen_score": float(values[best]), "rejected_score": float(values[worst])})
    return rows


def score_candidates(scorer: Scorer, requests: Sequence[UserRequest], candidates: Sequence[Sequence[str]],
                     batch_size: int = 256, on_progress: Callable[[int], None] | None = None) -> list[list[float]]:
    """The scorer's score of every candidate, for the user who made each request."""
    flat = [ScoreRequest(r.user_id, r.persona, r.prompt, text) for r, texts in zip(requests, candidates, strict=True) for text in texts]
    values: list[float] = []
    for start in range(0, len(flat), batch_size):
        values.extend(scorer.score(flat[start:start + batch_size]))
        if on_progress:
            on_progress(min(batch_size, len(flat) - start))
    out, at = [], 0
    for texts in candidates:
        out.append(values[at:at + len(texts)])
        at += len(texts)
    return out


# ----------------------------------------------------------------------------- the command
@dataclass
class RewardsConfig:
    """How ``userloop rlhi rewards`` runs."""

    policy: str = field(default="", metadata={"help": "the policy that samples candidates: a chat model spec (hf:PATH, openai:..., scripted:FILE)"})
    scorer: str = field(default="testbed:scorer", metadata={"help": "testbed:scorer (ground truth, testbed only), rm:PATH (a reward model folder) or a chat model spec (LLM judge)"})
    split: str = field(default="train", metadata={"help": "split of the prepared data whose requests are used"})
    followups: Path | None = field(default=None, metadata={"help": "followups.jsonl of 'rlhi build' (default: classify follow-ups with the offline classifier)"})
    personas: Path | None = field(default=None, metadata={"help": "personas.jsonl of 'rlhi build' (default: derive them offline from the split)"})
    n: int = field(default=4, metadata={"help": "candidates sampled per request (RLHI: 4)"})
    temperature: float = field(default=0.6, metadata={"help": "sampling temperature (RLHI: 0.6)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling top_p (RLHI: 0.9)"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest candidate, in tokens"})
    max_requests: int = field(default=500, metadata={"help": "use at most this many requests, drawn at random (seeded); 0: all"})
    min_conversations: int = field(default=3, metadata={"help": "derived personas: users need at least this many conversations"})
    persona: bool = field(default=True, metadata={"help": "put the persona in the policy's system message (off: persona-agnostic sampling)"})
    batch_size: int = field(default=64, metadata={"help": "prompts per generation batch"})
    seed: int = field(default=0, metadata={"help": "random seed (request sample, sampling)"})

    def validate(self) -> None:
        if not self.policy:
            raise UserError("give the policy that samples candidates: --policy SPEC")
        parse_spec(self.policy)
        role_spec("scorer", self.scorer)
        require_at_least_one(self, ("n", "max_new_tokens", "min_conversations", "batch_size"))
        if self.n < 2:
            raise UserError(f"n must be at least 2 to pair a best and a worst candidate, got {self.n}")
        if self.max_requests < 0:
            raise UserError(f"max_requests must be 0 (all) or positive, got {self.max_requests}")
        if not 0 <= self.temperature <= 100 or not 0 < self.top_p <= 1:
            raise UserError(f"temperature must be in [0, 100] and top_p in (0, 1], got {self.temperature} and {self.top_p}")


def sample_requests(requests: list[UserRequest], limit: int, seed: int) -> list[UserRequest]:
    """At most ``limit`` requests (0: all), drawn at random with ``seed``, in their original order."""
    if not limit or len(requests) <= limit:
        return requests
    keep = sorted(random.Random(seed).sample(range(len(requests)), limit))
    return [requests[i] for i in keep]


def user_based_rewards(data: Path, out: Path, config: RewardsConfig, progress: Progress = no_progress) -> dict[str, Any]:
    """Sample, score and pair (module docstring); writes ``pairs.parquet``, ``pairs_dataset/`` and
    ``report.json`` into ``out`` and returns the report."""
    config.validate()
    started = time.perf_counter()
    scorer = load_scorer(config.scorer, data)
    policy = load_model(config.policy)
    output_folder(out)
    counts: Counter = Counter()
    found = requests_without_feedback(data, config.split, config.followups, config.personas, config.min_conversations, counts)
    requests = sample_requests(found, config.max_requests, config.seed)
    prompts = [with_persona(r.prompt, r.persona if config.persona else None) for r in requests]
    with progress("sampling candidates", len(prompts)) as advance:
        candidates = sample_candidates(policy, prompts, config.n, config.temperature, config.top_p, config.seed,
                                       config.max_new_tokens, config.batch_size, advance)
    with progress("scoring candidates", sum(map(len, candidates))) as advance:
        scores = score_candidates(scorer, requests, candidates, on_progress=advance)
    pairing: Counter = Counter()
    records = best_worst_pairs(requests, candidates, scores, pairing)
    write_pairs(records, out / "pairs.parquet", out / "pairs_dataset", scores=True)
    flat = [s for group in scores for s in group]

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    report = {"data": str(data), "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
              "scorer": scorer.name, "requests": dict(counts), "requests_used": len(requests),
              "requests_not_sampled": len(found) - len(requests), "candidates": len(flat),
              "pairs": len(records), "skipped_all_tied": pairing["all_tied"],
              "pairs_with_persona": sum(r["persona"] is not None for r in records),
              "mean_score": mean(flat), "mean_best": mean([max(g) for g in scores]), "mean_worst": mean([min(g) for g in scores]),
              "mean_margin": mean([r["chosen_score"] - r["rejected_score"] for r in records]),
              "scorer_counts": dict(scorer.counts), "seconds": round(time.perf_counter() - started, 2)}
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report
