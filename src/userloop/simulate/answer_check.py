"""Score an assistant's answer attempt against a scenario's checker.

* ``math``: the final number of the reply (:func:`extract_final_number`) against the gold ``#### N``,
  compared numerically (GSM8K's exact-match on the final answer, Cobbe et al. 2021; the
  Lost-in-Conversation math checker). ``|a - b| <= 1e-6 * max(1, |b|)`` counts as equal.
* ``code``: the function is extracted from the reply (:func:`extract_code`) and the HumanEval tests
  run in :mod:`userloop.simulate.sandbox`; pass only if ``check(entry_point)`` raises nothing
  (HumanEval's pass criterion, Chen et al. 2021).
* ``tool``: scored once, at the end of the conversation, by :func:`score_tool_task`: the final database
  against the goal state and the outputs told to the user (tau-bench's reward, Yao et al. 2024).
* ``open``: no checker, :func:`score_reply` returns ``None``.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

from userloop.simulate.domains import load_domain, replay_actions, state_hash
from userloop.simulate.sandbox import run_tests
from userloop.simulate.scenarios import Scenario

RELATIVE_TOLERANCE = 1e-6


@dataclass
class Score:
    """Whether an answer attempt passed, why, and what was extracted from it."""

    passed: bool
    detail: str
    extracted: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def score_reply(scenario: Scenario, reply: str) -> Score | None:
    """The score of ``reply`` for ``scenario``; ``None`` for a scenario without a checker (``open``).
    Blocking (code runs a subprocess) and thread-safe: call it through ``asyncio.to_thread``."""
    if scenario.kind == "math":
        return score_math(reply, scenario.answer)
    if scenario.kind == "code":
        return score_code(reply, scenario)
    return None


# ---- math -------------------------------------------------------------------------------------

_NUMBER = r"[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?"
_BOXED = re.compile(r"\\boxed\{\s*([^{}]*)\}")
_HASHES = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS = re.compile(r"answer\s*(?:is|=|:)\s*:?\s*\**\s*(" + _NUMBER + ")", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"(?<![\w.])(" + _NUMBER + r")(?![\d])")


def parse_number(text: str) -> float | None:
    """``text`` as a number: thousands commas, a ``$``, a leading minus (also ``−``), decimals and a
    fraction ``a/b`` are understood; anything else is ``None``."""
    cleaned = text.replace("−", "-").replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/")
            return float(Fraction(numerator) / Fraction(denominator))
        return float(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


_LATEX_FRACTION = re.compile(r"\\d?frac\{\s*([^{}]+?)\s*\}\{\s*([^{}]+?)\s*\}")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}")


def _plain_latex(reply: str) -> str:
    """``\\frac{a}{b}`` as ``a/b``, ``\\text{..}`` as its text, ``\\$`` as ``$``, ``\\,`` and ``\\!`` removed."""
    text = _LATEX_TEXT.sub(r"\1", _LATEX_FRACTION.sub(r"\1/\2", reply))
    return text.replace("\\$", "$").replace("\\,", "").replace("\\!", "").replace("{,}", ",")


_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_WORD_VALUES = {**{word: value for value, word in enumerate(_UNITS)},
                **{word: 10 * (index + 2) for index, word in enumerate(_TENS)}}
_NUMBER_WORD = r"(?:" + "|".join(sorted([*_WORD_VALUES, "hundred", "thousand", "million"], key=len, reverse=True)) + r")"
_WORDS_ANSWER_IS = re.compile(
    r"answer\s*(?:is|=|:)\s*:?\s*\**\s*(" + _NUMBER_WORD + r"(?:(?:\s+and\s+|[\s-]+)" + _NUMBER_WORD + r")*)\b",
    re.IGNORECASE)


def words_to_number(text: str) -> int | None:
    """An English number in words ("forty-two", "one hundred and five", "two thousand") as an int."""
    total, current = 0, 0
    for word in re.split(r"[\s-]+", text.lower().replace(" and ", " ")):
        if word in _WORD_VALUES:
            current += _WORD_VALUES[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in ("thousand", "million"):
            total += max(current, 1) * (1000 if word == "thousand" else 1_000_000)
            current = 0
        else:
            return None
    return total + current


def extract_final_number(reply: str) -> str | None:
    """The final answer number in ``reply``, as written: the last ``\\boxed{..}`` if any, else the last
    ``#### N``, else the last "the answer is N", else the last number in the text, else a number in
    words after "the answer is" ("forty-two" as ``42``). ``None`` if none.
    LaTeX fractions, ``\\text{}`` and ``\\$`` are read as plain text first."""
    reply = _plain_latex(reply)
    for pattern in (_BOXED, _HASHES, _ANSWER_IS):
        matches = [m.group(1) for m in pattern.finditer(reply)]
        matches = [m for m in matches if _ANY_NUMBER.search(m)]
        if matches:
            return _ANY_NUMBER.findall(matches[-1])[-1].strip()
    in_words = [words_to_number(m.group(1)) for m in _WORDS_ANSWER_IS.finditer(reply)]
    if in_words and in_words[-1] is not None:
        return str(in_words[-1])
    numbers = _ANY_NUMBER.findall(reply)
    return numbers[-1].strip() if numbers else None


def gold_number(answer: str) -> float | None:
    """The gold number of a GSM8K answer: the text after ``####`` if present, else the whole text."""
    _, hashes, after = answer.rpartition("####")
    return parse_number((after if hashes else answer).strip())


