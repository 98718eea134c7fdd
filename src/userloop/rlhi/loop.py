"""``userloop rlhi loop``: simulated users as the source of interaction for RLHI, round after round.

RLHI (FAIR, 2025) learns from what real users do after an answer; a user LM ("Flipping the Dialogue",
arXiv 2510.06552) can be such a user. Each round r = 1..R:

1. **Interact.** ``users`` training users (train split, with a persona) each get one of their own
   intents; the simulated user (``user``, given :func:`userloop.userlm.flip.user_system_message` of the
   intent and the user's persona) opens, the current policy answers, the user follows up or ends, for up
   to ``turns`` answers. With ``user="testbed:users"`` the users are the ground truth instead: each is the
   interactive testbed user (:mod:`userloop.simulate.testbed_users`) of the logged conversation the intent
   comes from, with its true persona and task, reading the policy's text (online RLHI with real users'
   behaviour, against which a user LM's loop is measured). The policy sees the conversation and, with
   ``persona`` (default), the user's derived persona in its system message
   (:func:`~userloop.rlhi.conditioning.with_persona`): what a deployed RLHI assistant knows from the user's
   history, and what its DPO prompts carry.
2. **Pairs.** Follow-ups are classified (the offline classifier); feedback becomes user-guided rewrites
   (``rewriter``, kept when ``judge`` accepts them; rewrite chosen, original rejected, RLHI section 2.1);
   requests that got no feedback get ``n`` sampled answers of the policy scored for the user
   (``scorer``, persona-conditioned rewards), best chosen, worst rejected (RLHI section 2.2). At most
   ``users`` such requests per round. With ``mirrors``, each pair also gets its mirror when the pairwise
   judge (UserEval's, for ``judge``) agrees: the same prompt and answers, reversed, for another training user
   whose persona prefers the rejected one (:mod:`userloop.rlhi.mirrors`; userloop's addition).
3. **Train.** Persona-conditioned DPO (``rlhi.dpo.run_training``) on the round's pairs, ``max_steps``
   updates from the current policy against it as reference (iterative DPO: model t+1 against model t; with
   ``reference="initial"``, against the loop's initial policy every round), with
   ``sft_weight`` times the chosen answers' NLL added (RPO, Pang et al. 2024; default 0) and, with
   ``anchors``, ``anchor_weight`` times the NLL of checked anchors: the initial policy's answers to training
   users' full tasks that pass the task's check (:mod:`userloop.rlhi.anchors`, made once before round 1;
   with ``anchors_refresh`` each round's starting policy answers the same tasks again and a task's newest
   passing answer replaces its anchor); the result is the next round's policy.
4. **Evaluate** (also before round 1) on held-out users: ``eval_users`` users of the test split, none
   of whose persona texts any training user has (asserted; training users that share one are left out
   and counted). Persona match: the testbed scorer with the user's TRUE persona, over the policy's
   greedy answers in the held-out users' conversations, played by ``eval_user`` (default: ``user``; with
   ``testbed:users`` every arm is measured against the same ground-truth users). Feedback rate: the share of
   the held-out users' follow-ups classified as feedback. Task success: the policy's greedy
   answer to the task's full request (its shards in one turn) passes the task's check
   (:mod:`userloop.rlhi.tasks`).

``baseline="logged"`` is the comparison arm: the same rounds, pairs and DPO budget, but step 1 takes
the round's training users' LOGGED train-split conversations instead of simulated ones (training on
the logged interactions only). Outputs in ``out``: ``config.json``, ``users.json`` (who trained, who
evaluated), ``rounds.jsonl`` (one line per finished round, round 0 the initial policy), ``round-K/``
(the policy, ``pairs.parquet``, ``conversations.jsonl``, ``eval_conversations.jsonl``; with
``anchors_refresh`` the round's ``anchors.jsonl``), with ``anchors`` ``anchors.jsonl`` and
``anchors_report.json``, ``report.json`` and ``report.md`` (roles, guard, per-round table). A re-run with
the same config resumes after the last finished round; with a larger ``rounds`` it goes on from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from userloop.config import option, require_at_least_one
from userloop.conversation import Conversation, Message, write_jsonl
from userloop.data.personas import persona_records
from userloop.errors import UserError
from userloop.files import read_user_json, write_atomic
from userloop.models import GenerationParams, load_model
from userloop.models.registry import canonical_spec, load_role, parse_spec, role_spec
from userloop.progress import Progress, no_progress
from userloop.rlhi.anchors import read_anchors, write_anchors
from userloop.rlhi.build import candidate_key, output_folder, read_split_conversations
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.dpo import DPOTrainConfig, fitting_requests, run_training
from userloop.rlhi.followups import extract_followups
from userloop.rlhi.mirrors import mirror_pairs, with_mirrors
from userloop.rlhi.pairs import pair_record
from userloop.rlhi.pairwise_judges import load_judge
from userloop.rlhi.personas import DerivedPersona
from userloop.rlhi.reward_scorers import load_scorer
from userloop.rlhi.rewrites import ModelJudge, ModelRewriter, candidates, rewrite_and_filter
from userloop.rlhi.task_answers import answer_full_tasks, passing_answers, policy_folder, tasks_by_family
from userloop.rlhi.taxonomy import NEGATIVE_FEEDBACK
from userloop.rlhi.user_rewards import (
    best_worst_pairs,
    derived_personas,
    label_followups,
    sample_candidates,
    sample_requests,
    score_candidates,
)
from userloop.rlhi.user_rewards import (
    user_requests as all_requests,
)
from userloop.simulate.engine import EndReason, Job, ScenarioUser, SimulationEngine, current_end_reason
from userloop.simulate.scenarios import Scenario
from userloop.simulate.testbed_users import TestbedUsers, testbed_scenarios
from userloop.statistics import binomial_se, mean_se
from userloop.testbed import read_truth, score
from userloop.testbed.population import truth_folder
from userloop.train.common import quiet_libraries
from userloop.userlm.simulator import DEFAULT_PARAMS, GuardrailConfig, UserSimulator

BASELINES = ("none", "logged")
REFERENCES = ("previous", "initial")
GROUND_TRUTH_USERS = "testbed:users"   # --user: the interactive testbed users instead of a user LM
ROLE_FIELDS = ("scorer", "rewriter", "judge")   # LoopConfig fields that are model roles (their names are the roles)


@dataclass
class LoopConfig:
    """How ``rlhi loop`` runs; every field is a flag of the command."""

    policy: str = option("", "the initial policy: a save_pretrained folder with a chat template (or hf:FOLDER), "
                              "e.g. from 'userloop train assistant'")
    user: str = option("", "the simulated user: a user LM spec (hf:FOLDER, openai:..., prompted:SPEC; a persona-"
                            "conditioned one reads 'Your persona: ...' after the intent), or testbed:users: the "
                            "testbed's own users (ground truth)")
    eval_user: str | None = option(None, "who plays the held-out users (default: --user); testbed:users evaluates "
                                          "every arm against the ground truth")
    rounds: int = option(2, "interact-train rounds")
    data: str | None = option(None, "a prepared testbed folder (default: the built-in testbed, prepared); the "
                                     "evaluation needs its truth")
    personas: str | None = option(None, "personas.jsonl (user_id, persona) for users and policy; default: derived "
                                         "offline from each split's own conversations")
    baseline: str = option("none", "none: simulated users; logged: the same training on the round's users' "
                                    "logged conversations instead (the comparison arm)")
    scorer: str = option("testbed:scorer", "scores sampled answers for the user: testbed:scorer, testbed:task-scorer "
                                           "(also the task's check), rm:PATH or a chat model spec")
    rewriter: str = option("testbed:rewriter", "rewrites answers users complained about: testbed:rewriter, "
                                               "testbed:editor, testbed:corrector (also stated corrections) or a chat "
                                               "model spec")
    judge: str = option("testbed:judge", "keeps rewrites that address the feedback: testbed:judge (testbed truth) or "
                                         "a chat model spec")
    users: int = option(64, "training users per round (fresh ones each round while the pool lasts)")
    eval_users: int = option(50, "held-out users (test split), the same every round")
    turns: int = option(2, "most policy answers per simulated conversation")
    n: int = option(4, "answers sampled per request without feedback (RLHI: 4)")
    persona: bool = option(True, "the policy sees the user's derived persona in its system message "
                                  "(--no-persona: the persona-agnostic policy)")
    mirrors: bool = option(False, "also pair each round's pair, reversed, for another training user whose persona "
                                  "prefers the rejected answer, when the judge agrees (persona-contrastive mirrors, "
                                  "docs/rlhi.md)")
    max_steps: int = option(40, "DPO updates per round")
    batch_size: int = option(8, "pairs per DPO update")
    learning_rate: float = option(1e-4, "DPO peak learning rate")
    beta: float = option(0.1, "DPO beta")
    reference: str = option("previous", "each round's DPO reference: previous (the policy the round starts from: "
                                        "iterative DPO) or initial (the loop's initial policy, so every round's KL "
                                        "is to it)")
    sft_weight: float = option(0.0, "weight of a negative log-likelihood term on the chosen answers added to each "
                                    "round's DPO loss (RPO; 0: plain DPO)")
    anchors: int = option(0, "checked anchors: the initial policy answers the full tasks of up to this many training "
                             "users' conversations (greedy, with the user's persona); the answers that pass the task's "
                             "check add an NLL term to every round's DPO loss (userloop.rlhi.anchors; 0: none)")
    anchor_weight: float = option(1.0, "weight of the checked anchors' NLL term (with --anchors)")
    anchors_refresh: bool = option(False, "renew the checked anchors every round: the round's starting policy answers "
                                          "the same training tasks, and each task's anchor is its newest passing "
                                          "answer (else the one before)")
    temperature: float = option(0.6, "policy sampling temperature while interacting and for candidates (RLHI: 0.6)")
    top_p: float = option(0.9, "policy nucleus sampling (RLHI: 0.9)")
    max_new_tokens: int = option(192, "longest policy answer in tokens")
    min_conversations: int = option(3, "derived personas: users need at least this many conversations")
    seed: int = option(0, "random seed (users, intents, sampling, training)")

    def validate(self) -> None:
        """Raise :class:`UserError` for a value that cannot work."""
        if not self.policy:
            raise UserError("--policy is required (a save_pretrained folder, e.g. from 'userloop train assistant')")
        policy_folder(self.policy)
        if not self.user:
            raise UserError("--user is required (the user LM that plays the users, e.g. hf:runs/ulm, or testbed:users)")
        self.user = self.user.strip()
        if self.user != GROUND_TRUTH_USERS:
            parse_spec(self.user)
        if self.eval_user is not None:
            self.eval_user = self.eval_user.strip() or None
        if self.eval_user not in (None, GROUND_TRUTH_USERS):
            parse_spec(self.eval_user)
        if self.baseline not in BASELINES:
            raise UserError(f"--baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        for role in ROLE_FIELDS:
            setattr(self, role, role_spec(role, getattr(self, role)))
        require_at_least_one(self, ("rounds", "users", "eval_users", "turns", "max_steps", "batch_size",
                                    "max_new_tokens", "min_conversations"))
        if self.anchors < 0 or self.anchor_weight <= 0:
            raise UserError(f"anchors must be 0 (none) or positive and anchor_weight positive, got {self.anchors} "
                            f"and {self.anchor_weight}")
        if self.n < 2:
            raise UserError(f"n must be at least 2 to pair a best with a worst answer, got {self.n}")
        if self.learning_rate <= 0 or self.beta <= 0:
            raise UserError("learning_rate and beta must be positive")
        if self.reference not in REFERENCES:
            raise UserError(f"--reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
        if self.sft_weight < 0:
            raise UserError(f"sft_weight must be 0 (plain DPO) or positive, got {self.sft_weight}")
        if not 0 < self.top_p <= 1 or not 0 < self.temperature <= 100:
            raise UserError(f"top_p must be in (0, 1] and temperature in (0, 100], got {self.top_p} and {self.temperature}")
        if self.personas and not Path(self.personas).is_file():
            raise UserError(f"--personas {self.personas}: no such file")


# ----------------------------------------------------------------------------- who plays a user
@dataclass(frozen=True, slots=True)
class Episode:
    """One user with one of their own tasks: the intent the simulated user gets, and the task's truth."""

    user_id: str
    persona: str
    conversation_id: str      # the logged conversation the intent (and the task) comes from
    intent: str


