"""Math and code scoring on hand-made replies."""

from __future__ import annotations

import gzip
import json

import pytest

from userloop.simulate.answer_check import extract_code, extract_final_number, gold_number, score_reply
from userloop.simulate.scenarios import Scenario


def math(answer: str) -> Scenario:
    return Scenario(id="m", kind="math", intent="q", shards=["q"], full_prompt="q", answer=answer)


@pytest.mark.parametrize("reply, number", [
    ("The answer is 42.", "42"),
    ("So she pays $1,234.50 in total.", "$1,234.50"),
    ("3 + 4 = 7, so 7 apples", "7"),
    ("The final answer is \\boxed{18}. Check: 9 * 2 = 18", "18"),
    ("Working: 5 + 5 = 10\n#### 10\nHope that helps with 2 tasks!", "10"),
    ("It drops to -3 degrees.", "-3"),
    ("That is 3.0", "3.0"),
    ("She ate 3/4 of the cake.", "3/4"),
    ("The answer is: **25** apples", "25"),
    ("I am not sure yet.", None),
    ("So $x = \\boxed{\\frac{3}{4}}$ of the pie, i.e. 2 of 4 slices", "3/4"),
    ("Total: \\boxed{\\$18 \\text{ dollars}} for 3 people", "$18"),
    ("\\boxed{1{,}200}", "1,200"),
])
def test_extract_final_number(reply, number):
    assert extract_final_number(reply) == number


@pytest.mark.parametrize("reply, passed", [
    ("The answer is 1,234.", True),
    ("\\boxed{1234.0}", True),
    ("It costs $1234", True),
    ("The answer is 1233.", False),
    ("Maybe 1234 or 1235? I'd say 1235.", False),
])
def test_math_scoring_compares_numbers(reply, passed):
    score = score_reply(math("1234"), reply)
    assert score.passed is passed


def test_math_score_detail_and_gold():
    score = score_reply(math("16"), "Leigh has 48 / 3 = 16 seashells.")
    assert score.to_dict() == {"passed": True, "detail": "extracted 16, gold 16", "extracted": "16"}
    assert score_reply(math("0.75"), "3/4 of it").passed
    assert score_reply(math("16"), "no idea").detail == "no number found in the reply"
    assert gold_number("so 48 / 3 = 16\n#### 1,600") == 1600


def test_open_scenarios_have_no_checker():
    assert score_reply(Scenario(id="o", kind="open", intent="poem", shards=[], full_prompt="poem"), "42") is None


def test_extract_code_prefers_the_block_that_defines_the_function():
    reply = ("Here is a helper:\n```python\ndef helper():\n    return 1\n```\nAnd the solution:\n"
             "```python\ndef add(a, b):\n    return a + b\n```\nUsage:\n```\nadd(1, 2)\n```")
    assert extract_code(reply, "add") == "def helper():\n    return 1\ndef add(a, b):\n    return a + b\n"
    shown_apart = ("```python\nimport math\n\ndef half(x):\n    return x / 2\n\nprint(half(4))\n```\n"
                   "```python\ndef add(a, b):\n    return half(a) + half(b) + math.floor(0.5)\n\nadd(1, 2)\n```")
    assert extract_code(shown_apart, "add") == ("import math\ndef half(x):\n    return x / 2\n"
                                                "def add(a, b):\n    return half(a) + half(b) + math.floor(0.5)\n")
    bare = "Sure.\ndef add(a, b):\n    return a + b"
    assert extract_code(bare, "add").startswith("def add(a, b):")
    body_only = "```python\nreturn a + b\n```"
    joined = extract_code(body_only, "add", 'def add(a, b):\n    """Add."""\n')
    assert joined.startswith("def add(a, b):") and "    return a + b" in joined
    assert extract_code("```js\nfunction add(a, b) {}\n```", "add") is None
    assert extract_code("I would loop over the list.", "add") is None


@pytest.fixture(scope="module")
def problems(shared_data):
    with gzip.open(shared_data / "humaneval" / "HumanEval.jsonl.gz", "rt") as lines:
        return {problem["entry_point"]: problem for problem in map(json.loads, lines)}


