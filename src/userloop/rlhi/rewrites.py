"""User-guided rewrites (RLHI section 2.1): rewrite an unsatisfying answer the way the user's follow-up asks.

A candidate is a follow-up with negative feedback or a re-attempt (``taxonomy.NEGATIVE_FEEDBACK``,
``re_attempt``); the original is the assistant answer it reacts to, and the prompt is the conversation
up to and including the user's request that the original answered.

Rewriters:

* :class:`TestbedRewriter` (``testbed:rewriter``, offline): the testbed's scripted assistant. It reads what the
  feedback asks for (``taxonomy.feedback_reasons``: "too long", "use bullet points", ...), measures the
  original's style (length, list or prose, tone, vocabulary), moves the style as the testbed assistant
  does when a user complains (``testbed.assistant.adjust``), and re-renders the original's substance
  (its sentences minus the assistant's stock openers, closers and filler) in the new style
  (``testbed.assistant.render``). It changes style only: feedback that asks for other content (a wrong
  answer, a missed request) gets no rewrite, and is counted.
* :class:`TestbedEditor` (``testbed:editor``, offline): the same style change made as a minimal edit, as a
  rewriter told to keep what was right would make it: the original is cut into the parts the testbed assistant
  lays out (opener, lead, points, filler sentences, code, closer) and only the parts of the axes the feedback
  asks about change (opener, closer, connectors and contractions for tone; the filler sentences' bank for
  vocabulary; filler sentences dropped or added for length; the layout for list or prose). The rest stays word
  for word; an unchanged style gives the original back exactly.
* :class:`TestbedCorrector` (``testbed:corrector``, offline): the editor that also makes the corrections users
  state ("it's 5, not 6", "you didn't mention the gloves", a function's bug; :mod:`userloop.rlhi.corrections`),
  so feedback on a wrong answer yields a pair too. The other two leave such feedback without a rewrite.
* :class:`ModelRewriter` (any chat model spec): our prompt with the conversation, the original, the
  feedback and the user's persona.

Quality filter (the paper found filtering essential): the rewrite must differ from the original
(compared lower-cased with whitespace collapsed) and address the feedback, judged by
:class:`ScorerJudge` (``testbed:judge``, testbed only: the persona-match score of the user's true persona
must rise; for a stated correction, the correction must be made (absent from the original, present in the
rewrite) and the score must not fall) or :class:`ModelJudge` (a chat model answering JSON).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from userloop.conversation import Conversation
from userloop.errors import UserError
from userloop.rlhi.corrections import applied, corrected, stated_correction
from userloop.rlhi.followups import FollowUp, Labels, clip
from userloop.rlhi.llm import ask_validated, parse_json_object
from userloop.rlhi.reward_scorers import TestbedScorer
from userloop.rlhi.taxonomy import NEGATIVE_FEEDBACK, REASON_PREFERENCE, feedback_reasons
from userloop.testbed import assistant, score
from userloop.testbed.assistant import CONTRACTIONS, Style, adjust, render
from userloop.testbed.persona_match import technicality, text_features


@dataclass(frozen=True, slots=True)
class Candidate:
    """A follow-up asking for a better answer, with what a rewrite needs."""

    followup: FollowUp
    labels: Labels
    prompt: list[dict[str, str]]     # the conversation up to and including the request the original answered
    original: str

    @property
    def feedback(self) -> str:
        """The feedback span, or the whole follow-up when there is none (a re-attempt without feedback)."""
        return self.labels.feedback_text or self.followup.text


def is_candidate(labels: Labels) -> bool:
    return labels.feedback_type in NEGATIVE_FEEDBACK or labels.relation == "re_attempt"


def candidates(conversation: Conversation, labelled: Sequence[tuple[FollowUp, Labels]]) -> list[Candidate]:
    """The rewrite candidates among one conversation's classified follow-ups."""
    out = []
    messages = conversation.messages
    for followup, labels in labelled:
        if is_candidate(labels):
            answer = followup.index - 1
            prompt = [{"role": m.role, "content": m.content} for m in messages[:answer]]
            out.append(Candidate(followup, labels, prompt, messages[answer].content))
    return out


