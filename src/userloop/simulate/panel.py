"""``testbed:graded?KNOB=VALUE&...``: scripted assistants whose quality is known by construction, and panels.

A panel assistant is the testbed's scripted assistant (:mod:`userloop.testbed.assistant` renders its replies)
made a :class:`ChatModel` that reads the conversation's text: it finds the math problem the user is asking
about among the scenarios of a scenario file (``scenarios=FILE``: idf-weighted overlap of numbers and content
words), sees which shards the user has revealed (a shard is revealed once every number in it is in the user's
turns; one without numbers, the goal, once the problem is recognised), and acts by
its knobs. Everything it does is a function of the conversation and the sampling seed, so it is deterministic.

Knobs (docs/validity.md):

* ``error`` (0-1, default 0.12, the testbed's): chance that an answer given with every shard known is wrong.
* ``ask``: with shards missing, ``always`` asks for the rest, ``never`` answers at once from what it has
  (an estimate, wrong by construction), ``sometimes`` (default) asks with the testbed's chance, 0.45.
* ``anchor`` (0-1, default 0.5): a conversation in which it has answered on incomplete information is lost with
  this chance: every later answer in it is wrong, whatever the user says (LLMs that answer prematurely "get lost
  in conversation" and do not recover: Laban et al. 2025, arXiv 2505.06120).
* ``style``: ``match`` (default) starts from the user's persona (``metadata["testbed_persona"]`` of the scenario; each
  axis with the testbed's chance, 0.7) and fixes what the user complains about; ``ignore`` draws a style
  regardless of the persona and keeps it whatever the user says.
* ``length``: ``verbose`` (always long), ``concise`` (always short) or ``style`` (default: as the style says).

A panel is a YAML or JSON file ``{"assistants": {NAME: SPEC, ...}, "expected_order": [NAME, ...]}`` (best
first; optional); any model spec may be a panel member. :data:`DEFAULT_PANEL` ships with the package.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl

from userloop.errors import UserError
from userloop.files import read_user_text
from userloop.models.base import ChatMessages, ChatModel, Completion, GenerationParams
from userloop.models.mock import count_words, word_choice
from userloop.models.registry import parse_spec
from userloop.simulate.answer_check import gold_number
from userloop.simulate.engine import stable_hash
from userloop.simulate.reveal_stats import content_words, numbers
from userloop.simulate.scenarios import Scenario, load_scenarios
from userloop.testbed import assistant as scripted
from userloop.testbed.families import pick

DEFAULT_PANEL = Path(__file__).with_name("panels") / "default.yaml"
ASK = {"always": 1.0, "sometimes": scripted.CLARIFY_CHANCE, "never": 0.0}
STYLES = ("match", "ignore")
LENGTHS = {"verbose": "long", "concise": "short", "style": None}
PREFERENCES = ("expertise", "detail", "tone", "structure")  # the persona fields a matching style reads
ESTIMATE = "my estimate is"   # the phrase that marks an answer given on incomplete information
# What a user's complaint about the style asks for (the testbed's feedback reasons), by words in the turn.
COMPLAINTS = (
    ("too_long", re.compile(r"\b(?:too long|shorter|shorten|condense|brief version|tl;?dr|cut it down)\b")),
    ("too_short", re.compile(r"\b(?:elaborate|more detail|more depth|expand on|go deeper|explain more)\b")),
    ("wants_prose", re.compile(r"\b(?:paragraph|prose|no bullet|less listy|write it normally)\b")),
    ("wants_structure", re.compile(r"\b(?:bullet|as a list|in a list|numbered steps|into steps)\b")),
    ("too_casual", re.compile(r"\b(?:professional|formal tone|more formally|less casual|too chatty)\b")),
    ("too_formal", re.compile(r"\b(?:relaxed|friendlier|too formal|more casually|less stiff)\b")),
    ("too_technical", re.compile(r"\b(?:simpler|simply|plain language|normal words|eli5|too complicated)\b")),
    ("too_simple", re.compile(r"\b(?:more technical|technical details|technical version|technical explanation|skip the basics)\b")),
)


@dataclass(frozen=True)
class Knobs:
    """What a panel assistant does; see the module docstring."""

    error: float = scripted.ERROR_RATE
    ask: str = "sometimes"
    anchor: float = 0.5
    style: str = "match"
    length: str = "style"
    scenarios: str | None = None

    @classmethod
    def parse(cls, query: str) -> Knobs:
        """The knobs of ``KNOB=VALUE&...``; an unknown knob or a bad value raises :class:`UserError`."""
        values: dict = {}
        for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
            if name not in cls.__dataclass_fields__:
                raise UserError(f"testbed:graded has no knob {name!r} (knobs: {', '.join(cls.__dataclass_fields__)})")
            values[name] = value
        for name in ("error", "anchor"):
            if name in values:
                try:
                    values[name] = float(values[name])
                except ValueError:
                    values[name] = math.nan
                if not 0 <= values[name] <= 1:
                    raise UserError(f"testbed:graded {name} must be a number in [0, 1], got {query!r}")
        for name, allowed in (("ask", ASK), ("style", STYLES), ("length", LENGTHS)):
            if name in values and values[name] not in allowed:
                raise UserError(f"testbed:graded {name} must be one of {', '.join(allowed)}, got {values[name]!r}")
        return cls(**values)


def testbed_chat_model(target: str) -> ChatModel:
    """The model ``testbed:TARGET`` names (the registry lets only ``graded[?QUERY]`` through)."""
    return PanelAssistant(split_target(target)[1])


def split_target(target: str) -> tuple[str, str]:
    """``graded?error=0.3`` -> ("graded", "error=0.3")."""
    name, _, query = target.partition("?")
    return name.strip(), query.strip()


def with_scenarios(spec: str, scenarios: str | Path) -> str:
    """``spec`` with ``scenarios=PATH`` added when it is a ``testbed:graded`` spec without one."""
    prefix, _, target = spec.partition(":")
    if prefix != "testbed" or split_target(target)[0] != "graded" or "scenarios=" in target:
        return spec
    return f"{spec}{'&' if '?' in spec else '?'}scenarios={scenarios}"


class PanelAssistant(ChatModel):
    """A scripted assistant with known knobs (module docstring) that talks from the conversation's text."""

    def __init__(self, query: str = "") -> None:
        self.knobs = Knobs.parse(query)
        if self.knobs.scenarios is None:
            raise UserError("testbed:graded needs scenarios=FILE (the math problems it can solve); "
                            "eval-validity adds the evaluation's own")
        self.name = f"testbed:graded?{query}"
        self._draws = repr(replace(self.knobs, scenarios=None))  # what seeds its draws: the knobs, not the file's path
        self.bank = _Bank(load_scenarios(self.knobs.scenarios))

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams,
                         tools: list[dict] | None = None) -> list[Completion]:
        completions = []
        for messages in conversations:
            started = time.perf_counter()
            choices = [word_choice(self.reply(messages, params.seed), params)] * params.n  # deterministic: n equal samples
            completions.append(Completion(choices, sum(count_words(m["content"]) for m in messages),
                                          sum(c.completion_tokens for c in choices), time.perf_counter() - started,
                                          self.name))
        return completions

    def reply(self, messages: ChatMessages, seed: int | None) -> str:
        """The reply to ``messages`` (its last message is the user's), decided by the knobs."""
        users = [m["content"] for m in messages if m["role"] == "user"]
        said = "\n".join(users)
        rng = random.Random(stable_hash(self._draws, seed, said, len(messages)))
        scenario = self.bank.find(said)
        style = self._style(users, scenario)
        if scenario is None or not scenario.answer:
            if self.knobs.ask == "never":
                return scripted.discussion_reply(rng, style, _Topic("this question")).text
            return scripted.clarification_reply(rng, style, "the whole problem, with every number").text
        heard = numbers(said)
        missing = [shard for shard in scenario.shards if not numbers(shard) <= heard]
        if missing and rng.random() < ASK[self.knobs.ask]:
            return scripted.clarification_reply(rng, style, "the remaining details, with every number the problem needs").text
        gold = gold_number(scenario.answer)
        if missing:
            guess = gold - rng.randint(1, max(2, int(abs(gold)) // 3 or 2))
            points = [f"From what you have told me so far, {ESTIMATE} {_show(guess)}, but I may be missing some details."]
            return scripted.render(rng, style, "Here is a first estimate with the information so far.", points)
        premature = any(ESTIMATE in m["content"] for m in messages if m["role"] == "assistant")
        lost = premature and random.Random(stable_hash(self._draws, "lost", users[0])).random() < self.knobs.anchor
        wrong = lost or rng.random() < self.knobs.error
        result = gold + pick(rng, [-10, -5, -2, -1, 1, 2, 3, 5, 10]) if wrong else gold
        lead = "Let us compute it step by step." if style.vocabulary == "technical" else "Let us work it out."
        return scripted.render(rng, style, lead, [f"Using every number you gave, the answer is {_show(result)}."])

    def _style(self, users: list[str], scenario: Scenario | None) -> scripted.Style:
        """The style of this reply: drawn per conversation (its first user turn), then the user's complaints."""
        rng = random.Random(stable_hash(self._draws, "style", users[0] if users else ""))
        persona = scenario.metadata.get("testbed_persona") if scenario is not None else None
        if self.knobs.style == "match" and isinstance(persona, dict) and set(PREFERENCES) <= set(persona):
            style = scripted.initial_style(rng, SimpleNamespace(**{field: persona[field] for field in PREFERENCES}))
        else:
            style = scripted.Style(*(pick(rng, values) for values in scripted.STYLE_VALUES.values()))
        if self.knobs.style == "match":
            for turn in users[1:]:
                for reason in complaints(turn):
                    style = scripted.adjust(style, reason)
        length = LENGTHS[self.knobs.length]
        return replace(style, length=length) if length else style


def complaints(turn: str) -> list[str]:
    """The testbed's style-feedback reasons a user turn voices (``too_long``, ``wants_structure``, ...)."""
    lowered = turn.lower()
    return [reason for reason, pattern in COMPLAINTS if pattern.search(lowered)]


class _Bank:
    """The scenarios a panel assistant can recognise, indexed by their numbers and content words."""

    def __init__(self, scenarios: list[Scenario]) -> None:
        self.scenarios = [s for s in scenarios if s.kind == "math"]
        self.tokens = [_tokens(s.full_prompt + "\n" + "\n".join(s.shards)) for s in self.scenarios]
        frequency = Counter(token for tokens in self.tokens for token in tokens)
        self.weight = {token: math.log((1 + len(self.tokens)) / count) for token, count in frequency.items()}

    def find(self, said: str) -> Scenario | None:
        """The scenario whose tokens the user's text shares most (idf-weighted); None when it shares none."""
        heard = _tokens(said)
        scores = [sum(self.weight[t] for t in tokens & heard) for tokens in self.tokens]
        best = max(range(len(scores)), key=scores.__getitem__, default=None)
        return self.scenarios[best] if best is not None and scores[best] > 0 else None


@dataclass
class _Topic:
    topic: str


def _tokens(text: str) -> set[str]:
    return {f"#{n}" for n in numbers(text)} | content_words(text)


def _show(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# ---------------------------------------------------------------------------------------------- panels
@dataclass(frozen=True)
class Panel:
    """Assistants by name (model specs) and, optionally, the order they are expected to rank in (best first)."""

    assistants: dict[str, str]
    expected_order: list[str] | None = None


def read_panel(path: str | Path | None = None) -> Panel:
    """The panel in a YAML or JSON file (``None``: :data:`DEFAULT_PANEL`); a malformed one raises :class:`UserError`."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_PANEL
    try:
        data = yaml.safe_load(read_user_text(path, "panel file"))
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML or JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("assistants"), dict) or len(data["assistants"]) < 2:
        raise UserError(f"{path}: a panel is an object with 'assistants' (at least two NAME: SPEC entries)")
    unknown = sorted(set(data) - {"assistants", "expected_order", "description"})
    if unknown:
        raise UserError(f"{path}: unknown panel field {unknown[0]!r} (fields: assistants, expected_order, description)")
    assistants = {}
    for name, spec in data["assistants"].items():
        if not isinstance(spec, str):
            raise UserError(f"{path}: assistant {name!r} must be a model spec string")
        parse_spec(spec)
        assistants[str(name)] = spec
    order = data.get("expected_order")
    if order is not None and (not isinstance(order, list) or sorted(map(str, order)) != sorted(assistants)):
        raise UserError(f"{path}: expected_order must list every assistant once, best first")
    return Panel(assistants, [str(name) for name in order] if order is not None else None)
