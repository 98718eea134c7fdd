"""RLHI part 2 ablations on the testbed: what the persona, the user's feedback and DPO each contribute.

    python benchmarks/rlhi_ablations.py --work /tmp/rlhi2/ablations [--base CKPT] [--seeds 0 1] [--max-steps 150]
        [--online] [--persona-swap] [--task-success]

Steps (each reuses its output when it is already in ``--work``):

1. ``userloop rlhi build`` on the default testbed: follow-ups, derived personas, user-guided pairs.
2. The base policy (unless ``--base``): ``rlhi policy-data`` (the prepared testbed with each user's derived
   persona as a system message) and ``userloop train assistant`` on it (defaults: 300 updates).
3. Pair sets, from users of the ``train`` split only (held-out users never reach training):
   * ``guided``: part 1's user-guided rewrites (rewrite = chosen, original = rejected);
   * ``scratch``: rewrites of the same originals without the feedback: the testbed rewriter changes one
     style axis chosen at random (what it would do told only "improve this"), then the same quality
     filter as part 1 (the true persona-match score must rise).
   * ``edited``: the user-guided rewrites made by the testbed editor (``rlhi build --rewriter testbed:editor``,
     ``WORK/run-edited``): the original with only what the feedback asks for changed; same filter.
   * ``minimal`` (a diagnostic, not RLHI's data): each guided pair's feedback applied by the testbed rewriter
     (chosen) against the original's own style re-rendered by it (rejected), with the same random draws, so the
     two differ in what the user asked for and little else (the guided pairs also differ in every random
     surface choice: opener, closer, filler order, length within its band); same quality filter.
   * ``onpolicy``: each guided pair's logged feedback applied by the testbed editor to the base policy's own
     greedy answer to the same prompt (persona in the system message): chosen = the edited answer, rejected =
     the policy's answer; same filter (``WORK/pairs-onpolicy.parquet``, built only when a policy needs it).
   * ``mirrored``: the ``edited`` pairs plus their mirrors (``rlhi build --mirrors``, ``userloop.rlhi.mirrors``):
     each with the derived persona of another train-split user who prefers the opposite on the asked axes,
     original chosen and edit rejected, kept when that user's true persona agrees (the testbed judge); every
     style change is then about as often chosen as rejected.
   * ``onpolicy-mirrored``: the ``onpolicy`` pairs plus their mirrors, as for ``mirrored``.
   * ``unfiltered``: the guided rewrites without the quality filter: ``rlhi build --judge scripted:FILE`` with
     a judge that accepts every rewrite that changed the answer (``WORK/run-unfiltered``).
   * ``top10``: the guided pairs of the 10 users with the most ``train`` conversations; ``many``: as many
     guided pairs drawn at random from all users (seeded): the paper's user-diversity ablation.
   * The paper's ablations on the ``mirrored`` pairs (each built like ``mirrored``, from the editor's pairs, and
     only when a policy asks for it):
     ``scratch-mirrored`` (each edit pair's original edited by the testbed editor toward one style axis drawn at
     random instead of the user's feedback, the same quality filter, then mirrored along the drawn axis);
     ``unfiltered-mirrored`` (``rlhi build --rewriter testbed:editor`` with the accept-all judge, and every
     mirror drafted for a user who prefers the opposite kept unjudged: no quality filter anywhere);
     ``top10-mirrored`` (the edit pairs of the 10 users with the most ``train`` conversations, mirrored among
     those 10 users' personas only); ``many-mirrored`` (as many edit pairs drawn at random from all users,
     mirrored among all, its mirrors cut at random to ``top10-mirrored``'s number).
4. Policies, each trained from the base with the same steps, learning rate and seed:
   ``dpo`` (guided, persona in the system message), ``dpo-agnostic`` (guided, no persona),
   ``dpo-scratch`` (scratch, persona); ``dpo-edited``, ``dpo-minimal``, ``dpo-mirrored``, ``dpo-onpolicy`` and
   ``dpo-onpolicy-mirrored`` (those pairs, persona) and their ``-agnostic`` twins (no persona); ``sft-chosen`` and
   ``sft-mirrored`` (SFT on the guided or mirrored pairs' chosen answers, persona),
   ``dpo-unfiltered``, ``dpo-top10`` and ``dpo-many`` (those pairs, persona); ``dpo-mirrored-scratch``,
   ``dpo-mirrored-unfiltered``, ``dpo-mirrored-top10`` and ``dpo-mirrored-many`` (those pairs, persona);
   ``dpo-mirrored-anchored`` (the mirrored pairs, persona, plus ``--anchor-weight`` x the NLL of ``--anchors``'
   checked anchors: ``train dpo --anchors``; over seeds also against ``dpo-mirrored``); with
   ``--online`` also ``online`` and ``online-agnostic``: online iterative DPO (``train dpo --online``:
   ``--online-rounds`` rounds of ``--online-requests`` train-split requests without feedback, 4 samples each,
   scored by the testbed scorer, best vs worst, ``--online-max-steps`` updates per round), with and without
   the persona in the system message.
5. Evaluation on held-out users (the ``test`` split, users never seen in training): the opening request of
   each conversation (150 drawn at random by default, of 371), with the user's derived persona in the system message, greedy
   answers (or, with ``--eval-temperature T``, ``--eval-samples`` answers per request sampled at T, top_p 0.9, a
   request's score being their mean).
   Per policy: the mean TRUE persona-match score (testbed scorer) with its standard error, the paired
   difference from the base with its standard error, and UserEval win rates against the base
   (``userloop.rlhi.usereval``: testbed judge, both orders, ties half; personalisation and overall).
   With ``--persona-swap`` each policy also answers every request that has a persona with ANOTHER held-out
   user's persona (a seeded draw of a different persona), scored under the true persona of the asker: a policy that
   personalises scores higher with the right persona (paired difference and SE; share of answers changed; per
   axis over all swaps and over the swaps whose two personas differ on that axis). ``--only`` with no name
   evaluates the base alone (e.g. ``--base CKPT --only --persona-swap`` for a checkpoint); ``--extra NAME=FOLDER``
   adds policies trained elsewhere (e.g. the last round of ``rlhi loop`` runs, ``NAME-seedK`` for seeds). With
   ``--task-success`` each policy also answers every request's task in full (the first task of the request's
   conversation, its shards in one turn, greedy, the same persona) and the task's check is applied
   (``rlhi.tasks.passes``, as ``rlhi loop`` measures task success): the share passed, its paired difference
   from the base, and over seeds as below.
6. A pair diagnostic (no training): for the guided pairs, the gain of the chosen answer over the rejected one
   under the pair's user's TRUE persona and under the population mean of all true personas (the UserEval
   "overall" score), and the share of pairs whose chosen answer also wins for the population: how much of
   what the pairs teach is a global style rather than this user's.

Writes ``--work/ablations.json`` and prints a Markdown table; the libraries' warnings go to ``--work/log.txt``. With several ``--seeds`` each policy is
trained once per seed (the base and the pairs are shared) and is a row of its own (``NAME-seedK``);
``over_seeds`` then gives each policy's paired difference from the base, a persona-conditioned policy's
from its agnostic twin, and an ablated policy's from what it ablates (``ABLATED``: e.g. ``dpo-mirrored minus
sft-mirrored``), averaged over the seeds, with a 95% bootstrap interval over the requests, the t interval over
the seeds, and whether every seed is positive. The paper's ablations on mirrored pairs (docs/rlhi.md run 3
part 3b), one command: ``--only dpo-mirrored sft-mirrored dpo-mirrored-scratch dpo-mirrored-unfiltered
dpo-mirrored-top10 dpo-mirrored-many --seeds 0 1 2 --max-steps 64 --max-requests 0 --max-new-tokens 192
--task-success``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from userloop.logs import library_log
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.dpo import DPOTrainConfig, read_pairs, train_dpo
from userloop.rlhi.personas import PREFERENCE_FIELDS
from userloop.rlhi.tasks import passes
from userloop.testbed.default import default_data

# A request to change one style axis, in words the testbed rewriter reads (taxonomy.REASON_CUES).
STYLE_REQUESTS = {
    "too_long": "shorter", "too_short": "more detail", "wants_structure": "as a list", "wants_prose": "as a paragraph",
    "too_casual": "more formal", "too_formal": "more casual", "too_technical": "simpler", "too_simple": "more technical",
}
POLICIES = {  # name: (pairs, method, persona)
    "dpo": ("guided", "dpo", True),
    "dpo-agnostic": ("guided", "dpo", False),
    "dpo-scratch": ("scratch", "dpo", True),
    "dpo-edited": ("edited", "dpo", True),
    "dpo-edited-agnostic": ("edited", "dpo", False),
    "dpo-minimal": ("minimal", "dpo", True),
    "dpo-minimal-agnostic": ("minimal", "dpo", False),
    "dpo-mirrored": ("mirrored", "dpo", True),
    "dpo-mirrored-agnostic": ("mirrored", "dpo", False),
    "dpo-onpolicy-mirrored": ("onpolicy-mirrored", "dpo", True),
    "dpo-onpolicy-mirrored-agnostic": ("onpolicy-mirrored", "dpo", False),
    "dpo-onpolicy": ("onpolicy", "dpo", True),
    "dpo-onpolicy-agnostic": ("onpolicy", "dpo", False),
    "sft-chosen": ("guided", "sft", True),
    "sft-mirrored": ("mirrored", "sft", True),
    "dpo-unfiltered": ("unfiltered", "dpo", True),
    "dpo-top10": ("top10", "dpo", True),
    "dpo-many": ("many", "dpo", True),
    "dpo-mirrored-scratch": ("scratch-mirrored", "dpo", True),
    "dpo-mirrored-unfiltered": ("unfiltered-mirrored", "dpo", True),
    "dpo-mirrored-top10": ("top10-mirrored", "dpo", True),
    "dpo-mirrored-many": ("many-mirrored", "dpo", True),
    "dpo-mirrored-anchored": ("mirrored", "dpo", True),
    "online": ("online", "dpo", True),
    "online-agnostic": ("online", "dpo", False),
}
OFFLINE = ("dpo", "dpo-agnostic", "dpo-scratch", "sft-chosen", "dpo-unfiltered", "dpo-top10", "dpo-many")
ABLATED = {  # the paper's ablations: policy -> the policy it ablates (over_seeds reports "REFERENCE minus POLICY")
    "dpo-scratch": "dpo", "sft-chosen": "dpo", "dpo-unfiltered": "dpo", "dpo-top10": "dpo-many",
    "dpo-mirrored-scratch": "dpo-mirrored", "sft-mirrored": "dpo-mirrored", "dpo-mirrored-unfiltered": "dpo-mirrored",
    "dpo-mirrored-top10": "dpo-mirrored-many",
}
ADDS_TO = {"dpo-mirrored-anchored": "dpo-mirrored"}  # policy -> the policy it adds a term to ("POLICY minus IT")
ACCEPT_ALL = ['{"addresses_feedback": true}']  # the judge of the unfiltered build: every changed rewrite passes
FREQUENT_USERS = 10
MIRRORED_ABLATIONS = ("scratch-mirrored", "unfiltered-mirrored", "top10-mirrored", "many-mirrored")
BOOTSTRAP = 2000


def userloop(*args: str) -> None:
    command = [str(Path(sys.executable).parent / "userloop"), *args]
    print("$ userloop " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def train_users(data: Path) -> Counter:
    """Conversations per user of the ``train`` split."""
    from userloop.conversation import read_parquet

    return Counter(c.user_id for c in read_parquet(data / "train.parquet") if c.user_id)


def write_rows(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def scratch_rewrites(guided: list[dict], data: Path, seed: int, editor: bool = False) -> tuple[list[dict], dict]:
    """The ``scratch`` pairs: each guided pair's original rewritten without its feedback (module docstring); with
    ``editor``, edited by the testbed editor (``scratch-mirrored``), each row keeping the drawn request as its
    ``feedback`` so that its mirrors are drawn along the axis it changed."""
    from userloop.rlhi.followups import FollowUp, Labels
    from userloop.rlhi.rewrites import Candidate, ScorerJudge, TestbedEditor, TestbedRewriter, rewrite_and_filter
    from userloop.testbed import read_truth
    from userloop.testbed.population import truth_folder

    rng = random.Random(seed)
    users, _ = read_truth(truth_folder(data))
    judge = ScorerJudge({user_id: record["persona"] for user_id, record in users.items()})
    rewriter = TestbedEditor() if editor else TestbedRewriter()
    candidates = []
    for i, pair in enumerate(guided):
        request = STYLE_REQUESTS[rng.choice(sorted(STYLE_REQUESTS))]
        original = pair["rejected"][0]["content"]
        followup = FollowUp(pair["conversation_id"], pair["user_id"], i, request, original, pair["prompt"][-1]["content"])
        candidates.append(Candidate(followup, Labels("re_attempt", "make_aware_with_correction", request),
                                    pair["prompt"], original))
    results = rewrite_and_filter(candidates, [p["persona"] for p in guided], rewriter, judge)
    outcomes = Counter(r.why for r in results)
    rows = [{**pair, "chosen": [{"role": "assistant", "content": r.rewrite}],
             "feedback": r.candidate.followup.text if editor else None}
            for pair, r in zip(guided, results, strict=True) if r.accepted]
    return rows, dict(outcomes)


def minimal_pairs(guided: list[dict], data: Path) -> tuple[list[dict], dict]:
    """The ``minimal`` pairs (a diagnostic, not RLHI's data): each guided pair's feedback applied by the testbed
    rewriter (chosen) and the original's own measured style re-rendered by it (rejected), both from the
    original's substance with the same random draws, so the two differ in what the feedback asked for and
    little else; kept when the chosen answer scores higher under the user's TRUE persona (part 1's filter)."""
    from userloop.rlhi.followups import FollowUp, Labels
    from userloop.rlhi.pairwise_judges import TestbedJudge
    from userloop.rlhi.rewrites import Candidate, TestbedRewriter, measured_style

    judge = TestbedJudge.from_data(data)
    rewriter = TestbedRewriter()
    outcomes: Counter = Counter()
    rows = []
    for i, pair in enumerate(guided):
        original = pair["rejected"][0]["content"]
        keep = "as a list" if measured_style(original).structure == "list" else "as a paragraph"  # changes nothing
        rendered = []
        for request in (pair["feedback"] or "", keep):  # the same conversation id and index: the same draws
            followup = FollowUp(pair["conversation_id"], pair["user_id"], i, request, original, pair["prompt"][-1]["content"])
            candidate = Candidate(followup, Labels("re_attempt", "make_aware_with_correction", request), pair["prompt"], original)
            rendered.append(rewriter.rewrite([candidate], [pair["persona"]])[0])
        chosen, rejected = rendered
        if chosen is None or rejected is None:
            outcomes["no style change asked"] += 1
        elif judge.personal_score(pair["user_id"], chosen) <= judge.personal_score(pair["user_id"], rejected):
            outcomes["chosen not better"] += 1
        else:
            outcomes["passed"] += 1
            rows.append({**pair, "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})
    return rows, dict(outcomes)


def onpolicy_pairs(guided: list[dict], base: Path, data: Path, max_new_tokens: int) -> tuple[list[dict], dict]:
    """The ``onpolicy`` pairs: each guided pair's logged feedback applied by the testbed editor to the BASE
    POLICY's own greedy answer to the same prompt (persona in the system message, as served): chosen = the
    edited answer, rejected = the policy's answer; same quality filter as part 1 (the true persona-match score
    must rise). Prompts too long for the policy's context with ``max_new_tokens`` are skipped and counted."""
    from types import SimpleNamespace

    from userloop.models import load_model
    from userloop.rlhi.dpo import fitting_requests
    from userloop.rlhi.followups import FollowUp, Labels
    from userloop.rlhi.rewrites import Candidate, ScorerJudge, TestbedEditor, rewrite_and_filter
    from userloop.rlhi.user_rewards import sample_candidates

    outcomes: Counter = Counter()
    requests = [SimpleNamespace(prompt=p["prompt"], persona=p["persona"], pair=p) for p in guided]
    kept = fitting_requests(requests, str(base), max_new_tokens, persona=True, counts=outcomes)
    model = load_model(f"hf:{base}")
    answers = [texts[0] for texts in sample_candidates(model, [with_persona(r.prompt, r.persona) for r in kept], n=1,
                                                      temperature=0.0, top_p=None, max_new_tokens=max_new_tokens)]
    candidates = []
    for i, (request, answer) in enumerate(zip(kept, answers, strict=True)):
        pair = request.pair
        feedback = pair["feedback"] or ""
        followup = FollowUp(pair["conversation_id"], pair["user_id"], i, feedback, answer, pair["prompt"][-1]["content"])
        candidates.append(Candidate(followup, Labels("re_attempt", "make_aware_with_correction", feedback), pair["prompt"], answer))
    results = rewrite_and_filter(candidates, [r.persona for r in kept], TestbedEditor(), ScorerJudge.from_data(data))
    outcomes.update(r.why for r in results)
    rows = [{**request.pair, "chosen": [{"role": "assistant", "content": r.rewrite}],
             "rejected": [{"role": "assistant", "content": r.candidate.original}]}
            for request, r in zip(kept, results, strict=True) if r.accepted]
    return rows, dict(outcomes)


