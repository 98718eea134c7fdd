"""Replaying real conversations with a simulated user, and behavioural fidelity (beyond the paper).

**Replay** (:func:`replay`): for each held-out real conversation (user and assistant turns
alternating, starting with the user; system messages dropped), the simulator writes the opening turn
from the conversation's intent, and, after each real assistant turn, the next user turn given the
real history up to that turn. The same replay serves two metrics:

* dialogue termination ("Flipping the Dialogue", arXiv 2510.06552, Table 2): after real assistant
  turn k, the predicted end is "the simulator wrote ``<|endconversation|>``", the gold end is "turn k
  was the conversation's last turn". A conversation that stops on an unanswered user turn has no
  observed end: all its decision points are gold "continue" (the real user did write another turn).
* behavioural fidelity: the simulated user's conversation is its opening turn, then its turns after
  each real assistant turn up to the first one that ends. Its number of user turns is the number of
  turns it wrote before ending; a simulator that never ends within the real conversation is
  censored at the real number of assistant turns + 1. Its end turn is the assistant turn after which
  it ended (left out when it did not end). The real user's are the same quantities of the real
  conversation (no end turn for one that stops on a user turn). In a replay the end turn equals the
  number of user turns wherever the user ended: the two differ only in how censored conversations
  count (kept at their cap in one, left out in the other).

A history longer than the simulator's context (a prompt it refuses) is cut from the start, one
user/assistant exchange at a time, until it fits: the simulator then sees the intent and the latest
exchanges, as a deployed user LM with a short context would (counted: ``shortened_histories``).
Only when even the last exchange does not fit does that conversation's replay end there: the
decision points before it are kept for termination (all gold "continue": the real end is not
reached), and the conversation is left out of fidelity. Both are counted in the report.

**Fidelity** (:func:`fidelity_distances`, lower distance is better): Wasserstein-1 distance and
two-sample Kolmogorov-Smirnov statistic between simulated and real distributions of user-turn
length (words), number of user turns and end turn; the absolute difference (percentage points) of the
share of follow-ups carrying feedback (RLHI's offline follow-up classifier,
:mod:`userloop.rlhi.followup_classifier`: a feedback type other than ``none``); and the vocabulary overlap,
the Jaccard similarity x100 of the two vocabularies (lower-cased ``\\w+`` words; higher is closer).
The Human row compares a random half of the real conversations with the other half.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from userloop.conversation import Conversation
from userloop.errors import UserError
from userloop.rlhi.followups import FollowUp, extract_followups
from userloop.simulate.engine import derive_seed
from userloop.userlm.simulator import UserSimulator, UserTurn

BATCH = 32
_WORD = re.compile(r"\w+")


def alternating_messages(conversation: Conversation) -> list[dict[str, str]] | None:
    """The user/assistant turns as dicts, or None when they do not alternate starting with the user."""
    messages = [{"role": m.role, "content": m.content} for m in conversation.messages if m.role != "system"]
    if not messages or any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(messages)):
        return None
    return messages


@dataclass
class Replay:
    """One real conversation replayed: the simulator's opening turn and its turn after each real assistant turn."""

    conversation: Conversation
    messages: list[dict[str, str]]
    first: UserTurn | None
    after: list[UserTurn | None] = field(default_factory=list)   # the turn after each real assistant turn
    truncated: bool = False                     # cut where the simulator refused the history (too long)

    @property
    def real_ended(self) -> bool:
        return self.messages[-1]["role"] == "assistant"

    def gold_end(self) -> list[bool]:
        ended = self.real_ended and not self.truncated
        return [k == len(self.after) - 1 and ended for k in range(len(self.after))]

    def predicted_end(self) -> list[bool]:
        return [turn.ended for turn in self.after]

    def simulated_end(self) -> int | None:
        """The 1-based real assistant turn after which the simulator ended, or None."""
        return next((k + 1 for k, turn in enumerate(self.after) if turn.ended), None)