def normalised(text: str) -> str:
    return " ".join(text.lower().split())


# ----------------------------------------------------------------------------- the testbed rewriter
def _stock_sentences() -> frozenset[str]:
    banks = (*assistant.OPENERS.values(), *assistant.CLOSERS.values(), assistant.SIMPLE, assistant.MIXED,
             assistant.TECHNICAL, assistant.LEADS_TECHNICAL)
    sentences = {s for bank in banks for s in bank}
    return frozenset(normalised(v) for s in sentences for v in (s, assistant._contract(s)))


_CONNECTOR = re.compile(r"^(?:Furthermore|Additionally|Moreover|Consequently|Therefore|Also|Plus|Basically|Honestly|Btw), ")
_PIECE = re.compile(r"[^.!?]+[.!?]+|[^.!?]+$")
_EXPAND = {short: long for long, short in CONTRACTIONS}
_CONTRACTED_WORD = re.compile(r"\b(?:" + "|".join(re.escape(s) for s in _EXPAND) + r")\b")


def _expanded(text: str) -> str:
    return _CONTRACTED_WORD.sub(lambda m: _EXPAND[m.group(0)], text)


def measured_style(text: str):
    """The testbed assistant's style axes read off any text (with the scorer's own measurements)."""
    f = text_features(text)
    formality = (f["formal_markers"] + 0.5) / (f["formal_markers"] + f["casual_markers"] + 1)
    level = technicality(f["long_word_share"])
    return Style(length="short" if f["words"] < 60 else "medium" if f["words"] < 130 else "long",
                 structure="list" if f["list_lines"] >= 2 else "prose",
                 tone="formal" if formality >= 0.5 else "casual",
                 vocabulary="simple" if level < 0.25 else "mixed" if level < 0.75 else "technical")


def substance(text: str, stock: frozenset[str]) -> tuple[list[str], str | None]:
    """The original's own sentences (stock openers, closers and filler removed) and its code block."""
    block = None
    if "```" in text:
        parts = text.split("```")
        block = "```" + "```".join(parts[1:-1]) + "```" if len(parts) >= 3 else None
        text = parts[0] + " " + (parts[-1] if len(parts) >= 3 else "")
    sentences = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s+", "", line).strip()
        for piece in _PIECE.findall(line):
            sentence = piece.strip()
            bare = _CONNECTOR.sub("", sentence)
            bare = bare[:1].upper() + bare[1:]
            if sentence and normalised(bare) not in stock and normalised(sentence) not in stock:
                sentences.append(sentence)
    return sentences, block


def asked_styles(candidate: Candidate, counts: Counter) -> tuple[Style, Style] | None:
    """The original's measured style and the style its feedback asks for, or None (counted) when the feedback
    asks for no style change."""
    reasons = [r for r in feedback_reasons(candidate.labels.feedback_text) if r in REASON_PREFERENCE]
    if not reasons:
        counts["no style change asked"] += 1
        return None
    before = after = measured_style(candidate.original)
    for reason in reasons:
        after = adjust(after, reason)
    return before, after


@dataclass
class TestbedRewriter:
    """The testbed's scripted assistant as an offline rewriter (style changes only; module docstring)."""

    __test__ = False   # not a pytest class, whatever its name
    counts: Counter = field(default_factory=Counter)
    _stock: frozenset[str] = field(default_factory=_stock_sentences, repr=False)

    def rewrite(self, batch: Sequence[Candidate], personas: Sequence[str | None]) -> list[str | None]:
        out: list[str | None] = []
        for candidate in batch:
            styles = asked_styles(candidate, self.counts)
            rng = random.Random(f"{candidate.followup.conversation_id}-{candidate.followup.index}")
            out.append(None if styles is None else self.restyled(candidate.original, *styles, rng))
        return out

    def restyled(self, original: str, before: Style, after: Style, rng: random.Random) -> str:
        """``original``'s own sentences re-rendered in the style ``after``."""
        sentences, block = substance(original, self._stock)
        if after.tone == "formal":
            sentences = [_expanded(s) for s in sentences]
        lead, points = (sentences[0], sentences[1:]) if sentences else ("", [])
        return render(rng, after, lead, points, block)