class KeepOriginal:
    """A pairwise judge that always prefers the original answer of an edit pair, so every mirror drafted for a
    user who prefers the opposite is kept: the mirrors without their quality filter (``unfiltered-mirrored``)."""

    def __init__(self, pairs: list[dict]):
        self.originals = {pair["rejected"][0]["content"] for pair in pairs}

    def compare(self, items: list, personalised: bool) -> list[str]:
        return ["A" if item.first in self.originals else "B" for item in items]


def mirrored_pairs(pairs: list[dict], personas: Path, users: Counter, data: Path,
                   filtered: bool = True) -> tuple[list[dict], dict]:
    """The mirrors of edit pairs (``edited``, ``onpolicy``): ``rlhi build --mirrors`` (``rlhi.mirrors``) among
    the derived personas of ``users`` (``train``-split users), judged by the testbed judge (the user's TRUE
    persona, as part 1's filter), or with ``filtered=False`` all kept (``KeepOriginal``)."""
    from userloop.data.personas import persona_records
    from userloop.rlhi.mirrors import mirror_pairs
    from userloop.rlhi.pairwise_judges import TestbedJudge
    from userloop.rlhi.personas import DerivedPersona

    derived = [DerivedPersona.from_record(record) for record in persona_records(personas) if str(record["user_id"]) in users]
    rows, outcomes = mirror_pairs(pairs, derived, TestbedJudge.from_data(data) if filtered else KeepOriginal(pairs))
    return rows, dict(outcomes)


