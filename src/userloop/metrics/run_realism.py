"""The realism of a run's simulated users, reported next to its success (``summary.json["realism"]``).

An agent's score depends on its users: a score measured against users that are more cooperative or more
uniform than real ones says little (Sim2Real, arXiv 2603.11245). :func:`run_realism` measures the simulated
users of one run folder with the simulator metrics of "Flipping the Dialogue" (arXiv 2510.06552, Table 2) that
need no replay, on the run's own conversations, and the same statistics of real users when a prepared folder is
given (its test split):

* ``first_turn_diversity`` (higher is more diverse; :func:`userloop.statistics.first_turn_diversity`): of the
  first user turns, at most :data:`MAX_FIRST_TURNS` drawn with the run's seed (the paper uses 2,000);
* ``intent_decomposition`` (lower is better; :func:`~userloop.metrics.simulator_metrics.intent_decomposition`):
  the first user turns against each conversation's intent, as ``eval-sim`` measures it;
* ``user_turn_words`` and ``user_turns``: the distribution (mean, 10/25/50/75/90th percentile, max) of the
  words per user turn (whitespace-separated, as the fidelity metrics count them) and of user turns per
  conversation;
* ``termination``: the share of conversations the user ended (``<|endconversation|>``; for real users, a
  conversation that ends on an assistant turn) and the distribution of the end turn, the number of answered
  user turns before the user ended (the quantity of :mod:`userloop.metrics.fidelity`);
* ``end_reasons``: the share of each end reason over all of the run's conversations.

With real users, ``distances`` gives the Wasserstein-1 distance and the Kolmogorov-Smirnov statistic between the
simulated and real distributions of words per user turn, user turns and end turn (keys as above;
:mod:`userloop.metrics.fidelity`), lower being closer. Conversations cut short by a failure (``error``, ``context``) are left out of everything
but the end-reason shares (counted in ``failed_left_out``); a single-turn run has no simulated user and no block.
Dialogue termination F1 needs a replay of real conversations: ``userloop eval-sim`` measures it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from userloop.conversation import Conversation
from userloop.metrics.fidelity import alternating_messages, ks_statistic, wasserstein
from userloop.metrics.simulator_metrics import first_turn_diversity, intent_decomposition, intent_overlap
from userloop.progress import Progress, no_progress
from userloop.simulate.engine import END_REASONS, FAILED_END_REASONS
from userloop.simulate.records import SimulatedConversation
from userloop.simulate.runs import SimulationConfig, SimulationResult, simulate
from userloop.userlm.flip import read_split

MAX_FIRST_TURNS = 2000
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
REFERENCE_SPLIT = "test"


@dataclass(frozen=True)
class _User:
    """One conversation's user as realism sees it: the texts of its turns, its intent and how it ended."""

    turns: list[str]
    intent: str
    end_turn: int | None  # answered user turns before the user ended; None: the user did not end it


def simulate_with_realism(config: SimulationConfig, out: str | Path, *, progress: Progress = no_progress,
                          **options: Any) -> SimulationResult:
    """:func:`userloop.simulate.runs.simulate` whose summary also holds ``realism`` (:func:`run_realism` of the
    run's records, against ``config.data``'s test split when given); ``options`` go to ``simulate``."""
    return simulate(config, out, progress=progress, summary_sections=lambda records: {
        "realism": run_realism(records, config.data, seed=config.seed)}, **options)


def run_realism(records: Sequence[SimulatedConversation], data: str | Path | None = None, *,
                seed: int = 0) -> dict[str, Any] | None:
    """The realism block of a run's records (module docstring); None when no record has a simulated user."""
    simulated = [r for r in records if r.setting == "multi_turn"]
    if not simulated:
        return None
    finished = [_simulated_user(r) for r in simulated if r.end_reason not in FAILED_END_REASONS]
    reasons = Counter(r.end_reason for r in simulated)
    block: dict[str, Any] = {
        **user_statistics(finished, seed),
        "end_reasons": {reason: reasons[reason] / len(simulated) for reason in END_REASONS},
        "failed_left_out": len(simulated) - len(finished),
    }
    if data is not None:
        real = [_real_user(c) for c in read_split(data, REFERENCE_SPLIT)[0]]
        real = [user for user in real if user is not None]
        block["human"] = {"data": str(data), "split": REFERENCE_SPLIT, **user_statistics(real, seed)}
        block["distances"] = {name: {"wasserstein": wasserstein(values(finished), values(real)),
                                     "ks": ks_statistic(values(finished), values(real))}
                              for name, values in _QUANTITIES.items()}
    return block