@dataclass
class LoopUsers:
    """The training pool and the held-out users, with what the guard checked."""

    train: dict[str, list[Conversation]]    # user id -> their train-split conversations with an intent
    held_out: list[Episode]
    personas: dict[str, str]
    guard: dict[str, Any]


def _with_intent(conversations: Sequence[Conversation]) -> dict[str, list[Conversation]]:
    by_user: dict[str, list[Conversation]] = {}
    for conversation in conversations:
        if conversation.user_id and conversation.intent:
            by_user.setdefault(conversation.user_id, []).append(conversation)
    return by_user


def split_users(train: Sequence[Conversation], test: Sequence[Conversation], personas: dict[str, str],
                eval_users: int, seed: int) -> LoopUsers:
    """Held-out users: ``eval_users`` test-split users with a persona (seeded draw), one intent each.
    Training pool: train-split users with a persona that no held-out user has; users in both splits or
    sharing a held-out persona text are left out of training (counted). Asserts the two are disjoint."""
    train_users, test_users = _with_intent(train), _with_intent(test)
    candidates = sorted(u for u in test_users if personas.get(u))
    if not candidates:
        raise UserError("no test-split user has a persona and an intent: nothing to evaluate on")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(candidates, min(eval_users, len(candidates))))
    held_out = []
    for user_id in chosen:
        conversation = rng.choice(test_users[user_id])
        held_out.append(Episode(user_id, personas[user_id], conversation.id, conversation.intent))
    eval_personas = {personas[u] for u in chosen}
    with_persona_text = {u: c for u, c in train_users.items() if personas.get(u)}
    pool = {u: c for u, c in with_persona_text.items() if personas[u] not in eval_personas and u not in test_users}
    shared_users = set(pool) & set(chosen)
    shared_personas = {personas[u] for u in pool} & eval_personas
    assert not shared_users and not shared_personas, "training and held-out users or personas overlap"
    if not pool:
        raise UserError("no train-split user with a persona is left for training")
    guard = {"train_split": "train", "eval_split": "test", "training_pool_users": len(pool),
             "held_out_users": len(chosen), "held_out_persona_texts": len(eval_personas),
             "train_users_without_persona": len(train_users) - len(with_persona_text),
             "train_users_left_out_sharing_a_held_out_persona": sum(personas[u] in eval_personas for u in with_persona_text),
             "train_users_left_out_also_in_test": sum(u in test_users for u in with_persona_text),
             "test_users_with_persona": len(candidates), "shared_users": 0, "shared_persona_texts": 0}
    return LoopUsers(pool, held_out, personas, guard)


