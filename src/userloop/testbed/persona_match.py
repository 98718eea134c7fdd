"""The persona-match scorer: how well a response fits a persona, in [0, 1].

It is the testbed's ground-truth reward and judge (RLHI's persona-conditioned reward, made exact):
the mean of four fits, one per preference field of the persona, each read off the text alone.

* **detail** (length): ``brief`` scores 1 up to 60 words, falling to 0 at 180 words;
  ``detailed`` scores 0 up to 40 words, rising to 1 at 150 words; both linear in log(words).
* **structure**: structuredness is 0 with fewer than two list lines or headings, else
  min(1, lines / 3); ``structured`` scores it, ``prose`` scores 1 minus it.
* **tone**: formality = (formal markers + 0.5) / (formal + casual markers + 1), where formal markers
  are words such as "certainly", "therefore", "would" and casual markers are contractions,
  exclamation marks and words such as "hey", "sure", "gonna"; ``formal`` scores formality,
  ``casual`` 1 minus it.
* **expertise** (vocabulary): technicality = clip((share of words of 9+ letters - 0.04) / 0.10, 0, 1);
  ``expert`` scores it, ``novice`` 1 minus it, ``intermediate`` 1 between technicality 0.25 and 0.75,
  falling linearly to 0 at 0 and 1.

An empty response scores 0. The scorer knows nothing of how the testbed's assistant writes, so it
scores any model's text the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from userloop.testbed.persona import Persona

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_LIST_LINE = re.compile(r"^[ \t]*(?:[-*\u2022]|\d{1,2}[.)]|#{1,6})[ \t]+\S", re.MULTILINE)
_CONTRACTION = re.compile(r"^[A-Za-z]+'(?:s|re|ll|ve|d|t|m)$", re.IGNORECASE)
FORMAL_MARKERS = frozenset((
    "certainly", "therefore", "however", "furthermore", "additionally", "moreover", "regarding", "sincerely",
    "kindly", "would", "shall", "consequently", "thus", "hence", "assist", "require", "accordingly",
    "nevertheless", "subsequently", "ensure", "respectfully", "indeed", "appreciate",
))
CASUAL_MARKERS = frozenset((
    "hey", "hi", "sure", "ok", "okay", "gonna", "wanna", "kinda", "cool", "awesome", "super", "stuff", "yeah",
    "yep", "btw", "lol", "cheers", "pretty", "totally", "basically", "honestly", "nope", "tons", "grab", "guys",
))
LONG_WORD_LETTERS = 9


def text_features(response: str) -> dict[str, float]:
    """The measurements the scorer reads: words, list lines, formal / casual markers, long-word share."""
    words = _WORD.findall(response)
    lowered = [w.lower() for w in words]
    casual = sum(w in CASUAL_MARKERS or bool(_CONTRACTION.match(w)) for w in lowered) + response.count("!")
    formal = sum(w in FORMAL_MARKERS for w in lowered)
    long_words = sum(len(w) >= LONG_WORD_LETTERS for w in words)
    return {
        "words": len(words),
        "list_lines": len(_LIST_LINE.findall(response)),
        "formal_markers": formal,
        "casual_markers": casual,
        "long_word_share": long_words / len(words) if words else 0.0,
    }


def _ramp(x: float, low: float, high: float) -> float:
    return min(1.0, max(0.0, (x - low) / (high - low)))


def detail_fit(detail: str, words: int) -> float:
    if words <= 0:
        return 0.0
    if detail == "brief":
        return 1.0 - _ramp(math.log(words), math.log(60), math.log(180))
    return _ramp(math.log(words), math.log(40), math.log(150))


def structure_fit(structure: str, list_lines: int) -> float:
    structuredness = 0.0 if list_lines < 2 else min(1.0, list_lines / 3)
    return structuredness if structure == "structured" else 1.0 - structuredness


def tone_fit(tone: str, formal_markers: int, casual_markers: int) -> float:
    formality = (formal_markers + 0.5) / (formal_markers + casual_markers + 1)
    return formality if tone == "formal" else 1.0 - formality


def technicality(long_word_share: float) -> float:
    return _ramp(long_word_share, 0.04, 0.14)


def expertise_fit(expertise: str, long_word_share: float) -> float:
    level = technicality(long_word_share)
    if expertise == "expert":
        return level
    if expertise == "novice":
        return 1.0 - level
    return 1.0 - max(0.0, abs(level - 0.5) - 0.25) / 0.25


def _preferences(persona: Persona | Mapping[str, Any]) -> dict[str, str]:
    get = persona.get if isinstance(persona, Mapping) else lambda name: getattr(persona, name)
    allowed = {"expertise": ("novice", "intermediate", "expert"), "detail": ("brief", "detailed"),
               "tone": ("casual", "formal"), "structure": ("prose", "structured")}
    out = {}
    for name, values in allowed.items():
        value = get(name)
        if value not in values:
            raise ValueError(f"persona field {name!r} must be one of {', '.join(values)}, got {value!r}")
        out[name] = value
    return out


def score_components(persona: Persona | Mapping[str, Any], response: str) -> dict[str, float]:
    """The four fits (``detail``, ``structure``, ``tone``, ``expertise``), each in [0, 1]."""
    return fits_from_features(persona, text_features(response))


def fits_from_features(persona: Persona | Mapping[str, Any], f: dict[str, float]) -> dict[str, float]:
    """:func:`score_components` from already measured :func:`text_features`."""
    prefs = _preferences(persona)
    if not f["words"]:
        return dict.fromkeys(("detail", "structure", "tone", "expertise"), 0.0)
    return {
        "detail": detail_fit(prefs["detail"], f["words"]),
        "structure": structure_fit(prefs["structure"], f["list_lines"]),
        "tone": tone_fit(prefs["tone"], f["formal_markers"], f["casual_markers"]),
        "expertise": expertise_fit(prefs["expertise"], f["long_word_share"]),
    }


def score(persona: Persona | Mapping[str, Any], response: str) -> float:
    """How well ``response`` fits ``persona``: the mean of the four fits (module docstring), in [0, 1].

    ``persona`` is a :class:`Persona` or any mapping with ``expertise``, ``detail``, ``tone`` and
    ``structure`` (the structured fields of a derived persona)."""
    components = score_components(persona, response)
    return sum(components.values()) / 4