# ----------------------------------------------------------------------------- the testbed editor
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _variants(sentence: str) -> tuple[str, str]:
    return normalised(sentence), normalised(assistant._contract(sentence))


def _bank_index() -> dict[str, tuple[str, int]]:
    """Each filler sentence (and its contracted form) -> (vocabulary, position in its bank)."""
    banks = {"simple": assistant.SIMPLE, "mixed": assistant.MIXED, "technical": assistant.TECHNICAL}
    return {v: (vocabulary, i) for vocabulary, bank in banks.items() for i, s in enumerate(bank) for v in _variants(s)}


_FILLERS = _bank_index()
_BANKS = {"simple": assistant.SIMPLE, "mixed": assistant.MIXED, "technical": assistant.TECHNICAL}


@dataclass
class _Layout:
    """An answer cut into the parts the testbed assistant lays out (``testbed.assistant.render``); ``head`` and
    ``items`` are the original's own text, kept verbatim."""

    opener: str | None
    tech_lead: str | None
    head: str                               # the first paragraph after the opener: the lead (and, in prose, the points)
    items: list[str]                        # list points that are the original's own
    fillers: list[tuple[str | None, str, int, bool]]  # (connector, vocabulary, position in its bank, contracted)
    other: list[str]                        # paragraphs the layout does not explain, kept as they are
    block: str | None
    closer: str | None
    listed: bool                            # laid out as a list: ``head`` is the lead alone


def _stock_piece(piece: str, bank: tuple[str, ...] | dict) -> str | None:
    """The stock sentence of ``bank`` that ``piece`` is (in either contraction), or None."""
    key = normalised(piece)
    return next((s for s in bank if key in _variants(s)), None)


def _filler(piece: str) -> tuple[str | None, str, int, bool] | None:
    match = _CONNECTOR.match(piece)
    bare = piece[match.end():] if match else piece
    key = normalised(bare[:1].upper() + bare[1:])
    found = _FILLERS.get(key)
    if not found:
        return None
    return match.group(0) if match else None, *found, key != normalised(_BANKS[found[0]][found[1]])


def _layout(text: str) -> _Layout:
    block = None
    if text.count("```") >= 2:
        start, end = text.index("```"), text.rindex("```") + 3
        block, text = text[start:end], text[:start] + "\n\n" + text[end:]
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    closers = tuple(s for tone in assistant.CLOSERS.values() for s in tone)
    closer = paragraphs.pop() if len(paragraphs) > 1 and _stock_piece(paragraphs[-1], closers) else None
    first = paragraphs.pop(0) if paragraphs else ""
    opener = tech_lead = None
    for bank, name in ((tuple(s for tone in assistant.OPENERS.values() for s in tone), "opener"),
                       (assistant.LEADS_TECHNICAL, "tech_lead")):
        piece = _PIECE.match(first)
        if piece and _stock_piece(piece.group(0), bank):
            if name == "opener":
                opener = piece.group(0).strip()
            else:
                tech_lead = piece.group(0).strip()
            first = first[piece.end():].strip()
    items, fillers, other = [], [], []
    listed = False
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        if all(line.startswith("- ") for line in lines):
            listed = True
            for line in lines:
                found = _filler(line[2:].strip())
                if found:
                    fillers.append(found)
                else:
                    items.append(line[2:].strip())
            continue
        pieces = [p.strip() for p in _PIECE.findall(paragraph)]
        found = [_filler(p) for p in pieces]
        if pieces and all(found):
            fillers.extend(found)
        else:
            other.append(paragraph)
    return _Layout(opener, tech_lead, first, items, fillers, other, block, closer, listed)


