"""The simulation statistics of the UserLM paper's Table 3 (arXiv 2510.06552, §5.2), over finished runs.

The paper compares simulated users on how they reveal a sharded task: intent coverage, turn count
variance and range, how far their wording departs from the intent (unigram difference), and how often
a turn repeats information or adds demands that are not in the intent. The paper judges several of
these with an LLM; the defaults here are rules, defined in each function's docstring and in
docs/scenarios.md, and the two turn-level judgements (repetition, new demands) take a pluggable
:class:`TurnJudge`, e.g. :class:`ModelTurnJudge` (an LLM through ``ChatModel``).

Words are lowercase ``[a-z0-9]`` runs; *content words* drop a short stop list, numbers, and a plural
``s``; *numbers* are normalised (``1,200`` = ``1200``, ``2.50`` = ``2.5``). Records that ended in
``error`` or name a scenario that is not given are left out and counted.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from userloop.models import load_model
from userloop.models.base import GenerationParams
from userloop.simulate.engine import FAILED_END_REASONS
from userloop.simulate.records import SimulatedConversation
from userloop.simulate.scenarios import Scenario
from userloop.userlm.intents import INTENT_PREFIX

STOP_WORDS = frozenset((
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do",
    "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having",
    "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself",
    "just", "let", "me", "more", "most", "my", "no", "nor", "not", "now", "of", "off", "on", "once", "only",
    "or", "other", "our", "ours", "out", "over", "own", "please", "same", "she", "should", "so", "some", "such",
    "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those",
    "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "ok",
    "okay", "hi", "hello", "thanks", "thank", "hey", "yes", "yeah", "sure", "well", "like", "want", "need",
    "know", "get", "got", "go", "going", "make", "one",
    # generic request words: asking for help with "the problem" conveys nothing of the task
    "help", "assist", "problem", "question", "task", "thing", "something", "anything", "solve", "figure",
    "answer", "really", "actually", "maybe", "bit", "little",
    # asking for another attempt ("can you try again?") restates the task, it adds no demand
    "try", "retry", "redo", "continue",
))
MIN_WORD_SHARE = 0.5
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_DEMAND = re.compile(
    r"\?\s*$|^(?:(?:please|also|and|now|then)\s+)*(?:make|add|write|give|use|include|change|show|explain|tell|list|keep|avoid|"
    r"remove|put|format|return|handle|ensure|try|do|don't|rewrite|shorten|expand|translate)\b|"
    r"\b(?:can|could|would|will)\s+you\b|\bi\s+(?:want|need|would\s+like|'d\s+like)\b|\bmake\s+sure\b|\bplease\b",
    re.IGNORECASE,
)


def words(text: str) -> list[str]:
    """Lowercase word tokens (unigrams) of ``text``."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    """The words of ``text`` that carry content: no stop words, no numbers, a plural ``s`` dropped."""
    return {_stem(word) for word in words(text) if word not in STOP_WORDS and not word[0].isdigit() and len(word) > 1}


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def numbers(text: str) -> set[str]:
    """The numbers in ``text``, normalised (thousands commas dropped, trailing decimal zeros dropped)."""
    found = set()
    for raw in _NUMBER.findall(text):
        value = raw.replace(",", "").rstrip(".")
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        found.add(value)
    return found


def covers(piece: str, text: str, min_word_share: float = MIN_WORD_SHARE) -> bool:
    """Whether ``text`` carries the information of ``piece`` (a shard): every number of the piece is in
    the text, and at least ``min_word_share`` of its content words are (a piece with neither is
    covered trivially)."""
    needed_numbers = numbers(piece)
    if not needed_numbers <= numbers(text):
        return False
    needed_words = content_words(piece)
    if not needed_words:
        return True
    return len(needed_words & content_words(text)) / len(needed_words) >= min_word_share


def required_pieces(scenario: Scenario) -> list[str]:
    """What the user must get across: the shards, or for a scenario without shards (open intents)
    the intent itself as one piece, its "You are a user ... to" preamble removed."""
    if scenario.shards:
        return scenario.shards
    return [scenario.intent.removeprefix(INTENT_PREFIX).strip() or scenario.intent]


def intent_coverage(scenario: Scenario, turns: Sequence[str]) -> float:
    """Share of the scenario's required pieces (:func:`required_pieces`) covered (:func:`covers`) by the
    union of the user turns (Table 3 "intent coverage": did the simulated user convey the whole task)."""
    pieces = required_pieces(scenario)
    said = "\n".join(turns)
    return sum(covers(piece, said) for piece in pieces) / len(pieces)


def unigram_difference(intent: str, turns: Sequence[str]) -> float:
    """Share of the distinct unigrams of the user turns that are not in the intent's unigrams (Table 3
    "unigram difference": how much the simulated user words the task in its own terms rather than
    copying the intent). 0 for no words."""
    said = set(words(" ".join(turns)))
    if not said:
        return 0.0
    return len(said - set(words(intent))) / len(said)


def unigram_jaccard_distance(intent: str, turns: Sequence[str]) -> float:
    """1 - Jaccard similarity of the unigram sets of the user turns and the intent (0 = same words)."""
    said, given = set(words(" ".join(turns))), set(words(intent))
    union = said | given
    return 1 - len(said & given) / len(union) if union else 0.0


@dataclass
class TurnFlags:
    """Per user turn: does it repeat required information given earlier, does it add a demand not in the intent."""

    repeats: list[bool]
    adds_demand: list[bool]


class TurnJudge(Protocol):
    """Flags the user turns of many conversations at once (rules, or an LLM judge)."""

    def flag_turns(self, items: Sequence[tuple[Scenario, SimulatedConversation]]) -> list[TurnFlags]: ...


def repeated_turns(scenario: Scenario, turns: Sequence[str]) -> list[bool]:
    """Per user turn, whether it repeats required information: it covers (:func:`covers`) a required
    piece that an earlier user turn already covered. The first turn never repeats."""
    pieces = required_pieces(scenario)
    given: set[int] = set()
    flags = []
    for turn in turns:
        covered = {index for index, piece in enumerate(pieces) if covers(piece, turn)}
        flags.append(bool(covered & given))
        given |= covered
    return flags


def demand_turns(scenario: Scenario, record: SimulatedConversation) -> list[bool]:
    """Per user turn, whether it adds a demand not in the intent: one of its sentences reads as a
    request (a question, an imperative opening, "can you", "I want", "please", "make sure") and fewer
    than half of that sentence's content words appear in the task (intent, shards, full prompt) or in
    the assistant's earlier replies (asking about the assistant's own words is not a new demand).
    A sentence with no content words adds nothing."""
    known = content_words(" ".join([scenario.intent, scenario.full_prompt, *scenario.shards]))
    flags = []
    for message in record.messages:
        if message.role == "assistant":
            known |= content_words(message.content)
        elif message.role == "user":
            flags.append(any(_new_demand(sentence, known) for sentence in _SENTENCE.split(message.content)))
    return flags


def _new_demand(sentence: str, known: set[str]) -> bool:
    if not _DEMAND.search(sentence.strip()):
        return False
    said = content_words(sentence)
    return bool(said) and len(said & known) / len(said) < MIN_WORD_SHARE


class RuleTurnJudge:
    """The default judge: :func:`repeated_turns` and :func:`demand_turns`."""

    name = "rules"

    def flag_turns(self, items: Sequence[tuple[Scenario, SimulatedConversation]]) -> list[TurnFlags]:
        return [TurnFlags(repeated_turns(s, r.user_turns), demand_turns(s, r)) for s, r in items]


class ModelTurnJudge:
    """An LLM judge through :class:`~userloop.models.base.ChatModel`: one prompt per user turn (the task,
    the earlier user turns, the turn) answered with ``{"repeats": bool, "new_demand": bool}``; all turns
    go as one batch. An answer that is not such an object falls back to the rules for that turn and is
    counted in :attr:`fallbacks`. Blocking (call it outside an event loop)."""

    def __init__(self, model, params=None) -> None:
        self.model = load_model(model) if isinstance(model, str) else model
        self.name = self.model.name
        self.params = params or GenerationParams(max_new_tokens=32, temperature=0)
        self.fallbacks = 0

    def flag_turns(self, items: Sequence[tuple[Scenario, SimulatedConversation]]) -> list[TurnFlags]:
        rules = RuleTurnJudge().flag_turns(items)
        prompts = [turn_judge_prompt(scenario, record.user_turns, index)
                   for scenario, record in items for index in range(record.n_user_turns)]
        answers = iter(c.text for c in self.model.generate(prompts, self.params)) if prompts else iter(())
        flagged = []
        for rule in rules:
            repeats, demands = [], []
            for rule_repeat, rule_demand in zip(rule.repeats, rule.adds_demand):
                verdict = _verdict(next(answers))
                if verdict is None:
                    self.fallbacks += 1
                    verdict = (rule_repeat, rule_demand)
                repeats.append(verdict[0])
                demands.append(verdict[1])
            flagged.append(TurnFlags(repeats, demands))
        return flagged


def turn_judge_prompt(scenario: Scenario, turns: Sequence[str], index: int) -> list[dict[str, str]]:
    """The judge's chat for user turn ``index``: the task's information and the user's turns so far."""
    pieces = "\n".join(f"- {piece}" for piece in required_pieces(scenario))
    earlier = "\n".join(f"{n + 1}. {turn}" for n, turn in enumerate(turns[:index])) or "(none)"
    system = ("You judge one turn of a simulated user who has a task to convey to an assistant. Answer with a JSON "
              'object {"repeats": true|false, "new_demand": true|false}. repeats: the turn restates task '
              "information the user already gave in an earlier turn. new_demand: the turn asks for something "
              "that is not part of the task.")
    user = (f"Task:\n{scenario.intent}\nTask information:\n{pieces}\n\nEarlier user turns:\n{earlier}\n\n"
            f"The turn to judge:\n{turns[index]}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _verdict(answer: str) -> tuple[bool, bool] | None:
    import json

    match = re.search(r"\{.*\}", answer, re.DOTALL)
    try:
        value = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), bool) for k in ("repeats", "new_demand")):
        return None
    return value["repeats"], value["new_demand"]