def user_statistics(users: Sequence[_User], seed: int) -> dict[str, Any]:
    """Diversity, decomposition, turn lengths, turns and termination of ``users`` (module docstring)."""
    openers = [user for user in users if user.turns and user.turns[0].strip()]
    drawn = random.Random(seed).sample(openers, min(MAX_FIRST_TURNS, len(openers)))
    first = [user.turns[0] for user in drawn]
    intents = [user.intent for user in drawn]
    with_content = any(intent_overlap(turn, intent) is not None for turn, intent in zip(first, intents))
    ended = _QUANTITIES["end_turn"](users)
    return {
        "conversations": len(users),
        "first_turns": len(first),
        "first_turn_diversity": first_turn_diversity(first) if len(first) >= 2 else None,
        "intent_decomposition": intent_decomposition(first, intents) if with_content else None,
        "user_turn_words": distribution(_QUANTITIES["user_turn_words"](users)),
        "user_turns": distribution(_QUANTITIES["user_turns"](users)),
        "termination": {"user_ended": len(ended) / len(users) if users else None, "end_turn": distribution(ended)},
    }


_QUANTITIES = {
    "user_turn_words": lambda users: [len(turn.split()) for user in users for turn in user.turns],
    "user_turns": lambda users: [len(user.turns) for user in users],
    "end_turn": lambda users: [user.end_turn for user in users if user.end_turn is not None],
}


def distribution(values: Sequence[float]) -> dict[str, float] | None:
    """Mean, the :data:`QUANTILES` (linear interpolation between order statistics) and max; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    quantiles = {f"p{round(q * 100)}": _quantile(ordered, q) for q in QUANTILES}
    return {"mean": sum(ordered) / len(ordered), **quantiles, "max": float(ordered[-1])}


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _simulated_user(record: SimulatedConversation) -> _User:
    users = [m for m in record.messages if m.role == "user"]
    answered = len(users) - (1 if users and users[-1].ended else 0)
    return _User([m.content for m in users], record.intent or "",
                 answered if record.end_reason == "user_ended" else None)


def _real_user(conversation: Conversation) -> _User | None:
    """A real conversation's user (None: its turns do not alternate from the user); it ended the conversation when
    the last turn is the assistant's."""
    messages = alternating_messages(conversation)
    if messages is None:
        return None
    turns = [m["content"] for m in messages if m["role"] == "user"]
    return _User(turns, conversation.intent or "", len(turns) if messages[-1]["role"] == "assistant" else None)


def realism_line(block: dict[str, Any] | None) -> str | None:
    """One line of the block's main figures (what the terminal, the viewer and the report show); None without one."""
    if not block:
        return None

    def figures(stats: dict[str, Any]) -> str:
        parts = []
        if stats["first_turn_diversity"] is not None:
            parts.append(f"first-turn diversity {stats['first_turn_diversity']:.1f}")
        if stats["intent_decomposition"] is not None:
            parts.append(f"decomposition {stats['intent_decomposition']:.1f}")
        if stats["termination"]["user_ended"] is not None:
            parts.append(f"user ended {stats['termination']['user_ended']:.0%}")
        if stats["user_turns"]:
            parts.append(f"{stats['user_turns']['mean']:.1f} user turns")
        if stats["user_turn_words"]:
            parts.append(f"{stats['user_turn_words']['p50']:g} words/turn (median)")
        return ", ".join(parts) or "no finished conversation"

    line = f"realism: {figures(block)}"
    human = block.get("human")
    return line + (f"; real users ({human['split']} split): {figures(human)}" if human else "")