def round_episodes(population: LoopUsers, round_index: int, size: int, seed: int) -> list[Episode]:
    """The ``round_index``-th block (1-based) of ``size`` training users of a seeded order (fresh users
    each round while the pool lasts, then wrapping), each with one of their intents drawn for the round."""
    order = sorted(population.train)
    random.Random(seed).shuffle(order)
    start = ((round_index - 1) * size) % len(order)
    block = (order[start:] + order[:start])[:size]
    rng = random.Random(f"{seed}-{round_index}")
    out = []
    for user_id in block:
        conversation = rng.choice(population.train[user_id])
        out.append(Episode(user_id, population.personas[user_id], conversation.id, conversation.intent))
    return out


# ----------------------------------------------------------------------------- simulated conversations
@dataclass(frozen=True)
class UserSide:
    """Who plays the users of one set of conversations: a user LM's
    :class:`~userloop.userlm.simulator.UserSimulator`, or the testbed users (``testbed:users``), who play the
    testbed scenario of each episode's logged conversation (``scenarios``, by conversation id). Conversation i's
    user turns are seeded with ``seed * 100003 + i``."""

    player: UserSimulator | ScenarioUser
    seed: int | None
    scenarios: Mapping[str, Scenario] | None = None

    def scenario(self, episode: Episode, scenario_id: str) -> Scenario:
        """The scenario the user plays in ``episode``: an open one from its intent (a user LM), or the testbed
        scenario of its logged conversation."""
        if self.scenarios is None:
            return Scenario(id=scenario_id, kind="open", intent=episode.intent, shards=[], full_prompt=episode.intent,
                            metadata={"persona": episode.persona})
        if episode.conversation_id not in self.scenarios:
            raise UserError(f"conversation {episode.conversation_id!r} has no testbed scenario: testbed:users needs "
                            "data prepared from a testbed folder of this version")
        return dataclasses.replace(self.scenarios[episode.conversation_id], id=scenario_id)


