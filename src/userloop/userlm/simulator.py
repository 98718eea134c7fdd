"""The user simulator: a user LM behind the four guardrails of microsoft/UserLM-8b's model card.

The prompt is ``[system: intent, *history]`` and the user model's chat template ends with the user
header, so the model writes the next user turn ("Flipping the Dialogue", arXiv 2510.06552). An
``hf:`` model applies its checkpoint's own template; an ``openai:`` model must be served with the
UserLM template (e.g. vLLM ``--chat-template``), or it would answer as an assistant.

The model card's appendix on generation configuration lists four guardrails, all on by default here
(:class:`GuardrailConfig`):

* **filter first tokens**: "I", "You" and "Here" never start a turn (they open assistant-like replies);
* **avoid dialogue termination**: no ``<|endconversation|>`` during the first N user turns (or ever);
* **length thresholds**: a turn has between 3 and 25 words;
* **filter verbatim repetition**: a turn neither repeats an earlier user turn nor copies the intent.

Where the model can enforce a ban (``model.supports``), the first two act at generation: the first
words are ``banned_first_tokens``, the end token ``banned_tokens`` (or, for a model that only takes
``logit_bias``, a -100 bias on the end-token ids the caller supplies, since only the caller knows
the server's tokenizer). Every sample is checked against every enabled guardrail anyway; a sample
that fails is set aside and another is drawn. Samples are drawn ``samples_per_call`` at a time
(one call, ``n`` choices) up to ``max_attempts`` in all; when none passes, the sample violating the
least severe guardrails is returned (:data:`SEVERITY`) and a ``fallback`` event says so. Events
(``{"guardrail", "action", "detail"}``) record every ban, rejected sample and fallback.

Post-processing: surrounding whitespace (the leading newline after the user header) is stripped;
a sample containing ``<|endconversation|>`` ends the conversation, keeps the text before it as the
user's last message (often empty) and discards everything after it. Length thresholds do not apply
to an ending turn.

A model that is a user simulator itself (``model.simulator_settings()``: a ``userloop serve
--simulator`` server reached with ``openai:``) has applied the guardrails already: its answer is the
turn, and its events are the server's (docs/integrations.md); a server started for another kind of
harness (:func:`check_served_harness`) is refused.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from userloop.config import option
from userloop.conversation import Message
from userloop.errors import UserError
from userloop.files import read_user_json
from userloop.models import load_model
from userloop.models.base import END_CONVERSATION_REASON, ChatModel, GenerationParams, chat_messages
from userloop.userlm.template import END_CONVERSATION

# Model card sampling: temperature 1.0, top-p 0.8. A 25-word turn is about 35 tokens; a sample cut
# at max_new_tokens is too long anyway.
DEFAULT_PARAMS = GenerationParams(max_new_tokens=96, temperature=1.0, top_p=0.8)
FIRST_WORDS = ("I", "You", "Here")
# Fallback order: a sample violating only lighter guardrails is preferred (sum of weights, then order).
SEVERITY = {"avoid_termination": 8, "filter_repetition": 4, "filter_first_tokens": 2, "length_thresholds": 1}
# The harness options a `userloop serve --simulator` server lists when its requests are read as this simulator sends
# them (userloop.models.serve.simulator_protocol.HarnessOptions' defaults).
PROTOCOL_HARNESS = {"perspective": "assistant", "end_text": None, "intent_tag": None}


@dataclass(frozen=True)
class GuardrailConfig:
    """The guardrails of microsoft/UserLM-8b's model card and the resampling budget; validated on construction."""

    filter_first_tokens: bool = option(True, "never start a turn with one of first_words")
    first_words: tuple[str, ...] = option(FIRST_WORDS, "words banned as a turn's first word (case-sensitive)")
    avoid_termination: bool = option(True, "no <|endconversation|> during the first avoid_termination_turns user turns")
    avoid_termination_turns: int | None = option(2, "how many user turns may not end the conversation (None: never end)")
    end_token_ids: tuple[int, ...] = option((), "token ids of <|endconversation|> in the model's tokenizer, for "
                                                 "models that take logit_bias but not banned_tokens (openai:)")
    length_thresholds: bool = option(True, "resample turns shorter than min_words or longer than max_words")
    min_words: int = option(3, "fewest words in a turn (whitespace-separated)")
    max_words: int = option(25, "most words in a turn")
    filter_repetition: bool = option(True, "resample turns that repeat an earlier user turn or copy the intent")
    intent_copy_words: int = option(8, "a turn sharing this many consecutive words with the intent (or all of its "
                                        "own, for turns of 4 words or more) copies it")
    max_attempts: int = option(8, "most samples drawn for one turn before the fallback")
    samples_per_call: int = option(2, "samples drawn per model call (n)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "first_words", tuple(self.first_words))
        object.__setattr__(self, "end_token_ids", tuple(self.end_token_ids))
        if not all(isinstance(w, str) and w.strip() and " " not in w.strip() for w in self.first_words):
            raise UserError(f"first_words must be single words, got {self.first_words!r}")
        if not all(_is_int(i) and i >= 0 for i in self.end_token_ids):
            raise UserError(f"end_token_ids must be token ids >= 0, got {self.end_token_ids!r}")
        turns = self.avoid_termination_turns
        if turns is not None and not (_is_int(turns) and turns >= 0):
            raise UserError(f"avoid_termination_turns must be an integer >= 0 or None (always), got {turns!r}")
        for name, low in (("min_words", 0), ("max_words", 1), ("intent_copy_words", 2), ("max_attempts", 1),
                          ("samples_per_call", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.min_words > self.max_words:
            raise UserError(f"min_words ({self.min_words}) must not exceed max_words ({self.max_words})")

    def bans_end(self, turn: int) -> bool:
        """Whether user turn number ``turn`` (1-based) may not end the conversation."""
        return self.avoid_termination and (self.avoid_termination_turns is None or turn <= self.avoid_termination_turns)


GUARDRAIL_SETTINGS = ("on", "off")


def guardrails_for(setting: str) -> GuardrailConfig:
    """The guardrails of a ``--guardrails`` setting: ``on``, the model card's four; ``off``, the raw model (nothing
    to resample, so one sample a turn). Any other value raises :class:`UserError`."""
    if setting not in GUARDRAIL_SETTINGS:
        raise UserError(f"--guardrails must be 'on' or 'off', got {setting!r}")
    if setting == "on":
        return GuardrailConfig()
    return GuardrailConfig(filter_first_tokens=False, avoid_termination=False, length_thresholds=False,
                           filter_repetition=False, samples_per_call=1)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class UserTurn:
    """The simulated user's turn: its text, whether the user ended the conversation, and the guardrail events."""

    text: str
    ended: bool
    events: list[dict[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "ended": self.ended, "events": self.events}


@dataclass(frozen=True)
class _Sample:
    text: str
    ended: bool
    truncated: bool


def parse_sample(raw: str, truncated: bool = False) -> _Sample:
    """A raw generation as a turn: whitespace stripped, anything after ``<|endconversation|>`` dropped."""
    before, end, _ = raw.partition(END_CONVERSATION)
    return _Sample(before.strip(), bool(end), truncated and not end)


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation: what verbatim repetition compares."""
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def first_word(text: str) -> str:
    """The leading run of letters (``"I'm"`` -> ``"I"``): the word a first-token ban removes."""
    match = re.match(r"[^\W\d_]+", text)
    return match.group(0) if match else ""


def _longest_common_run(a: list[str], b: list[str]) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, 1):
            if word == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


class UserSimulator:
    """Writes user turns with a user LM (any :class:`ChatModel` or spec string) behind the model card's guardrails.

    ``params`` are the sampling settings (default: temperature 1.0, top-p 0.8, 96 new tokens); the
    simulator sets ``n`` and adds its bans. With ``params.seed`` set, each conversation and each call
    gets its own seed derived from it, so a run is reproducible.
    """

    def __init__(self, model: ChatModel | str, guardrails: GuardrailConfig | None = None,
                 params: GenerationParams | None = None) -> None:
        if isinstance(model, str):
            model = load_model(model)
        if not isinstance(model, ChatModel):
            raise UserError(f"a user simulator needs a ChatModel or a model spec, got {type(model).__name__}")
        self.model = model
        self.guardrails = guardrails or GuardrailConfig()
        self.params = params or DEFAULT_PARAMS
        if self.guardrails.end_token_ids and not model.supports.logit_bias:
            raise UserError(f"end_token_ids need a model that takes logit_bias; {model.name} does not")

    # ------------------------------------------------------------------ blocking
    def first_turn(self, intent: str) -> UserTurn:
        """The user's opening turn for ``intent``."""
        return self._blocking(self.afirst_turns([intent]))[0]

    def next_turn(self, intent: str, history: Sequence[Message | Mapping[str, str]]) -> UserTurn:
        """The user's next turn after ``history`` (alternating user/assistant messages, ending with the assistant)."""
        return self._blocking(self.anext_turns([intent], [history]))[0]

    def _blocking(self, coroutine):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coroutine.close()
            raise RuntimeError("UserSimulator.first_turn/next_turn block, so they cannot run inside an event loop: "
                               "use 'await simulator.afirst_turns(...)' / 'anext_turns(...)'")
        return asyncio.run(self._then_close(coroutine))

    async def _then_close(self, coroutine):
        try:
            return await coroutine
        finally:
            await self.model.aclose()

    # ------------------------------------------------------------------ async, batched
    async def afirst_turns(self, intents: Sequence[str]) -> list[UserTurn]:
        """Opening turns for many conversations at once (one model call each, batched by the provider)."""
        return await self.anext_turns(intents, [[] for _ in intents])

    async def anext_turns(self, intents: Sequence[str],
                          histories: Sequence[Sequence[Message | Mapping[str, str]]]) -> list[UserTurn]:
        """Next user turns for many conversations at once; ``histories[i]`` belongs to ``intents[i]``."""
        if isinstance(intents, str) or len(intents) != len(histories):
            raise UserError("anext_turns needs one history per intent (two lists of the same length)")
        prompts = [user_prompt(intent, history) for intent, history in zip(intents, histories)]
        return list(await asyncio.gather(*(self._turn(index, prompt) for index, prompt in enumerate(prompts))))

    async def _turn(self, index: int, prompt: list[dict[str, str]]) -> UserTurn:
        settings = await self.model.simulator_settings()
        if settings is not None:
            check_served_harness(settings, self.model.name)
            return await self._served_turn(index, prompt)
        intent = prompt[0]["content"]
        earlier = [m["content"] for m in prompt[1:] if m["role"] == "user"]
        turn = len(earlier) + 1
        params, events = self._generation(turn)
        rejected: list[tuple[_Sample, list[tuple[str, str]]]] = []
        call = 0
        while len(rejected) < self.guardrails.max_attempts:
            n = min(self.guardrails.samples_per_call, self.guardrails.max_attempts - len(rejected))
            seed = None if params.seed is None else (params.seed * 1_000_003 + index * 10_007 + call) % 2**31
            completion = (await self.model.agenerate([prompt], replace(params, n=n, seed=seed)))[0]
            call += 1
            for choice in completion.choices:
                sample = parse_sample(choice.text, choice.finish_reason == "length")
                violations = self.violations(sample, turn, intent, earlier)
                if not violations:
                    return UserTurn(sample.text, sample.ended, events)
                rejected.append((sample, violations))
                events.append(_event(violations, "resample"))
        kept = min(range(len(rejected)), key=lambda i: sum(SEVERITY[name] for name, _ in rejected[i][1]))
        sample, violations = rejected[kept]
        events.append(_event(violations, "fallback", f"no sample of {len(rejected)} passed; kept sample {kept + 1}"))
        return UserTurn(sample.text, sample.ended, events)

    async def _served_turn(self, index: int, prompt: list[dict[str, str]]) -> UserTurn:
        """The turn of a model that is a user simulator itself (a ``userloop serve --simulator`` server): one
        request without bans, its answer taken as the turn with the server's guardrail events. Conversation
        ``index`` gets seed ``seed + index * 10007``, so the server derives the seeds of its samples as this
        simulator would (the same seed and model give the same turn here and there)."""
        seed = None if self.params.seed is None else (self.params.seed + index * 10_007) % 2**31
        params = replace(self.params, n=1, seed=seed, banned_tokens=(), banned_first_tokens=(), logit_bias=())
        [choice] = (await self.model.agenerate([prompt], params))[0].choices
        return UserTurn(choice.text, choice.finish_reason == END_CONVERSATION_REASON,
                        [dict(event) for event in choice.events])

    def _generation(self, turn: int) -> tuple[GenerationParams, list[dict[str, str]]]:
        """The parameters for user turn ``turn``, with the bans the model can enforce, and their events."""
        guardrails, supports = self.guardrails, self.model.supports
        banned_first, banned, bias = list(self.params.banned_first_tokens), list(self.params.banned_tokens), {}
        events = []
        if guardrails.filter_first_tokens and supports.banned_first_tokens:
            banned_first.extend(guardrails.first_words)
            events.append({"guardrail": "filter_first_tokens", "action": "ban",
                           "detail": f"banned as first token: {', '.join(guardrails.first_words)}"})
        if guardrails.bans_end(turn):
            if supports.banned_tokens:
                banned.append(END_CONVERSATION)
            elif guardrails.end_token_ids:
                bias = dict(self.params.logit_bias) | {token: -100.0 for token in guardrails.end_token_ids}
            if supports.banned_tokens or guardrails.end_token_ids:
                events.append({"guardrail": "avoid_termination", "action": "ban",
                               "detail": f"{END_CONVERSATION} banned at user turn {turn}"
                                         + (" (logit bias)" if bias else "")})
        params = replace(self.params, banned_first_tokens=tuple(dict.fromkeys(banned_first)),
                         banned_tokens=tuple(dict.fromkeys(banned)), logit_bias=bias or self.params.logit_bias)
        return params, events

    def violations(self, sample: _Sample, turn: int, intent: str, earlier: Sequence[str]) -> list[tuple[str, str]]:
        """Each enabled guardrail ``sample`` fails, as (guardrail, why), most severe first."""
        guardrails = self.guardrails
        found = []
        if sample.ended and guardrails.bans_end(turn):
            found.append(("avoid_termination", f"ended the conversation at user turn {turn}"))
        words = normalise(sample.text)
        if guardrails.filter_repetition and words:
            repeated = next((i for i, text in enumerate(earlier, 1) if normalise(text) == words), None)
            if repeated is not None:
                found.append(("filter_repetition", f"repeats user turn {repeated}"))
            else:
                run = _longest_common_run(words, normalise(intent))
                if len(words) >= 4 and run >= min(len(words), guardrails.intent_copy_words):
                    found.append(("filter_repetition", f"copies {run} consecutive words of the intent"))
        if guardrails.filter_first_tokens and first_word(sample.text) in guardrails.first_words:
            found.append(("filter_first_tokens", f"starts with {first_word(sample.text)!r}"))
        if guardrails.length_thresholds and not sample.ended:
            count = len(sample.text.split())
            if sample.truncated:
                found.append(("length_thresholds", f"cut at max_new_tokens ({self.params.max_new_tokens} tokens)"))
            elif count > guardrails.max_words:
                found.append(("length_thresholds", f"{count} words > max_words {guardrails.max_words}"))
            elif count < guardrails.min_words:
                found.append(("length_thresholds", f"{count} words < min_words {guardrails.min_words}"))
        return found


def check_served_harness(settings: Mapping[str, Any], server: str) -> None:
    """A :class:`UserError` unless a simulator server's listed ``harness`` options are the protocol's own
    (:data:`PROTOCOL_HARNESS`), which this simulator's requests assume: a server for harnesses that swap
    roles, read an end text or an intent tag would misread them."""
    harness = settings.get("harness") or {}
    other = [f"{name} {value!r}" for name, value in harness.items() if value != PROTOCOL_HARNESS.get(name)]
    if other:
        raise UserError(f"{server} serves harnesses of another kind ({', '.join(other)}): userloop's own requests "
                        "need a simulator server started without --perspective, --end-text and --intent-tag")


def _event(violations: list[tuple[str, str]], action: str, prefix: str = "") -> dict[str, str]:
    detail = "; ".join(why for _, why in violations)
    return {"guardrail": "+".join(name for name, _ in violations), "action": action,
            "detail": f"{prefix}: {detail}" if prefix else detail}


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """A conversation history from a JSON file: a list of messages, or an object with ``messages``."""
    data = read_user_json(path, "history file")
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list):
        raise UserError(f"history file {path} must hold a JSON list of messages or an object with 'messages'")
    return messages


def user_prompt(intent: str, history: Sequence[Message | Mapping[str, str]]) -> list[dict[str, str]]:
    """``[system: intent, *history]``, with the history checked: user and assistant turns alternating,
    starting with the user and ending with the assistant (the user LM writes the turn after an assistant
    turn; a history ending on a user turn is refused rather than guessed at). The intent is the only
    system message: a system message in the history (the assistant's prompt) is refused too."""
    if not isinstance(intent, str) or not intent.strip():
        raise UserError("the intent must be a non-empty string")
    messages = chat_messages(history) if len(history) else []
    for index, message in enumerate(messages):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] == "system":
            raise UserError(f"history message {index + 1} is a system message: the user LM's only system message is "
                            "the intent (pass it as the intent; leave the assistant's system prompt out)")
        if message["role"] != expected:
            raise UserError(f"history message {index + 1} has role {message['role']!r}, expected {expected!r}: "
                            "the history alternates user and assistant turns, starting with the user")
    if messages and messages[-1]["role"] != "assistant":
        raise UserError("the history must end with an assistant turn (the user speaks next)")
    return [{"role": "system", "content": intent.strip()}, *messages]