def _filler_text(filler: tuple[str | None, str, int, bool]) -> str:
    connector, vocabulary, position, contracted = filler
    sentence = _BANKS[vocabulary][position]
    sentence = assistant._contract(sentence) if contracted else sentence
    return connector + sentence[0].lower() + sentence[1:] if connector else sentence


def _composed(layout: _Layout, structure: str) -> str:
    """``layout`` as the testbed assistant lays out a reply of that ``structure`` (``render``'s layout)."""
    extra = [_filler_text(f) for f in layout.fillers]
    if structure == "list":
        lead, *points = _SENTENCE_END.split(layout.head) if layout.head and not layout.listed else [layout.head]
        parts = [" ".join(p for p in (layout.opener, layout.tech_lead, lead) if p),
                 *layout.other, "\n".join(f"- {item}" for item in [*points, *layout.items, *extra])]
    else:
        parts = [" ".join(p for p in (layout.opener, layout.tech_lead, layout.head, *layout.items) if p),
                 *layout.other, " ".join(extra)]
    if layout.block:
        parts.insert(1, layout.block)
    parts.append(layout.closer or "")
    return "\n\n".join(p for p in parts if p)


def _in_other(bank: dict[str, tuple[str, ...]], sentence: str | None, tone: str) -> str | None:
    """The sentence of ``bank[tone]`` at the position ``sentence`` has in the other tone's list."""
    if sentence is None:
        return None
    for values in bank.values():
        found = _stock_piece(sentence, values)
        if found:
            return bank[tone][values.index(found) % len(bank[tone])]
    return sentence


@dataclass
class TestbedEditor(TestbedRewriter):
    """The testbed rewriter as a minimal editor: it changes what the feedback asks for and keeps the rest of
    the original, word for word where it can (module docstring)."""

    __test__ = False   # not a pytest class, whatever its name

    def restyled(self, original: str, before: Style, after: Style, rng: random.Random) -> str:
        return edited(original, before, after, rng)


@dataclass
class TestbedCorrector(TestbedEditor):
    """The testbed editor that also makes the corrections users state (module docstring)."""

    __test__ = False   # not a pytest class, whatever its name

    def rewrite(self, batch: Sequence[Candidate], personas: Sequence[str | None]) -> list[str | None]:
        out: list[str | None] = []
        for candidate in batch:
            correction = stated_correction(candidate.labels.feedback_type, candidate.followup.text, candidate.original)
            fixed = None if correction is None else corrected(correction, candidate.original, candidate.prompt)
            if correction is not None:
                self.counts["correction made" if fixed is not None else "correction not made"] += 1
            out.append(fixed)
        rest = [i for i, fixed in enumerate(out) if fixed is None]
        for i, styled in zip(rest, super().rewrite([batch[i] for i in rest], [personas[i] for i in rest]), strict=True):
            out[i] = styled
        return out