async def replay(simulator, conversations: Sequence[Conversation],
                 on_progress: Callable[[int], None] | None = None) -> tuple[list[Replay], dict[str, int]]:
    """Replay ``conversations`` (each with an intent) with ``simulator`` (a UserSimulator).

    Returns the replays and counts: ``not_alternating`` (conversations skipped: turns not alternating
    user/assistant from the user), ``opening_unfit`` (skipped: the simulator refused even the opening
    prompt, e.g. beyond its context), ``shortened_histories`` (decision points whose history was cut
    from the start to fit the simulator's context) and ``truncated`` (replays cut at the first
    assistant turn whose last exchange alone the simulator refused: the turns before it are kept, the
    end is then unobserved).
    ``on_progress`` gets the number of simulated turns done after each batch.
    """
    replays: list[Replay] = []
    requests: list[tuple[int, int]] = []  # (replay, -1 for the opening turn or the assistant turn index)
    counts = {"not_alternating": 0, "opening_unfit": 0, "shortened_histories": 0, "truncated": 0}
    for conversation in conversations:
        messages = alternating_messages(conversation)
        if messages is None:
            counts["not_alternating"] += 1
            continue
        replays.append(Replay(conversation, messages, None, [None] * (len(messages) // 2)))
        requests += [(len(replays) - 1, k) for k in range(-1, len(messages) // 2)]
    for start in range(0, len(requests), BATCH):
        batch = requests[start:start + BATCH]
        turns = await asyncio.gather(*(_turn(simulator, replays[r].conversation.intent, replays[r].messages[:2 * k + 2],
                                             (replays[r].conversation.id, k)) for r, k in batch))
        for (r, k), (turn, dropped) in zip(batch, turns):
            counts["shortened_histories"] += dropped > 0
            if k < 0:
                replays[r].first = turn
            else:
                replays[r].after[k] = turn
        if on_progress is not None:
            on_progress(len(batch))
    kept = []
    for item in replays:
        if item.first is None:
            counts["opening_unfit"] += 1
            continue
        fit = next((k for k, turn in enumerate(item.after) if turn is None), None)
        if fit is not None:
            item.after, item.truncated = item.after[:fit], True
            counts["truncated"] += 1
        kept.append(item)
    return kept, counts


async def _turn(simulator: UserSimulator, intent: str, history: list[dict[str, str]],
                point: tuple[str | None, int]) -> tuple[UserTurn | None, int]:
    """The simulator's turn and the number of earliest exchanges dropped so that the prompt fits; (None, 0)
    when it refuses even the last exchange alone (a UserError: too long for its context).

    A seeded simulator samples each decision ``point`` (conversation id, assistant turn) with its own seed derived
    from its seed: with one seed for all, every point's end decision would be the same random draw, and one run's
    termination F1 a random threshold on the end probability (it swung from 38 to 61 across three seeds)."""
    if isinstance(simulator, UserSimulator) and simulator.params.seed is not None:
        simulator = UserSimulator(simulator.model, simulator.guardrails,
                                  replace(simulator.params, seed=derive_seed(simulator.params.seed, *point)))
    for start in range(0, max(len(history) - 1, 1), 2):
        try:
            return (await simulator.anext_turns([intent], [history[start:]]))[0], start // 2
        except UserError:
            continue
    return None, 0


# --------------------------------------------------------------------------- per-conversation behaviour
@dataclass
class Behaviour:
    """What fidelity compares, for one conversation's user (real or simulated)."""

    turn_lengths: list[int]
    user_turns: int
    end_turn: int | None
    followups: list[FollowUp]
    words: set[str]
    feedback: list[bool] = field(default_factory=list)   # filled by :func:`classify_feedback`


def _words(texts: Sequence[str]) -> set[str]:
    return {w for text in texts for w in _WORD.findall(text.lower())}


def real_behaviour(conversation: Conversation, messages: list[dict[str, str]]) -> Behaviour:
    turns = [m["content"] for m in messages if m["role"] == "user"]
    end = len(messages) // 2 if messages[-1]["role"] == "assistant" else None
    return Behaviour([len(t.split()) for t in turns], len(turns), end, extract_followups(conversation), _words(turns))


def simulated_behaviour(item: Replay) -> Behaviour:
    if item.first.ended:
        return Behaviour([], 0, None, [], set())
    end = item.simulated_end()
    written = item.after[: end - 1 if end else len(item.after)]
    turns = [item.first.text] + [t.text for t in written]
    followups = [FollowUp(item.conversation.id, item.conversation.user_id, 2 * k + 2, turn.text,
                          item.messages[2 * k + 1]["content"], item.messages[2 * k]["content"])
                 for k, turn in enumerate(written)]
    return Behaviour([len(t.split()) for t in turns], len(turns), end, followups, _words(turns))


def classify_feedback(behaviours: Sequence[Behaviour], classifier=None) -> None:
    """Label every follow-up as carrying feedback or not (RLHI's offline classifier unless one is given)."""
    if classifier is None:
        from userloop.rlhi.followup_classifier import load_offline

        classifier = load_offline()
    followups = [f for b in behaviours for f in b.followups]
    labels = iter(classifier.classify(followups))
    for b in behaviours:
        b.feedback = [next(labels).feedback_type != "none" for _ in b.followups]


# --------------------------------------------------------------------------- distances
def wasserstein(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Wasserstein-1 (earth mover's) distance between two samples; None when either is empty."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b)) if len(a) and len(b) else None


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical CDFs); None when either is empty."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b).statistic) if len(a) and len(b) else None


def vocabulary_overlap(a: set[str], b: set[str]) -> float | None:
    """Jaccard similarity of two vocabularies, x100 (higher is closer); None when both are empty."""
    return 100.0 * len(a & b) / len(a | b) if a | b else None


def feedback_share(behaviours: Sequence[Behaviour]) -> float | None:
    """Percentage of follow-ups carrying feedback; None without follow-ups."""
    labels = [f for b in behaviours for f in b.feedback]
    return 100.0 * sum(labels) / len(labels) if labels else None


def fidelity_distances(simulated: Sequence[Behaviour], real: Sequence[Behaviour]) -> dict[str, float | None]:
    """Behavioural fidelity of ``simulated`` users against ``real`` ones (see the module docstring)."""
    out: dict[str, float | None] = {}
    quantities = {
        "turn_length": lambda bs: [n for b in bs for n in b.turn_lengths],
        "user_turns": lambda bs: [b.user_turns for b in bs],
        "end_turn": lambda bs: [b.end_turn for b in bs if b.end_turn is not None],
    }
    for name, values in quantities.items():
        out[f"fidelity_{name}_wasserstein"] = wasserstein(values(simulated), values(real))
        out[f"fidelity_{name}_ks"] = ks_statistic(values(simulated), values(real))
    shares = feedback_share(simulated), feedback_share(real)
    out["fidelity_feedback_share_diff"] = abs(shares[0] - shares[1]) if None not in shares else None
    out["fidelity_vocabulary_overlap"] = vocabulary_overlap(set().union(*(b.words for b in simulated)),
                                                            set().union(*(b.words for b in real)))
    return out


def split_half(behaviours: Sequence[Behaviour], seed: int = 0) -> tuple[list[Behaviour], list[Behaviour]]:
    """A random half of ``behaviours`` and the other half (the Human row of fidelity)."""
    order = list(range(len(behaviours)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return [behaviours[i] for i in order[:half]], [behaviours[i] for i in order[half:]]