def unfiltered_pairs(work: Path, name: str, users: Counter, *build_args: str) -> list[dict]:
    """The pairs of ``rlhi build BUILD_ARGS`` with the accept-all judge (no quality filter), built once into
    ``WORK/NAME``, of the ``train``-split ``users`` only."""
    out = work / name
    if not (out / "pairs.parquet").is_file():
        accept_all = work / "accept-all.json"
        accept_all.write_text(json.dumps(ACCEPT_ALL))
        userloop("rlhi", "build", *build_args, "--judge", f"scripted:{accept_all}", "--out", str(out))
    return [p for p in read_pairs(out / "pairs.parquet") if p["user_id"] in users]


def most_frequent(users: Counter) -> set[str]:
    """The ``FREQUENT_USERS`` users with the most ``train`` conversations (ties by id)."""
    return {user for user, _ in sorted(users.items(), key=lambda item: (-item[1], item[0]))[:FREQUENT_USERS]}


def mirrored_ablation_pairs(run: Path, data: Path, work: Path, seed: int) -> dict:
    """The paper's ablations on the ``mirrored`` pairs (module docstring, step 3), from ``WORK/pairs-edited``: writes
    ``pairs-scratch-mirrored``, ``pairs-unfiltered-mirrored``, ``pairs-top10-mirrored`` and ``pairs-many-mirrored``;
    returns their counts. Built only when a policy asks for one of them (``MIRRORED_ABLATIONS``)."""
    users, personas = train_users(data), run / "personas.jsonl"
    edited, frequent = read_pairs(work / "pairs-edited.parquet"), most_frequent(users)
    counts: dict = {}
    scratch, scratch_outcomes = scratch_rewrites(edited, default_data(prepared=False), seed, editor=True)
    mirrors, outcomes = mirrored_pairs(scratch, personas, users, data)
    write_rows([{**row, "feedback": None} for row in scratch + mirrors], work / "pairs-scratch-mirrored.parquet")
    counts["scratch-mirrored"] = {"pairs": len(scratch) + len(mirrors), "edits": len(scratch),
                                  "edit_outcomes": scratch_outcomes, "mirrors": outcomes}
    unfiltered = unfiltered_pairs(work, "run-edited-unfiltered", users, "--rewriter", "testbed:editor")
    mirrors, outcomes = mirrored_pairs(unfiltered, personas, users, data, filtered=False)
    write_rows(unfiltered + mirrors, work / "pairs-unfiltered-mirrored.parquet")
    counts["unfiltered-mirrored"] = {"pairs": len(unfiltered) + len(mirrors), "edits": len(unfiltered), "mirrors": outcomes}
    top = [p for p in edited if p["user_id"] in frequent]
    top_mirrors, outcomes = mirrored_pairs(top, personas, Counter({u: users[u] for u in frequent}), data)
    write_rows(top + top_mirrors, work / "pairs-top10-mirrored.parquet")
    counts["top10-mirrored"] = {"pairs": len(top) + len(top_mirrors), "edits": len(top), "mirrors": outcomes,
                                "users": len({p["user_id"] for p in top + top_mirrors}),
                                "distinct_personas": len({p["persona"] for p in top + top_mirrors})}
    rng = random.Random(seed)
    many = rng.sample(edited, len(top))
    many_mirrors, outcomes = mirrored_pairs(many, personas, users, data)
    many_mirrors = rng.sample(many_mirrors, min(len(many_mirrors), len(top_mirrors)))
    write_rows(many + many_mirrors, work / "pairs-many-mirrored.parquet")
    counts["many-mirrored"] = {"pairs": len(many) + len(many_mirrors), "edits": len(many), "mirrors": outcomes,
                               "mirrors_kept": len(many_mirrors), "users": len({p["user_id"] for p in many + many_mirrors}),
                               "distinct_personas": len({p["persona"] for p in many + many_mirrors})}
    return counts


