"""Stated corrections (``testbed:corrector``) and the task-checking scorer (``testbed:task-scorer``)."""

from __future__ import annotations

import random

import pytest

from userloop.models.registry import load_role
from userloop.rlhi.corrections import Correction, applied, corrected, stated_correction
from userloop.rlhi.followups import FollowUp, Labels
from userloop.rlhi.reward_scorers import ScoreRequest, TestbedScorer, TestbedTaskScorer
from userloop.rlhi.rewrites import Candidate, ScorerJudge, TestbedCorrector, TestbedEditor, rewrite_and_filter
from userloop.rlhi.tasks import passes
from userloop.testbed import assistant
from userloop.testbed.assistant import STYLE_VALUES, Style
from userloop.testbed.families import family_modules
from userloop.testbed.families.code import FUNCTIONS
from userloop.testbed.phrasing import WRONG_WITH_CORRECTION, WRONG_WITHOUT_CORRECTION

WITH = "make_aware_with_correction"


def wrong_answers(family: str, count: int, seed: int = 0):
    """The testbed assistant's wrong answers to ``family``'s tasks (every shard known), each with the testbed
    user's correction in one of its phrasings, and the prompt that stated the task."""
    rng = random.Random(seed)
    module = family_modules()[family]
    out = []
    while len(out) < count:
        task = module.make_task(rng, rng.choice(module.DOMAINS), rng.random() < 0.5)
        answer = module.answer(rng, task, len(task.shards), False, rng.random() < 0.5)
        if answer.correct or not answer.correction:
            continue
        style = Style(*(rng.choice(values) for values in STYLE_VALUES.values()))
        text = assistant.answer_reply(rng, style, answer).text
        if passes(task.truth(), text):   # the rendering left out what was wrong: nothing to correct
            continue
        register = rng.choice(sorted(WRONG_WITH_CORRECTION))
        followup = rng.choice(WRONG_WITH_CORRECTION[register]).format(c=answer.correction)
        out.append((task, text, followup, [{"role": "user", "content": task.full_request}]))
    return out


@pytest.mark.parametrize("family", ["math", "code", "fact", "writing", "recommendation"])
def test_a_stated_correction_makes_the_answer_pass_its_check(family):
    """From the user's words and the testbed world's catalogues alone, the corrector fixes what the task's
    check (the truth) finds wrong; nothing else of the answer changes for a name or a number."""
    fixed = 0
    answers = wrong_answers(family, 60)
    for task, text, followup, prompt in answers:
        correction = stated_correction(WITH, followup, text)
        assert correction is not None, followup
        new = corrected(correction, text, prompt)
        if new is None:
            continue
        assert applied(correction, new, prompt)
        assert not applied(correction, text, prompt)
        fixed += passes(task.truth(), new)
        if correction.kind == "value":
            assert new.replace(correction.right, "") .split() == text.replace(correction.wrong, "").split() or \
                len(new.split()) == len(text.split()) + len(correction.right.split()) - len(correction.wrong.split())
    assert fixed >= 0.9 * len(answers)


def test_no_correction_is_read_where_none_is_stated():
    _, text, _, _ = wrong_answers("math", 1)[0]
    for register in WRONG_WITHOUT_CORRECTION.values():
        for followup in register:
            assert stated_correction("make_aware_without_correction", followup, text) is None
    assert stated_correction(WITH, "That is not correct: please try harder.", text) is None
    assert stated_correction(WITH, "no, it's 12, not 7", "The answer is 9.") == Correction("value", "12", "7")
    assert corrected(Correction("value", "12", "7"), "The answer is 9.", []) is None   # nothing to fix there


def candidate(text: str, followup: str, feedback_type: str, user_id: str = "u1") -> Candidate:
    prompt = [{"role": "user", "content": "How much is it?"}]
    return Candidate(FollowUp("c1", user_id, 2, followup, text, prompt[0]["content"]),
                     Labels("re_attempt", feedback_type, followup), prompt, text)


def test_the_corrector_is_a_role_and_keeps_style_edits_for_style_feedback():
    corrector = load_role("rewriter", "testbed:corrector", lambda model: None)
    assert isinstance(corrector, TestbedCorrector)
    text = "Sure. So the answer is 40.\n\n- It is 8 times 5."
    fix = candidate(text, "nope, it's 45, not 40", WITH)
    style = candidate(text, "too long, just the answer please", "make_aware_without_correction")
    assert corrector.rewrite([fix, style], [None, None]) == ["Sure. So the answer is 45.\n\n- It is 8 times 5.",
                                                              TestbedEditor().rewrite([style], [None])[0]]
    assert corrector.counts["correction made"] == 1