def score_math(reply: str, answer: str) -> Score:
    """Pass when the reply's final number equals the gold number (relative tolerance 1e-6)."""
    gold = gold_number(answer)
    extracted = extract_final_number(reply)
    if gold is None:
        return Score(False, f"gold answer {answer!r} is not a number", extracted)
    if extracted is None:
        return Score(False, "no number found in the reply")
    value = parse_number(extracted)
    if value is None:
        return Score(False, f"could not read {extracted!r} as a number", extracted)
    passed = abs(value - gold) <= RELATIVE_TOLERANCE * max(1.0, abs(gold))
    return Score(passed, f"extracted {_show(value)}, gold {_show(gold)}", _show(value))


def _show(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


# ---- code -------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(reply: str, entry_point: str, prompt_code: str | None = None) -> str | None:
    """The program that defines ``entry_point`` in ``reply``, or ``None``.

    Fenced blocks first (a block defining ``entry_point`` wins, the last such one; Python or untagged
    blocks only), preceded by the imports, functions and classes of the other blocks that it does not
    define itself; without blocks, the reply from its first ``def``/``import``. A block that defines no function
    but parses as a function body is joined to ``prompt_code`` (the signature and docstring), as
    HumanEval completions are.
    """
    blocks = [body for language, body in _FENCE.findall(reply) if language.lower() in ("", "python", "py", "python3")]
    bare = _from_first_def(reply)
    candidates = blocks or ([bare] if bare else [])
    defining = [code for code in candidates if _defines(code, entry_point)]
    if defining:
        return _helpers(blocks, defining[-1]) + _definitions_only(defining[-1])
    if prompt_code:
        for code in reversed(candidates or [reply]):
            if _defines_anything(code):
                continue
            joined = prompt_code.rstrip("\n") + "\n" + _indent_body(code)
            if _defines(joined, entry_point):
                return joined
    return None


def _helpers(blocks: list[str], chosen: str) -> str:
    """The imports, functions and classes of the other blocks that the chosen block does not define
    itself (helpers a reply shows separately); statements such as example calls are left out."""
    defined = _top_level_names(chosen)
    parts = []
    for block in blocks:
        if block is chosen:
            continue
        try:
            tree = ast.parse(block)
        except SyntaxError:
            continue
        for node in tree.body:
            is_definition = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if (is_definition and node.name not in defined) or isinstance(node, (ast.Import, ast.ImportFrom)):
                parts.append(ast.get_source_segment(block, node) + "\n")
                defined.add(getattr(node, "name", ""))
    return "".join(parts)


_KEPT_STATEMENTS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                    ast.AnnAssign)


def _definitions_only(code: str) -> str:
    """The imports, definitions and assignments of ``code``, without its top-level statements such as
    example calls, prints, asserts or an ``if __name__ == "__main__"`` block (a reply's own demo, which
    the tests do not need and which can fail on its own)."""
    tree = ast.parse(code)
    return "".join(ast.get_source_segment(code, node) + "\n" for node in tree.body if isinstance(node, _KEPT_STATEMENTS))


def _defines_anything(code: str) -> bool:
    try:
        return bool(_top_level_names(code))
    except SyntaxError:
        return False