def converse(policy, users: UserSide, episodes: Sequence[Episode], turns: int, params, persona: bool,
             prefix: str) -> list[Conversation]:
    """Simulated users against ``policy`` (a ChatModel), run by the simulation engine
    (:mod:`userloop.simulate.engine`): all conversations advance together. ``users`` says who plays them
    (:class:`UserSide`); every policy answer is sampled with ``params.seed``. The user opens (a user LM's
    system message: the intent and the episode's persona); up to ``turns`` times the policy answers (with
    ``persona``, the user's persona in its system message) and the user reacts, following up or ending: a
    cap of ``turns + 1`` user turns with the user's reaction as the last word; an empty user turn ends the
    conversation too. Each conversation's ``extra["end"]`` is its end reason
    (:class:`~userloop.simulate.engine.EndReason`): ``user_ended``, ``max_turns`` (the user's reaction to
    the last answer did not end it), ``context`` (the next prompt no longer fit a model's context) or
    ``error``; when every conversation ends in ``error``, a :class:`UserError` with the first message. The
    models are closed at the end."""
    return asyncio.run(_converse(policy, users, episodes, turns, params, persona, prefix))


async def _converse(policy, users: UserSide, episodes, turns, params, persona, prefix) -> list[Conversation]:
    jobs = []
    for i, episode in enumerate(episodes):
        system = with_persona([], episode.persona if persona else None)
        jobs.append(Job(users.scenario(episode, f"{prefix}-{i}"), 0,
                        system_prompt=system[0]["content"] if system else None,
                        user_seed=None if users.seed is None else users.seed * 100_003 + i,
                        assistant_seed=params.seed))
    engine = SimulationEngine(policy, users.player, assistant_params=params, max_user_turns=turns + 1,
                              last_word="user", empty_turn_ends=True, concurrency=max(1, len(jobs)))
    records = {}
    try:
        await engine.run(jobs, lambda record: records.__setitem__(record.scenario_id, record))
    finally:
        await policy.aclose()
        if isinstance(users.player, UserSimulator):
            await users.player.model.aclose()
    failed = [r.error for r in records.values() if r.end_reason == EndReason.ERROR]
    if failed and len(failed) == len(records):
        raise UserError(f"every simulated conversation failed, the first with {failed[0]}: check --user and --policy")
    return [Conversation(messages=[Message(m.role, m.content) for m in records[job.scenario.id].messages],
                         id=job.scenario.id, source="rlhi-loop", user_id=episode.user_id, intent=episode.intent,
                         extra={"end": records[job.scenario.id].end_reason})
            for job, episode in zip(jobs, episodes, strict=True)]


# ----------------------------------------------------------------------------- pairs
def classify(conversations: Sequence[Conversation]):
    """Every follow-up with its labels (the offline classifier)."""
    from userloop.rlhi.followup_classifier import load_offline

    followups = [f for c in conversations for f in extract_followups(c) if f.text.strip()]
    return list(zip(followups, load_offline().classify(followups), strict=True))


def feedback_counts(labelled) -> dict[str, Any]:
    """Follow-ups, the share with any feedback and with negative feedback (RLHI's feedback classes)."""
    total = len(labelled)
    feedback = sum(label.feedback_type != "none" for _, label in labelled)
    negative = sum(label.feedback_type in NEGATIVE_FEEDBACK for _, label in labelled)
    return {"followups": total, "with_feedback": feedback, "with_negative_feedback": negative,
            "feedback_rate": _share(feedback, total), "feedback_rate_se": _binomial_se(feedback, total),
            "negative_feedback_rate": _share(negative, total),
            "by_feedback_type": dict(Counter(label.feedback_type for _, label in labelled).most_common())}


def guided_pairs(conversations, labelled, personas: dict[str, str], rewriter, judge, counts: Counter) -> list[dict]:
    """User-guided rewrites of the answers users gave feedback on (rewrite chosen, original rejected)."""
    by_conversation: dict[str, list] = {}
    for followup, label in labelled:
        by_conversation.setdefault(followup.conversation_id, []).append((followup, label))
    found = [c for conversation in conversations for c in candidates(conversation, by_conversation.get(conversation.id, []))]
    unique: dict[tuple, Any] = {}
    for candidate in found:
        if candidate.prompt and candidate.prompt[-1]["role"] == "user":
            unique.setdefault(candidate_key(candidate), candidate)
    todo = list(unique.values())
    counts["rewrite_candidates"] += len(found)
    counts["rewrite_candidates_skipped_duplicate_or_no_request"] += len(found) - len(todo)
    if not todo:
        return []
    texts = [personas.get(c.followup.user_id or "") for c in todo]
    records = []
    for result in rewrite_and_filter(todo, texts, rewriter, judge):
        counts[f"rewrite_{result.why.replace(' ', '_')}"] += 1
        if result.accepted:
            records.append(pair_record(result, personas.get(result.candidate.followup.user_id or "")))
    return records