def prepare_pairs(run: Path, data: Path, work: Path, seed: int) -> dict:
    """Every pair set of step 3, from ``train``-split users only; returns their counts."""
    users = train_users(data)
    pairs = read_pairs(run / "pairs.parquet")
    guided = [p for p in pairs if p["user_id"] in users]
    write_rows(guided, work / "pairs-guided.parquet")
    scratch, outcomes = scratch_rewrites(guided, default_data(prepared=False), seed)
    write_rows(scratch, work / "pairs-scratch.parquet")
    minimal, minimal_outcomes = minimal_pairs(guided, default_data(prepared=False))
    write_rows(minimal, work / "pairs-minimal.parquet")
    edited_run = work / "run-edited"
    if not (edited_run / "pairs.parquet").is_file():
        userloop("rlhi", "build", "--rewriter", "testbed:editor", "--out", str(edited_run))
    edited = [p for p in read_pairs(edited_run / "pairs.parquet") if p["user_id"] in users]
    write_rows(edited, work / "pairs-edited.parquet")
    mirrors, mirror_outcomes = mirrored_pairs(edited, run / "personas.jsonl", users, data)
    write_rows(edited + mirrors, work / "pairs-mirrored.parquet")
    unfiltered = unfiltered_pairs(work, "run-unfiltered", users)
    write_rows(unfiltered, work / "pairs-unfiltered.parquet")
    frequent = most_frequent(users)
    top = [p for p in guided if p["user_id"] in frequent]
    write_rows(top, work / "pairs-top10.parquet")
    many = random.Random(seed).sample(guided, len(top))
    write_rows(many, work / "pairs-many.parquet")
    return {"all": len(pairs), "held_out_users_dropped": len(pairs) - len(guided), "guided": len(guided),
            "guided_with_persona": sum(bool(p["persona"]) for p in guided), "scratch": len(scratch),
            "scratch_outcomes": outcomes, "minimal": len(minimal), "minimal_outcomes": minimal_outcomes,
            "edited": len(edited), "mirrored": {"pairs": len(edited) + len(mirrors), "mirrors": mirror_outcomes},
            "unfiltered": len(unfiltered),
            "top10": {"pairs": len(top), "users": len({p["user_id"] for p in top}),
                      "conversations_per_user": sorted((users[u] for u in frequent), reverse=True),
                      "distinct_personas": len({p["persona"] for p in top})},
            "many": {"pairs": len(many), "users": len({p["user_id"] for p in many}),
                     "distinct_personas": len({p["persona"] for p in many})}}