def _top_level_names(code: str) -> set[str]:
    return {node.name for node in ast.parse(code).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _from_first_def(reply: str) -> str | None:
    """The reply from its first ``def``/``import``/``class`` line, without the prose after the code:
    the longest run of lines from there that parses (cut before an unindented line)."""
    match = re.search(r"^(?:def |import |from \S+ import |class )", reply, re.MULTILINE)
    if not match:
        return None
    lines = reply[match.start():].splitlines()
    cuts = [index for index, line in enumerate(lines) if index and line.strip() and not line[0].isspace()]
    for end in [len(lines), *reversed(cuts)]:
        code = "\n".join(lines[:end]) + "\n"
        try:
            ast.parse(code)
        except SyntaxError:
            continue
        return code
    return "\n".join(lines) + "\n"


def _indent_body(code: str) -> str:
    lines = code.strip("\n").splitlines()
    if lines and not lines[0].startswith((" ", "\t")):
        lines = ["    " + line for line in lines]
    return "\n".join(lines) + "\n"


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name for node in tree.body)


def score_code(reply: str, scenario: Scenario) -> Score:
    """Run the scenario's tests against the function in ``reply`` in the sandbox, after the prompt's
    import lines (:func:`_prompt_imports`)."""

    code = extract_code(reply, scenario.entry_point, scenario.prompt_code)
    if code is None:
        if _attempts_definition(reply, scenario.entry_point):
            return Score(False, f"syntax error in the code defining {scenario.entry_point}")
        return Score(False, f"no function {scenario.entry_point!r} found in the reply")
    program = _prompt_imports(scenario.prompt_code) + code
    result = run_tests(program, scenario.tests, scenario.entry_point)
    return Score(result.passed, result.detail, code)


def _prompt_imports(prompt_code: str | None) -> str:
    """The import lines of the problem's prompt (e.g. ``from typing import List``), which a reply that
    restates only the function often leaves out."""
    if not prompt_code:
        return ""
    lines = [line for line in prompt_code.splitlines() if re.match(r"(?:import |from \S+ import )", line)]
    return "".join(line + "\n" for line in lines)


def _attempts_definition(reply: str, entry_point: str) -> bool:
    """Whether the reply writes ``def entry_point(`` at the top level (not a method) although no block
    defining it parses."""
    return re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", reply, re.MULTILINE) is not None


# ---- tool tasks ---------------------------------------------------------------------------------

def score_tool_task(scenario: Scenario, final_state: dict, assistant_texts: list[str]) -> Score:
    """tau-bench's success of a tool task (Yao et al. 2024, arXiv 2406.12045, §3): the final database's
    :func:`~userloop.simulate.domains.state_hash` equals the goal's (the gold ``actions`` replayed on
    ``initial_state(db_seed)``) and every string of ``outputs`` appears in some assistant message
    (:func:`output_told`). ``extracted`` is the final state's hash."""
    final = state_hash(final_state)
    goal = goal_hash(scenario.domain, scenario.db_seed or 0, json.dumps(scenario.actions or [], sort_keys=True))
    if final != goal:
        return Score(False, f"the final database differs from the goal state (hash {final[:12]}, goal {goal[:12]})",
                     final)
    missing = [output for output in scenario.outputs or [] if not output_told(output, assistant_texts)]
    if missing:
        return Score(False, f"goal state reached, but the user was not told {missing[0]!r}", final)
    told = len(scenario.outputs or [])
    return Score(True, "goal state reached" + (f" and all {told} outputs told" if told else ""), final)


@lru_cache(maxsize=4096)
def goal_hash(domain: str, seed: int, actions_json: str) -> str:
    """The hash of the goal state: ``actions`` (JSON text, cached by it) replayed on the domain's seeded state."""
    return state_hash(replay_actions(load_domain(domain), json.loads(actions_json), seed))


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TRAILING_ZEROS = re.compile(r"(\d+)\.(\d*?)0+(?!\d)")


def _normalised(text: str) -> str:
    """Lower case, numbers without thousands commas or trailing decimal zeros ("$1,234.50" -> "$1234.5")."""
    text = _THOUSANDS.sub("", text.lower())
    return _TRAILING_ZEROS.sub(lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), text)


def output_told(output: str, texts: list[str]) -> bool:
    """Whether ``output`` appears in one of ``texts``: case-insensitive, numbers normalised (:func:`_normalised`),
    and a number only as a whole number ("9.99" is not found in "19.99")."""
    wanted = _normalised(output.strip())
    pattern = re.escape(wanted)
    if wanted[:1].isdigit():
        pattern = r"(?<![\d.])" + pattern
    if wanted[-1:].isdigit():
        pattern += r"(?![\d]|\.\d)"
    return any(re.search(pattern, _normalised(text)) for text in texts)
