"""Corrections users state, applied as edits (``testbed:corrector``; RLHI section 2.1's user-guided rewrites
for feedback that says what was wrong, not how it should sound).

A follow-up labelled ``make_aware_with_correction`` ("That is not correct: it's 5, not 6.") names what to
fix. :func:`stated_correction` reads it, in the testbed users' phrasings (docs/testbed.md), as one of:

* ``value``: "it's RIGHT, not WRONG" / "the answer should be RIGHT, not WRONG" (a number, a name, a year):
  every whole-word WRONG of the original becomes RIGHT (a number: its last occurrence, the final answer);
* ``mention``: "you didn't mention the WORD": a sentence (a line, in verse) naming it joins the written piece
  (the paragraph sharing the most words with the user's requests);
* ``limit``: "it's supposed to be under N words": the piece loses sentences from its end (never one naming
  a word the user asked to mention) until it is under N words;
* ``misfit``: "ITEM isn't what I asked for, I said WHAT": ITEM's line (or sentence) goes, and the first
  catalogue item with the tag WHAT asks for that the answer does not name yet takes its place;
* ``code``: any stated correction of an answer whose function is one of the testbed's (``def NAME(``) and
  not yet its reference solution: the function becomes the reference solution, as the testbed assistant
  fixes a bug it is told about.

The catalogues and reference functions are the testbed world's knowledge, what an LLM rewriter would bring;
the user's task and its truth are not read. :func:`applied` tells whether a text carries a correction (the
quality filter's test, :class:`~userloop.rlhi.rewrites.ScorerJudge`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from userloop.testbed.families.code import FUNCTIONS
from userloop.testbed.families.recommend import CATALOGUES

WITH_CORRECTION = "make_aware_with_correction"
_READ_CHARS = 400
_VALUE = re.compile(r"(?:\bbe|\bit's|\bit is)\s+(.+?),\s*not\s+(.+?)\s*[.!?]*\s*$", re.IGNORECASE)
_LIMIT = re.compile(r"supposed to be under (\d+) words", re.IGNORECASE)
_MENTION = re.compile(r"didn'?t mention (?:the )?(.+?)\s*[.!?]*\s*$", re.IGNORECASE)
_MISFIT = re.compile(r"isn'?t what i asked for, i said (.+?)\s*[.!?]*\s*$", re.IGNORECASE)
_ASKED_MENTION = re.compile(r"mention (?:the )?([a-z][\w-]*)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
_FUNCTIONS = {fn.name: fn for fn in FUNCTIONS}


@dataclass(frozen=True, slots=True)
class Correction:
    """What a follow-up says was wrong (module docstring): ``kind`` and its two parts."""

    kind: str          # value | mention | limit | misfit | code
    right: str = ""    # value: the right value; mention: the word; limit: the word limit; misfit: the tag; code: name
    wrong: str = ""    # value: the wrong value; misfit: the item that does not fit


def stated_correction(feedback_type: str | None, followup: str, original: str) -> Correction | None:
    """The correction ``followup`` states about ``original``, or None (not a stated correction, or one this
    module cannot read)."""
    if feedback_type != WITH_CORRECTION:
        return None
    followup = followup[-_READ_CHARS:]   # a stated correction is one short sentence; long texts are not scanned whole
    function = _function_in(original)
    if function is not None and _FUNCTIONS[function].code not in original:   # a right function has nothing to fix
        return Correction("code", function)
    if found := _LIMIT.search(followup):
        return Correction("limit", found.group(1))
    if found := _MENTION.search(followup):
        return Correction("mention", found.group(1))
    if found := _MISFIT.search(followup):
        item = _item_named(followup[:found.start()])
        tag = _tag_asked(found.group(1))
        return None if item is None or tag is None else Correction("misfit", tag, item)
    if found := _VALUE.search(followup):
        return Correction("value", found.group(1).strip(), found.group(2).strip())
    return None


def corrected(correction: Correction, original: str, prompt: list[dict[str, str]]) -> str | None:
    """``original`` with ``correction`` made, or None when it cannot be made there."""
    if correction.kind == "value":
        found = list(_whole(correction.wrong).finditer(original))
        if not found:
            return None
        if _NUMBER.fullmatch(correction.wrong):   # a final answer: its last statement (the steps are the user's to check)
            found = found[-1:]
        for match in reversed(found):
            original = original[:match.start()] + correction.right + original[match.end():]
        return original
    if correction.kind == "code":
        return _with_reference(original, correction.right)
    if correction.kind == "misfit":
        return _refitted(original, correction.wrong, correction.right)
    paragraphs = original.split("\n\n")
    if correction.kind == "mention":
        i = paragraphs.index(_piece(paragraphs, prompt))
        lines = paragraphs[i].rstrip().split("\n")
        if len(lines) > 1:   # verse: one line more
            lines.append(f"and all the while, the {correction.right}.")
        else:
            lines[-1] += f" I also want to mention the {correction.right}."
        paragraphs[i] = "\n".join(lines)
        return "\n\n".join(paragraphs)
    return _shortened(paragraphs, int(correction.right), prompt)


def applied(correction: Correction, text: str, prompt: list[dict[str, str]]) -> bool:
    """Whether ``text`` carries ``correction`` (the check :func:`corrected` is made to pass)."""
    if correction.kind == "value":
        rights, wrongs = list(_whole(correction.right).finditer(text)), list(_whole(correction.wrong).finditer(text))
        return bool(rights) and (not wrongs or (bool(_NUMBER.fullmatch(correction.wrong)) and wrongs[-1].start() < rights[-1].start()))
    if correction.kind == "code":
        return _FUNCTIONS[correction.right].code in text
    if correction.kind == "misfit":
        return not _whole(correction.wrong).search(text)
    if correction.kind == "mention":
        return bool(_whole(correction.right).search(text))
    paragraphs, asked = text.split("\n\n"), _asked_words(prompt)
    naming = [p for p in paragraphs if any(_whole(w).search(p) for w in asked)] or [_piece(paragraphs, prompt)]
    return all(len(p.split()) < int(correction.right) for p in naming)


# ----------------------------------------------------------------------------- reading
def _whole(phrase: str) -> re.Pattern:
    return re.compile(rf"(?<![\w.]){re.escape(phrase)}(?![\w]|\.\d)", re.IGNORECASE)


def _function_in(text: str) -> str | None:
    return next((name for name in re.findall(r"\bdef (\w+)\s*\(", text) if name in _FUNCTIONS), None)


def _items() -> list[tuple[str, str, set[str], str]]:
    """Every catalogue item: (name, blurb, tags, domain)."""
    return [(name, blurb, tags, domain) for domain, (_, _, items) in CATALOGUES.items() for name, blurb, tags in items]


def _item_named(text: str) -> str | None:
    named = [(found.start(), name) for name, _, _, _ in _items() if (found := _whole(name).search(text))]
    return max(named)[1] if named else None


def _tag_asked(phrase: str) -> str | None:
    wanted = " ".join(phrase.lower().split())
    return next((tag for _, (_, tags, _) in CATALOGUES.items() for tag, asked in tags.items() if asked.lower() == wanted), None)


def _asked_words(prompt: list[dict[str, str]]) -> set[str]:
    """The words the user asked the piece to mention."""
    return {w.lower() for m in prompt if m["role"] == "user" for w in _ASKED_MENTION.findall(m["content"])}


# ----------------------------------------------------------------------------- editing
def _with_reference(original: str, name: str) -> str | None:
    start = original.find(f"def {name}")
    if start < 0:
        return None
    end = original.find("```", start)
    end = len(original) if end < 0 else end
    return original[:start] + _FUNCTIONS[name].code + "\n" + original[end:]


def _refitted(original: str, item: str, tag: str) -> str | None:
    pattern = _whole(item)
    lines = original.split("\n")
    at = next((i for i, line in enumerate(lines) if pattern.search(line)), None)
    if at is None:
        return None
    domain = next(d for name, _, _, d in _items() if name == item)
    named = {name for name, _, _, _ in _items() if _whole(name).search(original)}
    fit = next(((name, blurb) for name, blurb, tags in CATALOGUES[domain][2] if tag in tags and name not in named), None)
    line = lines[at]
    if marker := re.match(r"\s*(?:[-*\u2022]|\d{1,2}[.)])\s", line):
        lines[at:at + 1] = [f"{marker.group(0)}{fit[0][:1].upper() + fit[0][1:]}: {fit[1]}."] if fit else []
        return "\n".join(lines)
    sentences = _SENTENCE.findall(line)
    kept = [s for s in sentences if not pattern.search(s)]
    if fit:
        kept.append(f" {fit[0][:1].upper() + fit[0][1:]}: {fit[1]}.")
    lines[at] = "".join(kept).strip()
    return "\n".join(lines)


def _piece(paragraphs: list[str], prompt: list[dict[str, str]]) -> str:
    """The written piece: the paragraph sharing the most words with the user's requests (the filler and notes
    around it share few)."""
    asked = {w.lower() for m in prompt if m["role"] == "user" for w in re.findall(r"[A-Za-z]{4,}", m["content"])}
    return max(paragraphs, key=lambda p: (sum(w.lower() in asked for w in re.findall(r"[A-Za-z]{4,}", p)), len(p.split())))


def _shortened(paragraphs: list[str], limit: int, prompt: list[dict[str, str]]) -> str | None:
    """The piece with sentences dropped from its end (from lines of several sentences first; never one naming an
    asked-for word) until it is under ``limit`` words."""
    piece, asked = _piece(paragraphs, prompt), _asked_words(prompt)
    lines = [_SENTENCE.findall(line) or [line] for line in piece.split("\n")]
    while len(" ".join(s for line in lines for s in line).split()) >= limit:
        keep = [(i, j) for i, line in enumerate(lines) for j, s in enumerate(line) if not any(_whole(w).search(s) for w in asked)]
        several = [(i, j) for i, j in keep if len(lines[i]) > 1]
        if not (several or keep) or sum(map(len, lines)) <= 1:
            return None
        i, j = (several or keep)[-1]
        del lines[i][j]
        if not lines[i]:
            del lines[i]
    paragraphs[paragraphs.index(piece)] = "\n".join("".join(line).strip() for line in lines)
    return "\n\n".join(paragraphs)