def sampled_pairs(policy_path: Path, conversations, labelled, personas: dict[str, str], scorer, config: LoopConfig,
                  limit: int, seed: int, counts: Counter) -> tuple[list[dict], dict[str, Any]]:
    """User-based rewards: ``n`` sampled answers for (at most ``limit``) requests without feedback,
    scored for their user, best vs worst."""
    requests = [r for r in all_requests(conversations, labelled, personas, counts) if not r.feedback]
    requests = fitting_requests(requests, str(policy_path), config.max_new_tokens, config.persona, counts)
    chosen = sample_requests(requests, limit, seed)
    counts["requests_without_feedback"] += len(requests)
    counts["requests_without_feedback_not_drawn"] += len(requests) - len(chosen)
    if not chosen:
        return [], {"requests": 0}
    model = load_model(f"hf:{policy_path}")
    prompts = [with_persona(r.prompt, r.persona if config.persona else None) for r in chosen]
    candidates = sample_candidates(model, prompts, config.n, config.temperature, config.top_p, seed, config.max_new_tokens)
    scores = score_candidates(scorer, chosen, candidates)
    pairing: Counter = Counter()
    pairs = best_worst_pairs(chosen, candidates, scores, pairing)
    flat = [s for group in scores for s in group]
    return pairs, {"requests": len(chosen), "mean_score": _mean(flat), "mean_best": _mean([max(g) for g in scores]),
                   "skipped_all_tied": pairing["all_tied"]}


def checked_anchors(policy_path: Path, population: LoopUsers, truth: dict[str, dict], config: LoopConfig,
                    out: Path) -> Path:
    """``out/anchors.jsonl`` (made once; a resumed run reads it): the initial policy's greedy answers to the
    full tasks of ``config.anchors`` training-pool conversations (:func:`anchor_tasks`), kept where the task's
    check passes; the counts go to ``out/anchors_report.json``."""
    path = out / "anchors.jsonl"
    if path.is_file():
        return path
    drawn = anchor_tasks(population, truth, config)
    rows, tasks, solved = passing_answers(policy_path, drawn, _anchor_personas(population, config), truth,
                                          _greedy(config))
    if not rows:
        raise UserError(f"none of the initial policy's {len(drawn):,} answers to training tasks passed its check: "
                        "there is nothing to anchor to; raise --anchors or leave it at 0")
    write_atomic(out / "anchors_report.json", json.dumps({"tried": len(drawn), "passed": len(rows),
                                                          "by_family": tasks_by_family(tasks, solved)}, indent=2))
    write_anchors(rows, path)
    return path


def renewed_anchors(policy_path: Path, previous: Path, population: LoopUsers, truth: dict[str, dict],
                    config: LoopConfig, folder: Path, counts: Counter) -> Path:
    """``folder/anchors.jsonl``: ``policy_path`` answers the anchor tasks again; each task's anchor is its
    passing answer, or else the one in ``previous``. Counted: renewed (passing now), kept from before (passing
    no more), and gained (passing now, with no anchor in ``previous``)."""
    drawn = anchor_tasks(population, truth, config)
    rows, _, _ = passing_answers(policy_path, drawn, _anchor_personas(population, config), truth, _greedy(config))
    before = {row["conversation_id"]: row for row in read_anchors(previous)}
    now = {row["conversation_id"]: row for row in rows}
    counts.update({"anchors_renewed": len(now), "anchors_kept_from_before": len(before.keys() - now.keys()),
                   "anchors_gained": len(now.keys() - before.keys())})
    merged = [now.get(conversation_id) or before[conversation_id] for _, conversation_id in drawn
              if conversation_id in now or conversation_id in before]
    write_anchors(merged, folder / "anchors.jsonl")
    return folder / "anchors.jsonl"


def anchor_tasks(population: LoopUsers, truth: dict[str, dict], config: LoopConfig) -> list[tuple[str, str]]:
    """``config.anchors`` (user id, conversation id) of the training pool, a draw seeded by ``config.seed``."""
    pool = [(user_id, c.id) for user_id in sorted(population.train) for c in population.train[user_id]
            if c.id in truth]
    return random.Random(f"anchors-{config.seed}").sample(pool, min(config.anchors, len(pool)))


def _anchor_personas(population: LoopUsers, config: LoopConfig) -> dict[str, str] | None:
    return population.personas if config.persona else None


def _greedy(config: LoopConfig) -> GenerationParams:
    return GenerationParams(max_new_tokens=config.max_new_tokens, temperature=0, seed=config.seed)


