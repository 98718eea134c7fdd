"""Task success on the testbed: does an answer pass the check of the task the user asked for?

Every testbed task carries a checkable outcome in its truth (``truth.jsonl``, ``tasks[i]["check"]``;
docs/testbed.md). :func:`passes` applies it to any answer text, per family:

* ``math``: the answer's final number equals the gold number (``simulate.scoring.score_math``, GSM8K's
  final-answer match, Cobbe et al. 2021);
* ``code``: the function in the answer passes the task's asserts, run in the sandbox
  (``simulate.scoring.score_code``, HumanEval's pass criterion, Chen et al. 2021);
* ``fact``: the table's answer occurs in the answer (case-insensitive, as whole words);
* ``writing``: every ``must_include`` word present (case-insensitive, whole words), and the paragraph that
  holds the first of them (the written piece's body; a reply also has a lead line and notes around the
  piece) under ``max_words`` words, as the testbed's own check counts;
* ``recommendation``: the answer names at least one item of the domain's catalogue, and every item it
  names has the tag the user asked for (the testbed assistant's own criterion).
"""

from __future__ import annotations

import re
from typing import Any

from userloop.simulate.answer_check import score_code, score_math
from userloop.simulate.scenarios import Scenario
from userloop.testbed.families.recommend import CATALOGUES

FAMILIES = ("math", "code", "fact", "writing", "recommendation")


def passes(task: dict[str, Any], answer: str) -> bool:
    """Whether ``answer`` passes ``task``'s check (``task``: one entry of a truth record's ``tasks``)."""
    family, check = task["family"], task["check"]
    if family == "math":
        return score_math(answer, f"#### {check['answer']}").passed
    if family == "code":
        return _code_passes(check, answer)
    if family == "fact":
        return _mentions(answer, str(check["answer"]))
    if family == "writing":
        return _writing_passes(check, answer)
    if family == "recommendation":
        named = [name for name, _, _ in CATALOGUES[task["domain"]][2] if _mentions(answer, name)]
        return bool(named) and all(name in check["matching"] for name in named)
    raise ValueError(f"unknown task family {family!r} (known: {', '.join(FAMILIES)})")


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.IGNORECASE) is not None


def _writing_passes(check: dict[str, Any], answer: str) -> bool:
    words = check["must_include"]
    if not all(_mentions(answer, word) for word in words):
        return False
    paragraph = next(p for p in re.split(r"\n\s*\n", answer) if _mentions(p, words[0])) if words else answer
    return len(paragraph.split()) < check["max_words"]


def _code_passes(check: dict[str, Any], answer: str) -> bool:
    """The testbed's asserts as a HumanEval ``check(candidate)`` (they call the function by name, in the
    namespace the sandbox shares with the solution)."""
    tests = "def check(candidate):\n" + "".join(f"    {line}\n" for line in check["tests"].splitlines() if line.strip())
    scenario = Scenario(id="testbed-code", kind="code", intent="testbed code task", shards=[], full_prompt="testbed code task",
                        tests=tests, entry_point=check["entry_point"])
    return score_code(answer, scenario).passed