def pair_diagnostic(guided: list[dict], data: Path) -> dict:
    """How persona-specific the guided pairs are (module docstring, step 6), under the TRUE personas."""
    from userloop.rlhi.pairwise_judges import TestbedJudge

    judge = TestbedJudge.from_data(data)
    personal, overall = [], []
    for pair in guided:
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        personal.append(judge.personal_score(pair["user_id"], chosen) - judge.personal_score(pair["user_id"], rejected))
        overall.append(judge.overall_score(chosen) - judge.overall_score(rejected))
    return {"pairs": len(guided), "mean_gain_own_persona": mean(personal), "mean_gain_population": mean(overall),
            "share_chosen_wins_for_population": mean([float(g > 0) for g in overall]),
            "share_chosen_loses_for_population": mean([float(g < 0) for g in overall])}


def swapped_personas(requests: list, seed: int) -> list[str | None]:
    """For every request with a persona, another request's different persona (seeded); None where it has none."""
    rng = random.Random(seed)
    texts = [r.persona for r in requests if r.persona]
    out = []
    for r in requests:
        others = [t for t in texts if t != r.persona]
        out.append(rng.choice(others) if r.persona and others else None)
    return out


def axis_differences(judge, user_ids: list[str], right: list[list[str]], swapped: list[list[str]],
                     differing: list[set[str]]) -> dict[str, dict[str, float]]:
    """Per preference axis, the mean fit (true persona) of the right-persona answers minus the swapped ones' (each
    averaged over a request's samples): over all swaps (``all``) and over the swaps whose two derived personas
    differ on that axis (``differing``, with their count ``n``), where a policy that reads the persona has
    something to change."""
    from userloop.testbed.persona_match import score_components

    def fits(persona, texts: list[str]) -> dict[str, float]:
        per_text = [score_components(persona, text) for text in texts]
        return {axis: sum(f[axis] for f in per_text) / len(per_text) for axis in per_text[0]}

    diffs: dict[str, list[float]] = {}
    where: dict[str, list[float]] = {}
    for user_id, a, b, axes in zip(user_ids, right, swapped, differing, strict=True):
        persona = judge.true_personas[user_id]
        fits_a, fits_b = fits(persona, a), fits(persona, b)
        for axis in fits_a:
            diffs.setdefault(axis, []).append(fits_a[axis] - fits_b[axis])
            if axis in axes:
                where.setdefault(axis, []).append(fits_a[axis] - fits_b[axis])
    return {axis: {"all": mean(values), "differing": mean(where[axis]) if where.get(axis) else None,
                   "differing_se": stderr(where[axis]) if len(where.get(axis, [])) > 1 else None,
                   "n": len(where.get(axis, []))} for axis, values in diffs.items()}


def axes_that_differ(swaps: list[tuple[str, str]], personas: Path) -> list[set[str]]:
    """For each (right, swapped) persona text, the preference fields on which their records in ``personas`` differ."""
    from userloop.data.personas import persona_records

    fields: dict[str, dict] = {}
    for record in persona_records(personas):
        fields.setdefault(record["persona"], record)
    return [{axis for axis in PREFERENCE_FIELDS if fields[right].get(axis) != fields[other].get(axis)}
            for right, other in swaps]