# ----------------------------------------------------------------------------- evaluation
def evaluate(policy_path: Path, users_for, population: LoopUsers, truth: dict[str, dict],
             true_personas: dict[str, dict], config: LoopConfig, out: Path) -> dict[str, Any]:
    """Persona match, task success and the held-out simulated users' feedback rate (module docstring)."""
    greedy = _greedy(config)
    policy = load_model(f"hf:{policy_path}")
    episodes = population.held_out
    conversations = converse(policy, users_for(config.seed), episodes, config.turns, greedy, config.persona, "eval")
    write_jsonl(conversations, out / "eval_conversations.jsonl")
    by_user = persona_match_by_user(conversations, true_personas)
    per_user = list(by_user.values())
    tasks = [truth[e.conversation_id]["tasks"][0] for e in episodes]
    full_answers, solved = answer_full_tasks(policy, tasks, [e.persona if config.persona else None for e in episodes],
                                             greedy)
    full_match = [score(true_personas[e.user_id], a) for e, a in zip(episodes, full_answers, strict=True)]
    labelled = classify(conversations)
    user_turns = [len(m.content.split()) for c in conversations for m in c.messages if m.role == "user"]
    return {"persona_match": _mean(per_user), "persona_match_se": _se(per_user), "persona_match_by_user": by_user,
            "conversations_with_an_answer": len(per_user), "conversations": len(conversations),
            "task_success": _share(sum(solved), len(solved)), "task_success_se": _binomial_se(sum(solved), len(solved)),
            "task_success_by_family": tasks_by_family(tasks, solved),
            "persona_match_full_request": _mean(full_match), "persona_match_full_request_se": _se(full_match),
            **feedback_counts(labelled),
            "policy_answers": sum(m.role == "assistant" for c in conversations for m in c.messages),
            "ends": _ends(conversations),
            "mean_user_turn_words": _mean(user_turns)}


def persona_match_by_user(conversations: Sequence[Conversation], true_personas: dict[str, dict]) -> dict[str, float]:
    """Each held-out user's mean true-persona match over the policy's answers in their conversation."""
    out = {}
    for conversation in conversations:
        answers = [m.content for m in conversation.messages if m.role == "assistant"]
        if answers:
            out[conversation.user_id] = round(sum(score(true_personas[conversation.user_id], a) for a in answers) / len(answers), 4)
    return out