def edited(original: str, before: Style, after: Style, rng: random.Random) -> str:
    """``original`` (measured as ``before``) with the axes where ``after`` differs changed, and nothing else."""
    layout = _layout(original)
    casual = after.tone == "casual"
    if after.tone != before.tone:
        layout.opener = _in_other(assistant.OPENERS, layout.opener, after.tone)
        layout.closer = _in_other(assistant.CLOSERS, layout.closer, after.tone)
        layout.fillers = [((_in_other(assistant.CONNECTORS, c, after.tone) or "").rstrip() + " " if c else None, v, i, casual)
                          for c, v, i, _ in layout.fillers]
        change = assistant._contract if casual else _expanded
        layout.head, layout.items, layout.other = change(layout.head), [change(i) for i in layout.items], [
            assistant._contract_outside_code(o) if casual else _expanded(o) for o in layout.other]
    if after.vocabulary != before.vocabulary:
        bank = _BANKS[after.vocabulary]
        used: set[int] = set()
        fillers = []
        for connector, _, position, contracted in layout.fillers:
            position %= len(bank)
            while position in used and len(used) < len(bank):
                position = (position + 1) % len(bank)
            used.add(position)
            fillers.append((connector, after.vocabulary, position, contracted))
        layout.fillers = fillers
        layout.tech_lead = assistant.LEADS_TECHNICAL[0] if after.vocabulary == "technical" else None
    if after.length != before.length:
        low, high = assistant.LENGTH_WORDS[after.length]
        target = rng.randint(low, high)
        lengths = assistant.STYLE_VALUES["length"]
        if lengths.index(after.length) < lengths.index(before.length):
            while layout.fillers and len(_composed(layout, after.structure).split()) > target:
                layout.fillers.pop()
            while len(layout.items) > 2 and len(_composed(layout, after.structure).split()) > target:
                layout.items.pop(0)
        else:
            vocabulary = layout.fillers[0][1] if layout.fillers else after.vocabulary
            present = {i for _, v, i, _ in layout.fillers if v == vocabulary}
            spare = [i for i in range(len(_BANKS[vocabulary])) if i not in present]
            rng.shuffle(spare)
            connectors = assistant.CONNECTORS[after.tone]
            while spare and len(_composed(layout, after.structure).split()) < target:
                layout.fillers.append((rng.choice(connectors) if rng.random() < 0.5 else None, vocabulary, spare.pop(), casual))
    return _composed(layout, after.structure)


# ----------------------------------------------------------------------------- a chat model as rewriter
REWRITE_SYSTEM = """You improve a chat assistant's answer using the user's own reaction to it. You get the conversation up to the user's request, the assistant's original answer, the user's feedback on it, and a description of the user. Write a new answer to the same request that fixes what the feedback points out and suits the user. Keep what was right in the original. Reply with the new answer only: no preamble, no comments about the change."""
REWRITE_RETRY = "Your answer was not usable: {error}. Reply with the new answer only."
MAX_REWRITE_TOKENS = 1024


def rewrite_messages(candidate: Candidate, persona: str | None) -> list[dict[str, str]]:
    history = "\n\n".join(f"[{m['role']}]\n{clip(m['content'])}" for m in candidate.prompt)
    user = (f"Conversation:\n<<<\n{history}\n>>>\n\nOriginal answer:\n<<<\n{clip(candidate.original, 6000)}\n>>>\n\n"
            f"User's feedback:\n<<<\n{candidate.feedback}\n>>>\n\nThe user: {persona or 'unknown'}")
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}]


@dataclass
class ModelRewriter:
    model: Any
    max_new_tokens: int = MAX_REWRITE_TOKENS
    counts: Counter = field(default_factory=Counter)

    def rewrite(self, batch: Sequence[Candidate], personas: Sequence[str | None]) -> list[str | None]:
        def validate(i: int, answer: str) -> tuple[str | None, str | None]:
            text = answer.strip()
            if not text:
                return None, "empty answer"
            return text, None

        return ask_validated(self.model, [rewrite_messages(c, p) for c, p in zip(batch, personas, strict=True)],
                             validate, REWRITE_RETRY, self.max_new_tokens, self.counts)