def evaluate(policies: dict[str, Path], run: Path, data: Path, max_requests: int, max_new_tokens: int,
             persona_swap: bool = False, samples: int = 1, temperature: float = 0.0, task_success: bool = False) -> dict:
    """Every policy's answers to the held-out opening requests (greedy, or ``samples`` answers each at
    ``temperature`` with top_p 0.9 and seed 0, a request's score being the mean over them); scores, paired
    differences, win rates (sample k of a policy against sample k of the base)."""
    from userloop.models import load_model
    from userloop.rlhi.pairwise_judges import Comparison, TestbedJudge
    from userloop.rlhi.user_rewards import sample_candidates
    from userloop.rlhi.usereval import UserEvalConfig, judge_both_orders, opening_requests

    counts: Counter = Counter()
    config = UserEvalConfig(policy="hf:x", baseline="hf:x", personas=run / "personas.jsonl", max_requests=max_requests)
    requests = opening_requests(data, config, counts)
    judge = TestbedJudge.from_data(data)
    prompts = [with_persona(r.prompt, r.persona) for r in requests]
    swaps = swapped_personas(requests, seed=0) if persona_swap else []
    swapped = [i for i, persona in enumerate(swaps) if persona]
    swap_prompts = [with_persona(requests[i].prompt, swaps[i]) for i in swapped]
    differing = axes_that_differ([(requests[i].persona, swaps[i]) for i in swapped], run / "personas.jsonl") if persona_swap else []
    decoding = ({"n": 1, "temperature": 0.0, "top_p": None} if temperature == 0.0
                else {"n": samples, "temperature": temperature, "top_p": 0.9, "seed": 0})
    tasks = [truth_tasks(data)[r.conversation_id] for r in requests] if task_success else []
    task_prompts = [with_persona([{"role": "user", "content": t["full_request"]}], r.persona) for r, t in zip(requests, tasks)]
    answers, swap_answers, solved = {}, {}, {}   # per policy: one list of answers per request; tasks passed
    for name, path in policies.items():
        started = time.perf_counter()
        model = load_model(f"hf:{path}")
        answers[name] = sample_candidates(model, prompts, max_new_tokens=max_new_tokens, **decoding)
        if persona_swap:
            swap_answers[name] = sample_candidates(model, swap_prompts, max_new_tokens=max_new_tokens, **decoding)
        if task_success:
            full = sample_candidates(model, task_prompts, max_new_tokens=max_new_tokens, n=1, temperature=0.0, top_p=None)
            solved[name] = [float(passes(t, texts[0])) for t, texts in zip(tasks, full, strict=True)]
        print(f"answered with {name} in {time.perf_counter() - started:.0f}s", flush=True)

    def score(user_id: str, texts: list[str]) -> float:
        return sum(judge.personal_score(user_id, text) for text in texts) / len(texts)

    scores = {name: [score(r.user_id, texts) for r, texts in zip(requests, per_request, strict=True)]
              for name, per_request in answers.items()}
    out = {"requests": dict(counts), "requests_used": len(requests), "policies": {}}
    base = scores["base"]
    for name, values in scores.items():
        row = {"mean_persona_match": mean(values), "se": stderr(values),
               "mean_words": mean([len(a.split()) for texts in answers[name] for a in texts])}
        if name != "base":
            diff = [v - b for v, b in zip(values, base, strict=True)]
            row |= {"diff_vs_base": mean(diff), "diff_se": stderr(diff)}
            items = [(Comparison(r.user_id, r.persona, r.prompt, p, b), Comparison(r.user_id, r.persona, r.prompt, b, p))
                     for r, mine, theirs in zip(requests, answers[name], answers["base"], strict=True)
                     for p, b in zip(mine, theirs, strict=True)]
            row["win_rate_personal"] = judge_both_orders(judge, items, personalised=True)["summary"]
            row["win_rate_overall"] = judge_both_orders(judge, items, personalised=False)["summary"]
        if persona_swap:
            right = [values[i] for i in swapped]
            wrong = [score(requests[i].user_id, texts) for i, texts in zip(swapped, swap_answers[name], strict=True)]
            diff = [r - w for r, w in zip(right, wrong, strict=True)]
            row["persona_swap"] = {"requests": len(swapped), "right_persona": mean(right), "swapped_persona": mean(wrong),
                                   "diff": mean(diff), "diff_se": stderr(diff),
                                   "share_answers_changed": mean([float(answers[name][i][0] != texts[0])
                                                                  for i, texts in zip(swapped, swap_answers[name], strict=True)]),
                                   "diff_per_axis": axis_differences(judge, [requests[i].user_id for i in swapped],
                                                                     [answers[name][i] for i in swapped], swap_answers[name],
                                                                     differing)}
        if task_success:
            families = sorted({t["family"] for t in tasks})
            row["task_success"] = {"share": mean(solved[name]), "se": stderr(solved[name]), "per_request": solved[name],
                                   "by_family": {f: [int(sum(v for v, t in zip(solved[name], tasks) if t["family"] == f)),
                                                     sum(t["family"] == f for t in tasks)] for f in families}}
            if name != "base":
                diff = [v - b for v, b in zip(solved[name], solved["base"], strict=True)]
                row["task_success"] |= {"diff_vs_base": mean(diff), "diff_se": stderr(diff)}
        out["policies"][name] = row
    if task_success:
        out["task_success_over_seeds"] = over_seeds(solved)
    out["persona_vs_agnostic"] = {}   # the expectation to check: persona-conditioned over agnostic (per seed)
    for agnostic in [name for name in scores if "-agnostic" in name]:
        conditioned = agnostic.replace("-agnostic", "")
        if conditioned in scores:
            diff = [a - b for a, b in zip(scores[conditioned], scores[agnostic], strict=True)]
            out["persona_vs_agnostic"][f"{conditioned} minus {agnostic}"] = {"diff": mean(diff), "se": stderr(diff)}
    out["over_seeds"] = over_seeds(scores)
    out["examples"] = {name: [texts[0] for texts in per_request[:3]] for name, per_request in answers.items()}
    return out


def truth_tasks(data: Path) -> dict[str, dict]:
    """Each testbed conversation's first task (its truth: full request and check), by conversation id."""
    from userloop.testbed import read_truth
    from userloop.testbed.population import truth_folder

    return {cid: row["tasks"][0] for cid, row in read_truth(truth_folder(data))[1].items()}


def over_seeds(scores: dict[str, list[float]]) -> dict:
    """Per policy trained with several seeds (``NAME-seedK``): its paired difference from the base and, for a
    persona-conditioned policy with an agnostic twin, from the twin, averaged over the seeds. The interval is a
    bootstrap over the requests of the seed-averaged per-request difference; ``seed_interval`` is the t interval
    of the per-seed means (the seed-to-seed spread); ``every_seed_positive`` checks the sign of each seed."""
    groups: dict[str, dict[int, list[float]]] = {}
    for key, values in scores.items():
        name, _, seed = key.rpartition("-seed")
        if name and seed.isdigit():
            groups.setdefault(name, {})[int(seed)] = values
    base = scores["base"]
    out = {}
    for name, by_seed in groups.items():
        if len(by_seed) < 2:
            continue
        out[f"{name} minus base"] = paired_over_seeds({seed: [v - b for v, b in zip(values, base, strict=True)]
                                                       for seed, values in by_seed.items()})
        for minuend, subtrahend in ((name, f"{name}-agnostic"), (ABLATED.get(name), name), (name, ADDS_TO.get(name))):
            first, second = groups.get(minuend or "", {}), groups.get(subtrahend or "", {})
            shared = sorted(set(first) & set(second))
            if len(shared) >= 2:
                out[f"{minuend} minus {subtrahend}"] = paired_over_seeds(
                    {seed: [a - b for a, b in zip(first[seed], second[seed], strict=True)] for seed in shared})
    return out


