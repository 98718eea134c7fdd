"""The scripted provider: replies in order and cycled, or by substring, and its file errors."""

from __future__ import annotations

import pytest

from userloop.errors import UserError
from userloop.models import GenerationParams, load_model

USER = [{"role": "user", "content": "hello there"}]


def test_list_is_used_in_order_and_cycled(write_json):
    model = load_model(f"scripted:{write_json(['one', 'two', 'three'])}")
    texts = [c.text for c in model.generate([USER, USER])] + [c.text for c in model.generate([USER, USER])]
    assert texts == ["one", "two", "three", "one"]
    [completion] = model.generate([USER], GenerationParams(n=2))
    assert [c.text for c in completion.choices] == ["two", "three"]
    assert completion.model == model.name and completion.seconds >= 0


def test_mapping_matches_the_last_message_in_file_order(write_json):
    model = load_model(f"scripted:{write_json({'weather': 'sunny', 'hello': 'hi!', 'hell': 'no', '*': 'what?'})}")
    conversation = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "well hello"}]
    assert [c.text for c in model.generate([conversation, USER, [{"role": "user", "content": "zzz"}]])] == [
        "hi!", "hi!", "what?"]


def test_mapping_without_default_is_an_error(write_json):
    model = load_model(f"scripted:{write_json({'weather': 'sunny'})}")
    with pytest.raises(UserError, match="no key matches"):
        model.generate([USER])


def test_token_counts_length_and_stop(write_json):
    model = load_model(f"scripted:{write_json(['one two three four five', 'a b END c'])}")
    short, stopped = model.generate([USER, USER], GenerationParams(max_new_tokens=3, stop=["END"]))
    assert (short.text, short.finish_reason, short.completion_tokens) == ("one two three", "length", 3)
    assert (stopped.text, stopped.finish_reason, stopped.completion_tokens) == ("a b ", "stop", 2)
    assert short.prompt_tokens == 2


def test_scripted_keeps_end_of_conversation_token(write_json):
    model = load_model(f"scripted:{write_json(['thanks, bye <|endconversation|>'])}")
    assert model.generate([USER])[0].text.endswith("<|endconversation|>")


@pytest.mark.parametrize(("content", "fragment"), [
    ("not json", "not valid JSON"),
    ("[]", "at least one reply"),
    ("[1, 2]", "at least one reply"),
    ('{"a": 1}', "map substrings"),
    ('{"": "x"}', "empty key"),
    ('"just a string"', "expected a JSON list"),
])
def test_bad_files(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=fragment) as err:
        load_model(f"scripted:{path}")
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(f"scripted:{tmp_path / 'missing.json'}")