# ----------------------------------------------------------------------------- quality filter
@dataclass
class ScorerJudge:
    """Testbed judge: the persona-match score of the user's true persona must rise with the rewrite; a rewrite
    that makes the correction the user stated (absent from the original, present in the rewrite) must not lower
    it."""

    true_personas: dict[str, dict[str, Any]]
    counts: Counter = field(default_factory=Counter)

    @classmethod
    def from_data(cls, data: Path | None) -> ScorerJudge:
        """The judge for testbed ``data`` (a raw testbed folder, or a folder prepared from one)."""
        return cls(TestbedScorer.from_data(data).true_personas)

    def accept(self, batch: Sequence[Candidate], rewrites: Sequence[str]) -> list[bool]:
        out = []
        for candidate, rewrite in zip(batch, rewrites, strict=True):
            persona = self.true_personas.get(candidate.followup.user_id or "")
            if persona is None:
                raise UserError(f"--judge testbed:judge needs the testbed truth of user {candidate.followup.user_id}; "
                                "on other data give --judge SPEC (a chat model)")
            before, after = score(persona, candidate.original), score(persona, rewrite)
            correction = stated_correction(candidate.labels.feedback_type, candidate.followup.text, candidate.original)
            made = (correction is not None and applied(correction, rewrite, candidate.prompt)
                    and not applied(correction, candidate.original, candidate.prompt))
            if made:
                out.append(after >= before)
            else:
                out.append(after > before)
        return out


JUDGE_SYSTEM = """You check a rewritten assistant answer. You get the user's feedback on an original answer, the original, and the rewrite. Does the rewrite address the feedback (it does what the feedback asks, and is still an answer to the request)? Answer with one JSON object and nothing else: {"addresses_feedback": true or false}"""
JUDGE_RETRY = 'Your answer was not usable: {error}. Answer with {{"addresses_feedback": true}} or {{"addresses_feedback": false}} only.'


@dataclass
class ModelJudge:
    """A chat model decides whether each rewrite addresses the feedback (JSON answer; unusable twice: rejected)."""

    model: Any
    counts: Counter = field(default_factory=Counter)

    def accept(self, batch: Sequence[Candidate], rewrites: Sequence[str]) -> list[bool]:
        def validate(i: int, answer: str) -> tuple[bool | None, str | None]:
            data = parse_json_object(answer)
            if data is None or not isinstance(data.get("addresses_feedback"), bool):
                return None, 'no {"addresses_feedback": true|false} object'
            return data["addresses_feedback"], None

        prompts = [[{"role": "system", "content": JUDGE_SYSTEM},
                    {"role": "user", "content": f"Feedback:\n<<<\n{c.feedback}\n>>>\n\nOriginal:\n<<<\n{clip(c.original, 6000)}\n>>>\n\n"
                                                f"Rewrite:\n<<<\n{clip(r, 6000)}\n>>>"}] for c, r in zip(batch, rewrites, strict=True)]
        return [verdict is True for verdict in ask_validated(self.model, prompts, validate, JUDGE_RETRY, 20, self.counts)]


@dataclass
class RewriteResult:
    candidate: Candidate
    rewrite: str | None
    accepted: bool
    why: str        # passed | no rewrite | identical | judge rejected


def rewrite_and_filter(batch: Sequence[Candidate], personas: Sequence[str | None], rewriter, judge) -> list[RewriteResult]:
    """Rewrite a batch, drop rewrites equal to the original, judge the rest."""
    rewrites = rewriter.rewrite(batch, personas)
    results: list[RewriteResult | None] = [None] * len(batch)
    to_judge = []
    for i, (candidate, rewrite) in enumerate(zip(batch, rewrites, strict=True)):
        if rewrite is None:
            results[i] = RewriteResult(candidate, None, False, "no rewrite")
        elif normalised(rewrite) == normalised(candidate.original):
            results[i] = RewriteResult(candidate, rewrite, False, "identical")
        else:
            to_judge.append(i)
    verdicts = judge.accept([batch[i] for i in to_judge], [rewrites[i] for i in to_judge]) if to_judge else []
    for i, verdict in zip(to_judge, verdicts, strict=True):
        results[i] = RewriteResult(batch[i], rewrites[i], verdict, "passed" if verdict else "judge rejected")
    return [r for r in results if r is not None]

