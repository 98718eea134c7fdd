"""Reply classification: the rules on hand-made replies, and the LLM judge through a scripted model."""

from __future__ import annotations

import asyncio
import json

import pytest

from userloop.errors import UserError
from userloop.simulate.reply_kinds import (
    REPLY_KINDS,
    ModelReplyClassifier,
    RuleReplyClassifier,
    classify_reply,
    judge_prompt,
    load_reply_classifier,
    parse_label,
)
from userloop.simulate.scenarios import Scenario

MATH = Scenario(id="m", kind="math", intent="q", shards=["q"], full_prompt="q", answer="7")
CODE = Scenario(id="c", kind="code", intent="q", shards=["q"], full_prompt="q", tests="def check(c): pass",
                entry_point="f")
OPEN = Scenario(id="o", kind="open", intent="a poem", shards=[], full_prompt="a poem")


@pytest.mark.parametrize("scenario, reply, kind", [
    (MATH, "3 + 4 = 7. The answer is 7.", "answer_attempt"),
    (MATH, "So the total is \\boxed{7}.", "answer_attempt"),
    (MATH, "Adding them up, Tom ends with 7 apples.", "answer_attempt"),
    (MATH, "How many apples does Tom buy?", "clarification"),
    (MATH, "Sure! Could you tell me how many apples Tom starts with, so I can work it out", "clarification"),
    (MATH, "Which store did he go to? Then I can help.", "clarification"),
    (MATH, "I can't help with that request.", "refusal"),
    (MATH, "I'm sorry, but I cannot do your homework.", "refusal"),
    (MATH, "Let's think about this step by step: first we count the apples Tom has.", "discussion"),
    (CODE, "```python\ndef f(x):\n    return x\n```", "answer_attempt"),
    (CODE, "def f(x):\n    return x", "answer_attempt"),
    (CODE, "What should f return for an empty list?", "clarification"),
    (CODE, "A loop over the items would work here.", "discussion"),
    (OPEN, "Here is a poem: the sea is wide, 3 gulls fly.", "discussion"),
    (OPEN, "What should the poem be about?", "clarification"),
    (OPEN, "I am unable to write that.", "refusal"),
])
def test_rules(scenario, reply, kind):
    assert classify_reply(scenario, reply) == kind


def test_rule_classifier_batch():
    labels = asyncio.run(RuleReplyClassifier().aclassify([MATH, CODE], [[], []], ["The answer is 7.", "Why?"]))
    assert labels == ["answer_attempt", "clarification"]
    with pytest.raises(ValueError):
        asyncio.run(RuleReplyClassifier().aclassify([MATH], [[], []], ["x"]))


@pytest.mark.parametrize("answer, label", [
    ("answer_attempt", "answer_attempt"), (" Clarification.", "clarification"), ("answer attempt", "answer_attempt"),
    ('{"label": "refusal"}', "refusal"), ("```\ndiscussion\n```", "discussion"), ("banana", None),
    ('{"kind": "refusal"}', None), ("", None),
])
def test_parse_label(answer, label):
    assert parse_label(answer) == label


def test_model_classifier_validates_and_falls_back_to_the_rules(tmp_path):
    script = tmp_path / "judge.json"
    script.write_text(json.dumps(["discussion", '{"label": "clarification"}', "no idea, sorry"]), encoding="utf-8")
    classifier = load_reply_classifier(f"scripted:{script}")
    assert isinstance(classifier, ModelReplyClassifier)
    replies = ["The answer is 7.", "Tell me more?", "I can't help with that request."]
    history = [[{"role": "user", "content": "Tom has 3 apples."}]] * 3
    labels = asyncio.run(classifier.aclassify([MATH] * 3, history, replies))
    assert labels == ["discussion", "clarification", "refusal"]  # the third: the judge's answer is invalid -> rules
    assert classifier.fallbacks == 1
    assert classifier.events == [{"type": "classifier_fallback", "scenario_id": "m", "answer": "no idea, sorry",
                                  "label": "refusal"}]


def test_judge_prompt_has_the_definitions_and_the_reply():
    system, user = judge_prompt(MATH, [{"role": "user", "content": "Tom has 3 apples."}], "The answer is 7.")
    assert all(kind in system["content"] for kind in REPLY_KINDS)
    assert "Tom has 3 apples." in user["content"] and "The answer is 7." in user["content"]


def test_load_reply_classifier():
    assert isinstance(load_reply_classifier(None), RuleReplyClassifier)
    assert load_reply_classifier("rules").name == "rules"
    with pytest.raises(UserError, match="unknown model spec"):
        load_reply_classifier("gpt4")
