"""Persona-contrastive mirrors of preference pairs (userloop's addition to RLHI; docs/rlhi.md, run 3 parts 2g, 4b).

A user-guided pair says "this user wanted the answer changed this way": the rewrite chosen, the original
rejected. Most feedback asks for the same few changes, so DPO on such pairs alone lowers its loss by moving every
answer that way, whoever asks: the persona in the prompt is not needed. A *mirror* of a pair is the same prompt
and the same two answers for another user whose derived persona prefers the opposite on every axis the feedback
asked to change, with the original chosen; it is kept when a pairwise judge (UserEval's,
:mod:`userloop.rlhi.pairwise_judges`), asked in both orders, finds the original better for this user: a win.
A user-based reward pair (best vs worst sampled answer, no feedback) names no axis: any user with another
persona may get its mirror, and the judge alone decides. With its mirrors, a change is about as often chosen as
rejected, and mostly the persona says which one a user wants. On the testbed this is what made
persona-conditioned DPO beat both the base and persona-agnostic DPO, and the online loop (``rlhi loop
--mirrors``) improve round by round (docs/rlhi.md).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from userloop.rlhi.pairwise_judges import Comparison, pairwise_verdicts
from userloop.rlhi.personas import DerivedPersona
from userloop.rlhi.taxonomy import REASON_PREFERENCE, feedback_reasons


def mirror_pairs(pairs: Sequence[dict[str, Any]], personas: Sequence[DerivedPersona], judge, batch_size: int = 256,
                 on_progress: Callable[[int], None] | None = None) -> tuple[list[dict[str, Any]], Counter]:
    """The mirrors of ``pairs`` (module docstring) and what happened to each pair: ``passed``, ``no style change
    asked`` (its feedback names no style axis, ``taxonomy.REASON_PREFERENCE``), ``no user prefers the opposite``
    or ``judge rejected``.

    The other user is a seeded draw (the conversation id and the pair's index) among ``personas`` with a persona
    text, other than the pair's user; for a pair without feedback (a user-based reward pair, best vs worst of
    sampled answers) any user whose persona text differs from the pair's. ``judge`` compares the two answers for
    that user in both orders (``pairwise_judges.TestbedJudge``: the true persona on the testbed; ``ModelJudge``: a
    chat model given the derived persona). A mirror keeps the pair's feedback and conversation id and takes the other user's id and
    persona."""
    usable = [p for p in personas if p.persona]
    outcomes: Counter = Counter()
    drafts: list[dict[str, Any]] = []
    for i, pair in enumerate(pairs):
        if pair.get("feedback"):
            wanted = dict(REASON_PREFERENCE[r] for r in feedback_reasons(pair["feedback"]) if r in REASON_PREFERENCE)
            if not wanted:
                outcomes["no style change asked"] += 1
                continue
            opposite = [p for p in usable if p.user_id != pair["user_id"]
                        and all(getattr(p, axis) not in (None, value) for axis, value in wanted.items())]
        else:   # a user-based reward pair: no axis is named, the judge alone decides
            opposite = [p for p in usable if p.user_id != pair["user_id"] and p.persona != pair["persona"]]
        if not opposite:
            outcomes["no user prefers the opposite"] += 1
            continue
        other = random.Random(f"{pair['conversation_id']}-{i}").choice(opposite)
        drafts.append({**pair, "user_id": other.user_id, "persona": other.persona,
                       "chosen": pair["rejected"], "rejected": pair["chosen"]})
    if on_progress is not None:
        on_progress(len(pairs) - len(drafts))
    mirrors = []
    for start in range(0, len(drafts), batch_size):
        batch = drafts[start:start + batch_size]
        shown = [(d["chosen"][0]["content"], d["rejected"][0]["content"]) for d in batch]
        original_first = judge.compare([Comparison(d["user_id"], d["persona"], d["prompt"], original, edit)
                                        for d, (original, edit) in zip(batch, shown, strict=True)], personalised=True)
        edit_first = judge.compare([Comparison(d["user_id"], d["persona"], d["prompt"], edit, original)
                                    for d, (original, edit) in zip(batch, shown, strict=True)], personalised=True)
        for draft, verdict in zip(batch, pairwise_verdicts(original_first, edit_first), strict=True):
            outcomes["passed" if verdict == 1.0 else "judge rejected"] += 1
            if verdict == 1.0:
                mirrors.append(draft)
        if on_progress is not None:
            on_progress(len(batch))
    return mirrors, outcomes


def with_mirrors(pairs: Sequence[dict[str, Any]], mirrors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``pairs`` then ``mirrors``, each row with its ``mirror`` flag (the pairs files' ``mirror`` column)."""
    return [{**p, "mirror": False} for p in pairs] + [{**m, "mirror": True} for m in mirrors]