def paired_change(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Mean per-user change in persona match between two evaluations, with its paired SE (same users)."""
    differences = [after[u] - before[u] for u in before if u in after]
    return {"persona_match_change": _mean(differences), "se": _se(differences), "users": len(differences)}


def _ends(conversations: Sequence[Conversation]) -> dict[str, int]:
    """How the conversations ended (``logged``: a logged conversation, as it ended in the log)."""
    return dict(Counter(c.extra.get("end", "logged") for c in conversations).most_common())


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _se(values: Sequence[float]) -> float | None:
    return round(mean_se(values), 4) if len(values) > 1 else None


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _binomial_se(part: int, whole: int) -> float | None:
    return round(binomial_se(part, whole), 4) if whole else None


# ----------------------------------------------------------------------------- the run
def run_loop(config: LoopConfig, out: Path, progress: Progress = no_progress) -> dict[str, Any]:
    """Run (or resume) the loop of the module docstring into ``out``; returns the report."""
    config.validate()
    started = time.perf_counter()
    quiet_libraries()
    data = Path(config.data) if config.data else _default_data()
    truth_dir = truth_folder(data)
    if truth_dir is None:
        raise UserError(f"{data} is not the testbed (no truth.jsonl): the loop's evaluation scores answers with the "
                        "users' true personas and checks their tasks, which needs the testbed's truth")
    output_folder(out)
    _check_resume(out, config)
    user_truth, truth = read_truth(truth_dir)
    true_personas = {u: record["persona"] for u, record in user_truth.items()}
    train, test = read_split_conversations(data, "train"), read_split_conversations(data, "test")
    derived = _personas(config, train, test)
    personas = {p.user_id: p.persona for p in derived}
    population = split_users(train, test, personas, config.eval_users, config.seed)
    mirror_users = [p for p in derived if p.user_id in population.train]   # mirrors go to training users only
    write_atomic(out / "users.json", json.dumps({"train_pool": sorted(population.train),
                                                 "held_out": [asdict(e) for e in population.held_out]}, indent=1))

    users_for = _user_sides(config.user, data)
    eval_users_for = users_for if config.eval_user in (None, config.user) else _user_sides(config.eval_user, data)
    scorer = load_scorer(config.scorer, data)
    rewriter = load_role("rewriter", config.rewriter, ModelRewriter)
    judge = load_role("judge", config.judge, ModelJudge, data=data)
    pair_judge = load_judge(config.judge, data) if config.mirrors else None   # the same --judge, comparing two answers
    logged = _with_intent(train)

    anchors = None
    if config.anchors:
        with progress("checked anchors: the initial policy answers training tasks", 1) as advance:
            anchors = checked_anchors(policy_folder(config.policy), population, truth, config, out)
            advance(1)
    rounds = _read_rounds(out)
    if not rounds:
        with progress("evaluating the initial policy", 1) as advance:
            zero = out / "round-0"
            zero.mkdir(exist_ok=True)
            rounds.append({"round": 0, "policy": str(policy_folder(config.policy)),
                           "eval": evaluate(policy_folder(config.policy), eval_users_for, population, truth,
                                            true_personas, config, zero)})
            advance(1)
        _append_round(out, rounds[-1])
    for index in range(len(rounds), config.rounds + 1):
        round_started = time.perf_counter()
        policy = Path(rounds[-1]["policy"])
        folder = out / f"round-{index}"
        if folder.exists():
            shutil.rmtree(folder)   # a round that did not finish is done again
        folder.mkdir()
        episodes = round_episodes(population, index, config.users, config.seed)
        counts: Counter = Counter()
        with progress(f"round {index}: interaction", 1) as advance:
            if config.baseline == "logged":
                wanted = {e.user_id for e in episodes}
                conversations = [c for user_id in sorted(wanted) for c in logged[user_id]]
            else:
                sampling = GenerationParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                            top_p=config.top_p, seed=config.seed + index)
                conversations = converse(load_model(f"hf:{policy}"), users_for(config.seed + 1000 * index), episodes,
                                         config.turns, sampling, config.persona, f"round{index}")
            advance(1)
        write_jsonl(conversations, folder / "conversations.jsonl")
        labelled = classify(conversations)
        with progress(f"round {index}: pairs", 1) as advance:
            roles_before = {role: Counter(model.counts) for role, model in (("rewriter", rewriter), ("scorer", scorer))}
            guided = guided_pairs(conversations, labelled, personas, rewriter, judge, counts)
            sampled, sampling_numbers = sampled_pairs(policy, conversations, labelled, personas, scorer, config,
                                                      config.users, config.seed + index, counts)
            for role, model in (("rewriter", rewriter), ("scorer", scorer)):
                counts.update({f"{role}_{k.replace(' ', '_')}": n for k, n in (model.counts - roles_before[role]).items()})
            advance(1)
        pairs = guided + [{k: v for k, v in p.items() if k not in ("chosen_score", "rejected_score")} for p in sampled]
        mirrors: list[dict] = []
        if config.mirrors:
            with progress(f"round {index}: mirrors", len(pairs)) as advance:
                mirrors, outcomes = mirror_pairs(pairs, mirror_users, pair_judge, on_progress=advance)
            counts.update({f"mirror_{k.replace(' ', '_')}": n for k, n in outcomes.items()})
            pairs = with_mirrors(pairs, mirrors)
        _write_pairs(pairs, folder)
        training: dict[str, Any] = {"trained": False}
        next_policy = policy
        round_anchors = anchors
        if anchors and config.anchors_refresh and index > 1:
            with progress(f"round {index}: anchors", 1) as advance:
                previous = out / f"round-{index - 1}" / "anchors.jsonl"
                round_anchors = renewed_anchors(policy, previous if previous.is_file() else anchors, population, truth,
                                                config, folder, counts)
                advance(1)
        if pairs:
            dpo = DPOTrainConfig(policy=str(policy), out=str(folder), persona=config.persona, max_steps=config.max_steps,
                                 batch_size=config.batch_size, learning_rate=config.learning_rate, beta=config.beta,
                                 sft_weight=config.sft_weight, anchors=str(round_anchors) if round_anchors else None,
                                 anchor_weight=config.anchor_weight,
                                 logging_steps=max(1, config.max_steps // 8), seed=config.seed + index)
            with progress(f"round {index}: DPO", config.max_steps) as advance:
                reference = policy if config.reference == "previous" else policy_folder(config.policy)
                training = {"trained": True, **run_training(dpo, pairs, str(policy), str(reference), folder,
                                                            _step_progress(advance))}
            next_policy = folder
        with progress(f"round {index}: evaluation", 1) as advance:
            evaluation = evaluate(next_policy, eval_users_for, population, truth, true_personas, config, folder)
            advance(1)
        record = {"round": index, "source": "logged" if config.baseline == "logged" else "simulated",
                  "policy_start": str(policy), "policy": str(next_policy), "users": len(episodes),
                  "conversations": len(conversations), "interaction": {**feedback_counts(labelled), "ends": _ends(conversations)},
                  "pairs": {"guided": len(guided), "sampled": len(sampled), "mirrors": len(mirrors), "total": len(pairs)},
                  "sampling": sampling_numbers, "counts": dict(sorted(counts.items())), "training": training,
                  "eval": evaluation, "seconds": round(time.perf_counter() - round_started, 1)}
        rounds.append(record)
        _append_round(out, record)
    report = _report(config, data, population, rounds, scorer.name, time.perf_counter() - started)
    if anchors:
        report["anchors"] = read_user_json(out / "anchors_report.json", "anchors report")
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_atomic(out / "report.md", report_markdown(report))
    return report


def _user_sides(spec: str, data: Path):
    """``seed -> UserSide``: who plays (``spec``: a user LM, or ``testbed:users``) the users of a set of
    conversations whose seeds derive from ``seed``."""
    if spec == GROUND_TRUTH_USERS:
        scenarios = {s.id: s for split in ("train", "test") for s in testbed_scenarios(data, split).scenarios}
        return lambda seed: UserSide(TestbedUsers(), seed, scenarios)
    user_model = load_model(spec)
    guardrails = GuardrailConfig(avoid_termination_turns=1)   # the opening may not end; any follow-up may
    return lambda seed: UserSide(UserSimulator(user_model, guardrails, dataclasses.replace(DEFAULT_PARAMS, seed=seed)),
                                 seed)


def _step_progress(advance):
    """A trainer's ``(step, total)`` callback that advances a bar by the new steps."""
    done = 0

    def on_step(step: int, total: int) -> None:
        nonlocal done
        advance(step - done)
        done = step

    return on_step


def _default_data() -> Path:
    from userloop.testbed.default import default_data

    return default_data(prepared=True)


def _personas(config: LoopConfig, train, test) -> list[DerivedPersona]:
    """The users' personas: the file's (records with a persona text), or derived offline from each split's own
    conversations (a user in both splits: the test split's last)."""
    if config.personas:
        return [DerivedPersona.from_record(row) for row in persona_records(Path(config.personas))
                if row["persona"] and row["persona"].strip()]
    out: list[DerivedPersona] = []
    for conversations in (train, test):
        out += derived_personas(conversations, label_followups(conversations, None, Counter()), config.min_conversations)
    return out


def _write_pairs(pairs: list[dict], folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(pairs) if pairs else pa.table({}), folder / "pairs.parquet")


def _check_resume(out: Path, config: LoopConfig) -> None:
    """A folder holding another run's config is refused; the same config resumes, and the same with more
    ``rounds`` continues the finished run (the saved config then records the new count)."""
    path = out / "config.json"
    current = asdict(config)
    if path.is_file():
        saved = read_user_json(path, "loop config file")
        if not isinstance(saved, dict):
            raise UserError(f"{path} is not a loop config (a JSON object); give a new --out")
        saved = {k: canonical_spec(k, v) if k in ROLE_FIELDS else v for k, v in saved.items()}  # older spellings
        defaults = asdict(LoopConfig())   # an option newer than the saved config: its default
        changed = sorted(k for k in current if k != "rounds" and saved.get(k, defaults[k]) != current[k])
        if changed:
            raise UserError(f"{out} holds a loop run with a different config ({', '.join(changed)}); give a new --out "
                            "or the same settings to resume")
        if current["rounds"] > saved.get("rounds", 0):
            write_atomic(path, json.dumps(current, indent=2))
    else:
        write_atomic(path, json.dumps(current, indent=2))


def _read_rounds(out: Path) -> list[dict]:
    """The finished rounds in ``rounds.jsonl``; a torn last line (an interrupted write) is dropped, and end
    reasons an older version wrote (``turn_cap``) are renamed to today's (the file is rewritten so)."""
    path = out / "rounds.jsonl"
    if not path.is_file():
        return []
    rounds = []
    for line in path.read_bytes().splitlines():
        try:
            rounds.append(_current_ends(orjson.loads(line)))
        except orjson.JSONDecodeError:
            break
    write_atomic(path, b"".join(orjson.dumps(r) + b"\n" for r in rounds))
    return rounds


def _current_ends(record: dict) -> dict:
    """A round record with the ``ends`` counts of its interaction and evaluation in today's end reasons."""
    for part in ("interaction", "eval"):
        ends = record.get(part, {}).get("ends")
        if isinstance(ends, dict):
            renamed: Counter = Counter()
            for reason, count in ends.items():
                renamed[current_end_reason(reason)] += count
            record[part]["ends"] = dict(renamed)
    return record


def _append_round(out: Path, record: dict) -> None:
    with open(out / "rounds.jsonl", "ab") as f:
        f.write(orjson.dumps(record) + b"\n")


def _report(config: LoopConfig, data: Path, population: LoopUsers, rounds: list[dict], scorer: str,
            seconds: float) -> dict[str, Any]:
    return {"config": asdict(config), "data": str(data),
            "roles": {"policy": str(policy_folder(config.policy)), "final_policy": rounds[-1]["policy"],
                      "user": config.user, "eval_user": config.eval_user or config.user, "scorer": scorer, "rewriter": config.rewriter, "judge": config.judge,
                      "classifier": "offline:classifier",
                      "evaluation": "testbed ground truth: true personas (persona match), task checks (task success); "
                                    + ("held-out users: the testbed users"
                                       if (config.eval_user or config.user) == GROUND_TRUTH_USERS
                                       else f"held-out users simulated by {config.eval_user or config.user}")},
            "source": "logged" if config.baseline == "logged" else "simulated",
            "guard": population.guard, "rounds": rounds,
            "paired_changes_from_round_0": [{"round": r["round"], **paired_change(rounds[0]["eval"]["persona_match_by_user"],
                                                                                   r["eval"]["persona_match_by_user"])}
                                            for r in rounds[1:]],
            "seconds_this_run": round(seconds, 1)}


def pair_counts(pairs: dict[str, int]) -> str:
    """A round's pairs as ``guided + sampled`` (``+ M mirrors`` when it has mirrors)."""
    mirrors = pairs.get("mirrors")
    return f"{pairs['guided']} + {pairs['sampled']}" + (f" + {mirrors} mirrors" if mirrors else "")


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a page: roles, guard, one row per round."""
    roles, guard = report["roles"], report["guard"]
    lines = [f"# rlhi loop ({report['source']} interaction)", "",
             "| role | model |", "|---|---|", *(f"| {k} | {v} |" for k, v in roles.items()), "",
             (f"Guard: {guard['held_out_users']} held-out users (test split, {guard['held_out_persona_texts']} persona texts) "
             f"vs a training pool of {guard['training_pool_users']} train-split users; shared users "
             f"{guard['shared_users']}, shared persona texts {guard['shared_persona_texts']} "
             f"({guard['train_users_left_out_sharing_a_held_out_persona']} training users left out for sharing one)."), "",
             ("| round | pairs (guided + sampled) | DPO loss / reward acc. | persona match (SE) | task success (SE) | "
             "held-out feedback rate (SE) | negative feedback rate | training feedback rate |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        e = r["eval"]
        pairs = pair_counts(r["pairs"]) if "pairs" in r else ""
        train = r.get("training", {})
        loss = f"{train.get('train_loss')} / {train.get('reward_accuracy_mean')}" if train.get("trained") else ""
        interaction = r.get("interaction", {}).get("feedback_rate", "")
        lines.append(f"| {r['round']} | {pairs} | {loss} | {e['persona_match']} ({e['persona_match_se']}) | "
                     f"{e['task_success']} ({e['task_success_se']}) | {e['feedback_rate']} ({e['feedback_rate_se']}) | "
                     f"{e['negative_feedback_rate']} | {interaction} |")
    return "\n".join(lines) + "\n"
