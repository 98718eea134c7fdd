"""The persona goes into the system message, the one way every part-2 step conditions on it."""

from userloop.rlhi.conditioning import PERSONA_PREFIX, with_persona

PROMPT = [{"role": "user", "content": "Suggest a book."}]


def test_persona_becomes_a_new_system_message():
    messages = with_persona(PROMPT, "A novice who prefers brief,  casual answers.")
    assert messages == [{"role": "system", "content": PERSONA_PREFIX + "A novice who prefers brief, casual answers."}, *PROMPT]


def test_persona_is_prepended_to_an_existing_system_message():
    prompt = [{"role": "system", "content": "You are a helpful assistant."}, *PROMPT]
    messages = with_persona(prompt, "An expert.")
    assert messages[0] == {"role": "system", "content": f"{PERSONA_PREFIX}An expert.\n\nYou are a helpful assistant."}
    assert messages[1:] == PROMPT
    assert prompt[0]["content"] == "You are a helpful assistant."   # the input is not changed


def test_no_persona_leaves_the_prompt_as_it_is():
    assert with_persona(PROMPT, None) == PROMPT
    assert with_persona(PROMPT, "  ") == PROMPT
    assert with_persona(PROMPT, None) is not PROMPT
