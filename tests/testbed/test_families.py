import random

import pytest

from userloop.testbed.families import code, facts, family_modules, math, recommend, writing


@pytest.mark.parametrize("fn", code.FUNCTIONS, ids=lambda f: f.name)
def test_code_reference_passes_and_bug_fails(fn):
    def passes(source: str) -> bool:
        namespace: dict = {}
        exec(source, namespace)  # noqa: S102 (trusted: the testbed catalogue)
        try:
            exec("\n".join(fn.tests), namespace)  # noqa: S102
        except (AssertionError, ZeroDivisionError, IndexError):
            return False
        return True

    assert passes(fn.code)
    assert not passes(fn.bug)


@pytest.mark.parametrize("domain", sorted(recommend.CATALOGUES))
def test_every_recommendation_tag_has_enough_items_and_misfits(domain):
    _, tags, items = recommend.CATALOGUES[domain]
    for tag in tags:
        assert sum(tag in item_tags for _, _, item_tags in items) >= 2
        assert any(tag not in item_tags for _, _, item_tags in items)


def test_answers_pass_their_check_exactly_when_marked_correct():
    rng = random.Random(1)
    for name, module in family_modules().items():
        for _ in range(200):
            task = module.make_task(rng, rng.choice(module.DOMAINS), rng.random() < 0.5)
            answer = module.answer(rng, task, len(task.shards), rng.random() < 0.5, rng.random() < 0.5)
            if name in ("math", "fact"):
                assert (answer.result == task.check["answer"]) == answer.correct
            elif name == "code":
                assert (answer.result == task.check["reference"]) == answer.correct
            elif name == "writing":
                ok = answer.result["words"] < task.check["max_words"] and answer.result["mentions_keyword"]
                assert ok == answer.correct
                assert task.check["must_include"][0].lower() in answer.block.lower() or not answer.correct
            else:
                assert all(item in task.check["matching"] for item in answer.result) == answer.correct
            if not answer.correct:
                assert answer.correction


def test_math_answers_are_whole_and_positive():
    rng = random.Random(2)
    for _ in range(500):
        task = math.make_task(rng, rng.choice(math.DOMAINS), False)
        assert isinstance(task.check["answer"], int) and task.check["answer"] > 0
        assert task.full_request.endswith("?") and len(task.shards) >= 3


def test_fact_rows_have_distinct_wrong_answers():
    for relation, (_, _, _, rows) in facts.RELATIONS.items():
        assert len({a for _, a in rows}) >= 2, relation


def test_writing_constraints_are_stated_in_the_full_request():
    rng = random.Random(3)
    for _ in range(100):
        task = writing.make_task(rng, rng.choice(writing.DOMAINS), False)
        assert str(task.check["max_words"]) in task.full_request
        assert task.check["must_include"][0] in task.full_request