def code(problem: dict) -> Scenario:
    return Scenario(id=problem["task_id"], kind="code", intent="x", shards=["x"], full_prompt="x",
                    tests=problem["test"], entry_point=problem["entry_point"], prompt_code=problem["prompt"])


def test_code_scoring_on_real_problems(problems):
    problem = problems["truncate_number"]
    right = f"Here you go:\n```python\n{problem['prompt']}{problem['canonical_solution']}```"
    assert score_reply(code(problem), right).passed
    body = "```python\n    return number % 1.0\n```"
    assert score_reply(code(problem), body).passed  # the body alone, joined to the prompt
    wrong = "```python\ndef truncate_number(number: float) -> float:\n    return number\n```"
    failed = score_reply(code(problem), wrong)
    assert not failed.passed and failed.detail.startswith("a test failed: assert candidate(")
    missing = score_reply(code(problem), "You could use the modulo operator.")
    assert missing.detail == "no function 'truncate_number' found in the reply"
    broken = score_reply(code(problem), "```python\ndef truncate_number(number:\n    return 1\n```")
    assert not broken.passed and "syntax error" in broken.detail


def test_the_prompts_imports_are_added(problems):
    problem = problems["has_close_elements"]
    reply = ("```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    assert score_reply(code(problem), reply).passed


ADD_PROMPT = 'def add(a: int, b: int) -> int:\n    """Add.\n    >>> add(1, 1)\n    2\n    """\n'
ADD_TESTS = "def check(candidate):\n    assert candidate(1, 1) == 2\n    assert candidate(2, 5) == 7\n"
FENCE = "```"


@pytest.mark.parametrize("reply,passed,detail", [
    ("def add(a, b):\n    return a + b\n\nThis works because + adds.", True, "all tests passed"),
    (f"{FENCE}python\ndef add(a, b):\n    return a + b\n\nassert add(1, 2) == 4\nprint(add(1, 2))\n{FENCE}", True,
     "all tests passed"),
    (f"{FENCE}python\ndef plus(a, b):\n    return a + b\n{FENCE}", False, "no function 'add' found"),
    (f"{FENCE}python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n{FENCE}", False,
     "no function 'add' found"),
    (f"{FENCE}python\ndef add(a, b):\n    print 'hi'\n    return a + b\n{FENCE}", False, "syntax error"),
    (f"{FENCE}python\nimport not_a_module_xyz\ndef add(a, b):\n    return a + b\n{FENCE}", False, "ModuleNotFoundError"),
    (f"{FENCE}python\ndef add(a, b):\n    return 0\nprint('all tests passed')\n{FENCE}", False, "a test failed"),
    (f"{FENCE}python\ndef add(a, b):\n    return 2\n{FENCE}", False, "a test failed: assert candidate(2, 5) == 7"),
    ((f"{FENCE}python\nclass Same:\n    def __eq__(self, other):\n        return True\n"
      f"def add(a, b):\n    return [Same()]\n{FENCE}"), False, "returned a Same object"),
])
def test_code_verdicts_on_hand_made_replies(reply, passed, detail):
    scenario = Scenario(id="c", kind="code", intent="add", shards=["add"], full_prompt="add", tests=ADD_TESTS,
                        entry_point="add", prompt_code=ADD_PROMPT)
    score = score_reply(scenario, reply)
    assert score.passed is passed and detail in score.detail, score


@pytest.mark.parametrize("reply,gold", [
    ("The answer is twelve.", "12"), ("Answer: forty-two", "42"), ("the answer is one hundred and five", "105"),
    ("Answer: 7 (checked with 3+4)", "7"), ("The answer is 42. Check: 6*7=42", "42"), ("It costs $1,250.50.", "1250.5"),
    ("The answer is 25%", "25"), ("It drops to -5 degrees.", "-5"), ("$\\boxed{\\frac{3}{4}}$", "0.75"),
])
def test_math_answers_in_words_units_and_labels(reply, gold):
    assert score_reply(Scenario(id="m", kind="math", intent="q", shards=["q"], full_prompt="q", answer=gold), reply).passed
