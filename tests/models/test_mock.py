"""mock:NAME: replies from a list (cycled) or a function, every call recorded, cut like a model's, from the registry."""

from __future__ import annotations

import pytest

from userloop.errors import UserError
from userloop.models import Capabilities, GenerationParams, load_model
from userloop.models.mock import DEFAULT_REPLY, MockModel

HI = [{"role": "user", "content": "hi there"}]


def texts(model, conversations, params=None) -> list[list[str]]:
    return [[choice.text for choice in completion.choices] for completion in model.generate(conversations, params)]


def test_a_list_of_replies_is_cycled_one_reply_per_sample():
    model = MockModel(replies=["one", "two", "three"])
    assert texts(model, [HI, HI]) == [["one"], ["two"]]
    assert texts(model, [HI], GenerationParams(n=2)) == [["three", "one"]]


def test_a_function_gets_the_conversation_and_the_settings():
    seen = []

    def reply(messages, **settings):
        seen.append(settings)
        return f"{messages[-1]['content']} / {settings['temperature']}"

    model = MockModel("echo", replies=reply)
    [completion] = model.generate([HI], GenerationParams(temperature=0.5, seed=3, max_new_tokens=9))
    assert completion.text == "hi there / 0.5" and completion.model == "mock:echo"
    assert (seen[0]["seed"], seen[0]["max_new_tokens"], seen[0]["n"]) == (3, 9, 1)


def test_every_conversation_is_recorded_with_its_parameters():
    model = MockModel()
    params = GenerationParams(max_new_tokens=5)
    other = [{"role": "system", "content": "be brief"}, *HI]
    model.generate([HI, other], params)
    assert model.calls == [(HI, params), (other, params)]


def test_replies_are_cut_like_a_models_and_tokens_are_words():
    model = MockModel(replies=["one two three four", "cut here and after"])
    first, second = model.generate([HI, HI], GenerationParams(max_new_tokens=2, stop=(" here",)))
    assert (first.text, first.finish_reason) == ("one two", "length")
    assert (first.completion_tokens, first.prompt_tokens) == (2, 2)
    assert (second.text, second.finish_reason) == ("cut", "stop")


def test_capabilities_decide_which_bans_it_accepts():
    with pytest.raises(UserError):
        MockModel().generate([HI], GenerationParams(banned_tokens=("x",)))
    model = MockModel(supports=Capabilities(banned_tokens=True))
    model.generate([HI], GenerationParams(banned_tokens=("x",)))
    assert model.calls[0][1].banned_tokens == ("x",)


def test_the_registry_builds_it_from_a_spec():
    assert load_model("mock").name == "mock:mock"
    assert texts(load_model("mock"), [HI]) == [[DEFAULT_REPLY]]
    model = load_model("mock:helper", replies=["ok"])
    assert model.name == "mock:helper" and texts(model, [HI]) == [["ok"]]
    with pytest.raises(UserError, match="take no option 'colour'"):
        load_model("mock", colour="red")


@pytest.mark.parametrize("replies", [[], [1], ["ok", None]])
def test_bad_replies_are_one_clear_error(replies):
    with pytest.raises(UserError, match="at least one string"):
        MockModel(replies=replies)