def paired_over_seeds(diffs: dict[int, list[float]]) -> dict:
    """Summary of per-request paired differences, one list per seed (``over_seeds``)."""
    from scipy.stats import t

    from userloop.statistics import mean_se, mean_with_bootstrap_interval

    per_seed = {seed: sum(d) / len(d) for seed, d in sorted(diffs.items())}
    averaged = [sum(row) / len(row) for row in zip(*diffs.values(), strict=True)]
    centre, interval = mean_with_bootstrap_interval(averaged, BOOTSTRAP, seed=0)
    means = list(per_seed.values())
    half = t.ppf(0.975, len(means) - 1) * mean_se(means)
    return {"seeds": len(means), "per_seed": {str(k): round(v, 4) for k, v in per_seed.items()}, "mean": round(centre, 4),
            "interval": [round(interval[0], 4), round(interval[1], 4)],
            "seed_interval": [round(centre - half, 4), round(centre + half, 4)],
            "every_seed_positive": all(m > 0 for m in means)}


def mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def stderr(values: list[float]) -> float:
    from userloop.statistics import mean_se

    return round(mean_se(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rlhi2/ablations"))
    parser.add_argument("--base", type=Path, help="a trained base policy (default: train one into WORK/base)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-steps", type=int, default=150, help="updates per policy (batch 8)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--sft-weight", type=float, default=0.0,
                        help="weight of an SFT term on the chosen answers in every DPO policy's loss (RPO; 0: plain DPO)")
    parser.add_argument("--max-requests", type=int, default=150, help="held-out requests to answer, drawn at random (seeded; 0: all 371)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--eval-temperature", type=float, default=0.0,
                        help="0: greedy answers; above 0: --eval-samples answers per request at this temperature (top_p 0.9)")
    parser.add_argument("--eval-samples", type=int, default=4, help="answers per request when --eval-temperature > 0")
    parser.add_argument("--anchors", type=Path,
                        help="checked anchors (JSONL; e.g. the out/anchors.jsonl of 'rlhi loop --anchors N' from the same "
                             "base) for the -anchored policies")
    parser.add_argument("--anchor-weight", type=float, default=1.0, help="weight of the anchors' NLL term")
    parser.add_argument("--only", nargs="*", choices=sorted(POLICIES),
                        help="train and evaluate only these policies (none: evaluate the base alone)")
    parser.add_argument("--extra", nargs="+", default=[], metavar="NAME=FOLDER",
                        help="also evaluate these trained policies (e.g. a loop's last round; NAME-seedK groups seeds)")
    parser.add_argument("--online", action="store_true", help="also train and evaluate online iterative DPO, with and without the persona")
    parser.add_argument("--online-rounds", type=int, default=3)
    parser.add_argument("--online-requests", type=int, default=64, help="requests sampled per online round (4 answers each)")
    parser.add_argument("--online-max-steps", type=int, default=8, help="updates per online round (batch 8)")
    parser.add_argument("--task-success", action="store_true",
                        help="also answer each held-out request's task in full (greedy, persona in the system message) "
                             "and apply the task's check (rlhi.tasks.passes)")
    parser.add_argument("--persona-swap", action="store_true",
                        help="also answer with another user's persona and score under the right one (step 5)")
    args = parser.parse_args()
    if any("=" not in item for item in args.extra):
        parser.error("--extra takes NAME=FOLDER pairs")
    if any(name.endswith("-anchored") for name in args.only or ()) and not (args.anchors and args.anchors.is_file()):
        parser.error("the -anchored policies need --anchors FILE (checked anchors, e.g. a loop's out/anchors.jsonl)")
    if args.eval_temperature < 0 or args.eval_samples < 1:
        parser.error("--eval-temperature must be 0 or more and --eval-samples 1 or more")
    args.work.mkdir(parents=True, exist_ok=True)
    with library_log(args.work):  # the libraries' warnings go to WORK/log.txt, not the terminal
        run_ablations(args)


def run_ablations(args: argparse.Namespace) -> None:
    work = args.work
    started = time.perf_counter()
    data = default_data(prepared=True)
    run = work / "run"
    if not (run / "pairs.parquet").is_file():
        userloop("rlhi", "build", "--out", str(run))
    base = args.base or work / "base"
    if not (base / "model.safetensors").is_file():
        userloop("rlhi", "policy-data", "--personas", str(run / "personas.jsonl"), "--out", str(work / "policy_data"))
        userloop("train", "assistant", "--data", str(work / "policy_data"), "--out", str(base))
    pair_counts = prepare_pairs(run, data, work, seed=0)
    if any(POLICIES[name][0] in MIRRORED_ABLATIONS for name in args.only or ()):
        pair_counts |= mirrored_ablation_pairs(run, data, work, seed=0)
    print(json.dumps(pair_counts), flush=True)
    pair_counts["diagnostic"] = pair_diagnostic(read_pairs(work / "pairs-guided.parquet"), data)
    print(json.dumps(pair_counts["diagnostic"]), flush=True)
    onpolicy = work / "pairs-onpolicy.parquet"
    if any(POLICIES[name][0].startswith("onpolicy") for name in args.only or ()):
        if not onpolicy.is_file():
            rows, outcomes = onpolicy_pairs(read_pairs(work / "pairs-guided.parquet"), base, data, args.max_new_tokens)
            write_rows(rows, onpolicy)
            (work / "pairs-onpolicy.json").write_text(json.dumps(outcomes))
        onpolicy_rows = read_pairs(onpolicy)
        pair_counts["onpolicy"] = {"pairs": len(onpolicy_rows),
                                   "outcomes": json.loads((work / "pairs-onpolicy.json").read_text())}
        print(json.dumps(pair_counts["onpolicy"]), flush=True)
        mirrors, outcomes = mirrored_pairs(onpolicy_rows, run / "personas.jsonl", train_users(data), data)
        write_rows(onpolicy_rows + mirrors, work / "pairs-onpolicy-mirrored.parquet")
        pair_counts["onpolicy-mirrored"] = {"pairs": len(onpolicy_rows) + len(mirrors), "mirrors": outcomes}

    trained: dict[str, dict] = {}
    policies = {"base": base}
    for name in args.only if args.only is not None else OFFLINE + (("online", "online-agnostic") if args.online else ()):
        pairs, method, persona = POLICIES[name]
        for seed in args.seeds:
            key = f"{name}-seed{seed}" if len(args.seeds) > 1 else name
            out = work / key
            common = {"policy": str(base), "out": str(out), "persona": persona, "seed": seed,
                      "learning_rate": args.learning_rate, "beta": args.beta,
                      "sft_weight": args.sft_weight if method == "dpo" else 0.0}
            if pairs == "online":
                config = DPOTrainConfig(**common, online=True, rounds=args.online_rounds, requests=args.online_requests,
                                        n=4, scorer="testbed", max_steps=args.online_max_steps,
                                        personas=str(run / "personas.jsonl"), followups=str(run / "followups.jsonl"))
                source = (f"--online --rounds {config.rounds} --requests {config.requests} --n 4 --scorer testbed "
                          f"--personas {config.personas} --followups {config.followups} --max_steps {config.max_steps}")
            else:
                anchors = ({"anchors": str(args.anchors), "anchor_weight": args.anchor_weight}
                           if name.endswith("-anchored") else {})
                config = DPOTrainConfig(**common, **anchors, pairs=str(work / f"pairs-{pairs}.parquet"), method=method,
                                        max_steps=args.max_steps)
                source = f"--pairs {config.pairs} --method {method} --max_steps {args.max_steps}" + "".join(
                    f" --{key} {value}" for key, value in anchors.items())
            print(f"training {key}: userloop train dpo --policy {base} --out {out} {source} --persona {str(persona).lower()} "
                  f"--learning_rate {args.learning_rate} --beta {args.beta} --sft_weight {common['sft_weight']} --seed {seed}",
                  flush=True)
            report = train_dpo(config).report if not (out / "dpo_report.json").is_file() else json.loads((out / "dpo_report.json").read_text())
            trained[key] = report
            policies[key] = out
    policies |= {name: Path(folder) for name, folder in (item.split("=", 1) for item in args.extra)}
    results = evaluate(policies, run, data, args.max_requests, args.max_new_tokens, args.persona_swap,
                       samples=args.eval_samples, temperature=args.eval_temperature, task_success=args.task_success)
    summary = {"date": time.strftime("%Y-%m-%d"), "load": os.getloadavg(), "args": {k: str(v) for k, v in vars(args).items()},
               "pairs": pair_counts, "training": trained, "evaluation": results,
               "seconds": round(time.perf_counter() - started, 1)}
    (work / "ablations.json").write_text(json.dumps(summary, indent=2))
    print_table(results, trained)


def print_table(results: dict, trained: dict) -> None:
    print(f"\nheld-out opening requests: {results['requests_used']}")
    for label, diff in results["persona_vs_agnostic"].items():
        print(f"{label} (paired): {diff['diff']:+.4f} (SE {diff['se']:.4f})")
    for label, row in results["over_seeds"].items():
        print(f"{label} over {row['seeds']} seeds: {row['mean']:+.4f}, 95% interval over requests "
              f"[{row['interval'][0]:+.4f}, {row['interval'][1]:+.4f}], over seeds [{row['seed_interval'][0]:+.4f}, "
              f"{row['seed_interval'][1]:+.4f}]; per seed " + ", ".join(f"{v:+.4f}" for v in row["per_seed"].values()))
    for label, row in results.get("task_success_over_seeds", {}).items():
        print(f"task success, {label} over {row['seeds']} seeds: {row['mean']:+.4f}, 95% interval over requests "
              f"[{row['interval'][0]:+.4f}, {row['interval'][1]:+.4f}], over seeds [{row['seed_interval'][0]:+.4f}, "
              f"{row['seed_interval'][1]:+.4f}]")
    for name, row in results["policies"].items():
        if "task_success" in row:
            t = row["task_success"]
            print(f"task success, {name}: {t['share']:.4f} (SE {t['se']:.4f})"
                  + (f", vs base {t['diff_vs_base']:+.4f} (paired SE {t['diff_se']:.4f})" if "diff_vs_base" in t else ""))
    for name, row in results["policies"].items():
        if "persona_swap" in row:
            swap = row["persona_swap"]
            print(f"persona swap, {name}: right {swap['right_persona']:.4f}, swapped {swap['swapped_persona']:.4f}, "
                  f"diff {swap['diff']:+.4f} (SE {swap['diff_se']:.4f}), answers changed {swap['share_answers_changed']:.2f} "
                  f"of {swap['requests']}; per axis (all swaps / swaps that differ on it) "
                  + ", ".join(f"{k} {v['all']:+.3f} / {v['differing'] if v['differing'] is None else format(v['differing'], '+.3f')}"
                              for k, v in swap["diff_per_axis"].items()))
    print("| policy | mean persona match (SE) | vs base (paired SE) | personalisation win rate vs base | overall win rate | "
          "mean words | DPO reward acc. / margin (train) |")
    print("|---|---|---|---|---|---|---|")
    for name, row in results["policies"].items():
        t = trained.get(name, {})
        diff = f"{row['diff_vs_base']:+.4f} ({row['diff_se']:.4f})" if "diff_vs_base" in row else ""
        wins = [f"{row[k]['win_rate']:.3f}" if k in row else "" for k in ("win_rate_personal", "win_rate_overall")]
        rewards = f"{t['reward_accuracy_mean']:.2f} / {t['reward_margin_mean']:.2f}" if "reward_accuracy_mean" in t else ""
        print(f"| {name} | {row['mean_persona_match']:.4f} ({row['se']:.4f}) | {diff} | {wins[0]} | {wins[1]} | "
              f"{row['mean_words']:.0f} | {rewards} |")


if __name__ == "__main__":
    main()
