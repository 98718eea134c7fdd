"""The testbed editor (``testbed:editor``): minimal style edits of the testbed assistant's answers."""

from __future__ import annotations

import random

import pytest

from userloop.models.registry import load_role
from userloop.rlhi.followups import extract_followups
from userloop.rlhi.rewrites import (
    ScorerJudge,
    TestbedEditor,
    TestbedRewriter,
    candidates,
    edited,
    measured_style,
    rewrite_and_filter,
)
from userloop.testbed import generate, score
from userloop.testbed.assistant import STYLE_VALUES, Style, render
from userloop.testbed.persona_match import text_features

LEAD, POINTS = "The tomato belongs to the nightshade family.", ["Plants in one family share pests.", "Rotate beds yearly."]
CODE = "```python\ndef dedupe(items):\n\n    return list(dict.fromkeys(items))\n```"


def rendered_answers(count: int = 300) -> list[str]:
    rng = random.Random(0)
    styles = [Style(*(rng.choice(values) for values in STYLE_VALUES.values())) for _ in range(count)]
    return [render(rng, style, LEAD, POINTS, CODE if i % 5 == 0 else None) for i, style in enumerate(styles)]


def test_an_unchanged_style_gives_the_original_back_word_for_word():
    for text in rendered_answers():
        style = measured_style(text)
        assert edited(text, style, style, random.Random(1)) == text


@pytest.mark.parametrize(("axis", "value"), [("structure", "list"), ("structure", "prose"), ("tone", "formal"),
                                             ("tone", "casual"), ("vocabulary", "simple"), ("vocabulary", "technical"),
                                             ("length", "short"), ("length", "long")])
def test_an_edit_changes_the_asked_axis_and_keeps_the_answer(axis, value):
    changed = 0
    for text in rendered_answers(120):
        before = measured_style(text)
        if getattr(before, axis) == value:
            continue
        after = Style(**{**{a: getattr(before, a) for a in STYLE_VALUES}, axis: value})
        new = edited(text, before, after, random.Random(1))
        assert LEAD.split()[-1] in new and POINTS[-1].split()[0] in new   # the answer's own text stays
        assert (CODE in new) == (CODE in text)
        features, old = text_features(new), text_features(text)
        if axis == "structure":
            assert (features["list_lines"] >= 2) == (value == "list")
        elif axis == "tone":
            more_formal = features["formal_markers"] - features["casual_markers"] > old["formal_markers"] - old["casual_markers"]
            assert more_formal == (value == "formal")
        elif axis == "length" and new != text:
            assert (features["words"] < old["words"]) == (value == "short")
        elif axis == "vocabulary" and new != text:
            assert (features["long_word_share"] > old["long_word_share"]) == (value == "technical")
        if axis != "structure":   # the layout is kept: a list stays a list
            assert (features["list_lines"] >= 2) == (old["list_lines"] >= 2)
        changed += new != text
    assert changed


def test_the_editor_passes_the_scorer_and_changes_less_than_the_rewriter(small_classifier):
    population = generate(80, seed=5)
    todo = []
    for conversation in population.conversations():
        followups = extract_followups(conversation)
        todo.extend(candidates(conversation, list(zip(followups, small_classifier.classify(followups), strict=True))))
    personas = {u: t["persona"] for u, t in population.user_truth().items()}
    editor = load_role("rewriter", "testbed:editor")
    assert isinstance(editor, TestbedEditor)
    edits = rewrite_and_filter(todo, [None] * len(todo), editor, ScorerJudge(personas))
    rewrites = rewrite_and_filter(todo, [None] * len(todo), TestbedRewriter(), ScorerJudge(personas))
    assert len(edits) == len(todo) and editor.counts["no style change asked"] > 0
    passed = [r for r in edits if r.accepted]
    assert passed
    for result in passed:
        persona = personas[result.candidate.followup.user_id]
        assert score(persona, result.rewrite) > score(persona, result.candidate.original)

    def kept(results) -> float:   # share of the original's lines found unchanged in the rewrite
        shares = [sum(line in r.rewrite for line in lines) / len(lines)
                  for r in results if r.accepted for lines in [[x for x in r.candidate.original.splitlines() if x.strip()]]]
        return sum(shares) / len(shares)

    assert kept(edits) > kept(rewrites)