def test_the_judge_accepts_a_made_correction_that_keeps_the_style():
    persona = {"detail": "brief", "structure": "prose", "tone": "formal", "expertise": "novice", "interests": []}
    judge = ScorerJudge({"u1": persona})
    text = "The answer is 40."
    fix = candidate(text, "it's 45, not 40", WITH)
    results = rewrite_and_filter([fix, fix], [None, None], TestbedCorrector(), judge)
    assert [r.why for r in results] == ["passed", "passed"]
    not_made = candidate(text, "it's 45, not 40", WITH)
    assert judge.accept([not_made], ["The answer is 40 or so."]) == [False]


def test_a_right_function_gets_no_code_correction_and_style_feedback_on_it_must_raise_the_score():
    """Feedback labelled as a correction on an answer whose function is already the reference ("more technical
    pls") is not a code correction: the corrector makes the style edit, and the judge asks it to raise the score
    (a correction counts as made only when the original lacked it)."""
    function = FUNCTIONS[0]
    text = f"Sure, here it is.\n\n```python\n{function.code}\n```\n\nIt adds things up."
    assert stated_correction(WITH, "more technical pls", text) is None
    buggy = text.replace(function.code, function.bug)
    assert stated_correction(WITH, "more technical pls", buggy) == Correction("code", function.name)
    persona = {"detail": "brief", "structure": "prose", "tone": "casual", "expertise": "novice", "interests": []}
    judge = ScorerJudge({"u1": persona})
    style = candidate(text, "more technical pls", WITH)
    kept_code = text.replace("It adds things up.", "It adds things up, in most practical cases.")
    assert judge.accept([style], [kept_code]) == [False]   # same code, the score does not rise
    assert TestbedCorrector().rewrite([style], [None]) == TestbedEditor().rewrite([style], [None])


def test_the_task_scorer_checks_answers_to_a_testbed_users_whole_task(tmp_path):
    """A testbed user states a whole task: an answer that passes its check scores the mean of 1 and its persona
    match, a wrong one half its persona match; a prompt no testbed user wrote gets persona match alone."""
    from userloop.simulate.testbed_users import TestbedUsers, spoken, testbed_scenarios
    from userloop.testbed import generate

    generate(30, seed=5).write(tmp_path)
    scorer = TestbedTaskScorer.from_data(tmp_path)
    plain = TestbedScorer.from_data(tmp_path)
    users = TestbedUsers()
    checked = 0
    rng = random.Random(0)
    for scenario in testbed_scenarios(tmp_path).scenarios:
        prompt = [{"role": "user", "content": users.next_turn(scenario, [], 0).text}]
        said = spoken(prompt)
        if said.revealed < len(said.task.shards) or said.task.family not in ("fact", "recommendation"):
            continue
        module = family_modules()[said.task.family]
        right, wrong = (assistant.answer_reply(rng, Style("short", "prose", "formal", "simple"),
                                               module.answer(rng, said.task, said.revealed, ok, False)).text
                        for ok in (True, False))
        requests = [ScoreRequest(scenario.metadata["user_id"], None, prompt, text) for text in (right, wrong)]
        solved = [passes(said.task.truth(), text) for text in (right, wrong)]
        match = plain.score(requests)
        assert scorer.score(requests) == [(solved[0] + match[0]) / 2, (solved[1] + match[1]) / 2]
        checked += 1
    assert scorer.counts["checked_solved"] >= 3 and scorer.counts["checked_unsolved"] >= 3
    assert scorer.counts["checked_solved"] + scorer.counts["checked_unsolved"] == 2 * checked
    elsewhere = [ScoreRequest(scenario.metadata["user_id"], None, [{"role": "user", "content": "hello"}], "Hi.")]
    assert scorer.score(elsewhere) == plain.score(elsewhere) and scorer.counts["unchecked"] == 1
    assert isinstance(load_role("scorer", "testbed:task-scorer", lambda model: None, data=tmp_path), TestbedTaskScorer)