def simulation_statistics(scenarios: Sequence[Scenario], records: Sequence[SimulatedConversation],
                          judge: TurnJudge | None = None) -> dict:
    """Table 3's statistics over finished run records (one per conversation).

    ``intent_coverage``, ``unigram_difference`` and ``unigram_jaccard_distance`` are means over
    conversations; ``turns`` has the mean, population variance, min and max of user turns per
    conversation; ``repetition_rate`` and ``new_demand_rate`` are shares of all user turns. Records cut
    short by a failed model call (``error``, ``context``) or whose scenario is unknown are excluded and counted.
    """
    by_id = {scenario.id: scenario for scenario in scenarios}
    usable, errors, unknown = [], 0, 0
    for record in records:
        if record.end_reason in FAILED_END_REASONS:
            errors += 1
        elif record.scenario_id not in by_id:
            unknown += 1
        else:
            usable.append((by_id[record.scenario_id], record))
    result = {"conversations": len(usable), "excluded_errors": errors, "excluded_unknown_scenario": unknown}
    if not usable:
        return result
    judge = judge or RuleTurnJudge()
    turns_of = [record.user_turns for _, record in usable]
    counts = [len(turns) for turns in turns_of]
    flags = judge.flag_turns(usable)
    all_turns = sum(counts)
    result.update(
        judge=getattr(judge, "name", type(judge).__name__),
        intent_coverage=statistics.fmean(intent_coverage(s, t) for (s, _), t in zip(usable, turns_of)),
        turns={"mean": statistics.fmean(counts), "variance": float(statistics.pvariance(counts)),
               "min": min(counts), "max": max(counts)},
        unigram_difference=statistics.fmean(unigram_difference(s.intent, t) for (s, _), t in zip(usable, turns_of)),
        unigram_jaccard_distance=statistics.fmean(
            unigram_jaccard_distance(s.intent, t) for (s, _), t in zip(usable, turns_of)),
        repetition_rate=sum(sum(f.repeats) for f in flags) / all_turns if all_turns else 0.0,
        new_demand_rate=sum(sum(f.adds_demand) for f in flags) / all_turns if all_turns else 0.0,
    )
    return result
