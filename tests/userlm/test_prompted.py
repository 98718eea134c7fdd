"""prompted:INNER_SPEC: the prompt the inner assistant reads, the end marker, the registry, a tiny hf assistant, the CLI."""

from __future__ import annotations

import json

import orjson
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.models import load_model
from userloop.models.base import GenerationParams
from userloop.models.mock import MockModel
from userloop.userlm.prompted import OPENING_REQUEST, SYSTEM_PROMPT, PromptedUserModel, mark_end, prompted_messages
from userloop.userlm.simulator import GuardrailConfig, UserSimulator
from userloop.userlm.template import END_CONVERSATION

INTENT = "You are a user chatting with an assistant language model to plan a three-day trip to Lisbon on a budget."
END = END_CONVERSATION


def simulator(replies: list[str], **guardrails) -> tuple[UserSimulator, MockModel]:
    """A prompted user whose inner assistant replies from ``replies``; it records what it is asked (``calls``)."""
    inner = MockModel("inner", replies=replies)
    return UserSimulator(PromptedUserModel(inner), GuardrailConfig(samples_per_call=1, **guardrails)), inner


# --------------------------------------------------------------------------- the inner prompt


def test_first_turn_prompt_is_our_system_prompt_with_the_intent_and_an_opening_request():
    sim, inner = simulator(["lisbon trip ideas, cheap ones"])
    turn = sim.first_turn(INTENT)
    assert (turn.text, turn.ended) == ("lisbon trip ideas, cheap ones", False)
    system, request = inner.calls[0][0]
    assert system == {"role": "system", "content": SYSTEM_PROMPT.format(intent=INTENT)}
    assert INTENT in system["content"] and END in system["content"]
    assert request == {"role": "user", "content": OPENING_REQUEST}


def test_history_roles_are_swapped_after_the_opening_request():
    sim, inner = simulator(["ok and what about food"])
    history = [{"role": "user", "content": "lisbon trip, cheap"},
               {"role": "assistant", "content": "Day 1: Alfama."}]
    assert sim.next_turn(INTENT, history).text == "ok and what about food"
    assert inner.calls[0][0][1:] == [{"role": "user", "content": OPENING_REQUEST},
                                 {"role": "assistant", "content": "lisbon trip, cheap"},
                                 {"role": "user", "content": "Day 1: Alfama."}]


def test_prompted_messages_refuses_what_is_not_a_user_lm_prompt():
    with pytest.raises(UserError, match="system message with the intent"):
        prompted_messages([{"role": "user", "content": "hi"}])
    with pytest.raises(UserError, match="end with an assistant turn"):
        prompted_messages([{"role": "system", "content": INTENT}, {"role": "user", "content": "hi"}])
    with pytest.raises(UserError, match="alternating"):
        prompted_messages([{"role": "system", "content": INTENT}, {"role": "assistant", "content": "hi"}])


# --------------------------------------------------------------------------- end marker, bans


@pytest.mark.parametrize("raw", [END, "<|EndConversation|>", "endconversation", "<endconversation>",
                                 "[end_conversation]", "|endconversation|", " thanks! endconversation"])
def test_end_marker_variants_end_the_conversation(raw):
    sim, _ = simulator([raw])
    history = [{"role": "user", "content": f"trip {i}"} if j == 0 else {"role": "assistant", "content": "Sure."}
               for i in range(3) for j in range(2)]
    assert sim.next_turn(INTENT, history).ended


def test_mark_end_leaves_ordinary_words_alone():
    assert mark_end("please end the conversation summary, endless conversations bore me") == (
        "please end the conversation summary, endless conversations bore me")
    assert mark_end("done <|endconversation|>") == f"done {END}"


def test_no_token_bans_so_guardrails_resample():
    sim, inner = simulator([END, "I need cheap hostels", "cheap hostels near the river please"])
    turn = sim.first_turn(INTENT)
    assert turn.text == "cheap hostels near the river please"
    assert [e["action"] for e in turn.events] == ["resample", "resample"]  # no "ban" event: nothing enforced
    assert PromptedUserModel(inner).supports.banned_tokens is False


# --------------------------------------------------------------------------- registry


def test_load_model_wraps_the_inner_spec(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["hostels in lisbon?"]))
    model = load_model(f"prompted:scripted:{script}")
    assert isinstance(model, PromptedUserModel) and model.name == f"prompted:scripted:{script}"
    assert UserSimulator(f"prompted:scripted:{script}").first_turn(INTENT).text == "hostels in lisbon?"


@pytest.mark.parametrize(("spec", "message"), [
    ("prompted:", "names no model"),
    ("prompted:foo:x", "inner model spec is not valid"),
    ("prompted:hf", "inner model spec is not valid"),
    ("prompted:prompted:hf:x", "cannot be wrapped again"),
])
def test_bad_prompted_specs(spec, message):
    with pytest.raises(UserError, match=message):
        load_model(spec)


def test_options_go_to_the_inner_model(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["x"]))
    with pytest.raises(UserError, match="scripted: models take no option 'device'"):
        load_model(f"prompted:scripted:{script}", device="cpu")


# --------------------------------------------------------------------------- a tiny hf assistant


@pytest.fixture(scope="module")
def tiny_assistant(tmp_path_factory):
    from userloop.models.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("assistant") / "model", hidden_size=32, max_positions=2048,
                                 sampling_defaults={"do_sample": True})


def test_prompted_tiny_hf_assistant_through_the_simulator(tiny_assistant):
    import asyncio

    model = load_model(f"prompted:hf:{tiny_assistant}", device="cpu", max_batch_size=8)
    assert model.inner.device == "cpu" and model.inner.max_batch_size == 8
    sim = UserSimulator(model, GuardrailConfig(max_attempts=2),
                        GenerationParams(max_new_tokens=12, temperature=1.0, seed=1))

    async def run():
        async with model:
            first = await sim.afirst_turns([INTENT, INTENT])
            history = [{"role": "user", "content": first[0].text or "hi"}, {"role": "assistant", "content": "Sure."}]
            return first, await sim.anext_turns([INTENT], [history])

    first, following = asyncio.run(run())
    assert len(first) == 2 and len(following) == 1
    assert all(isinstance(t.text, str) for t in first + following)
    assert not any(e["action"] == "ban" for t in first + following for e in t.events)


# --------------------------------------------------------------------------- CLI


def test_user_turn_cli_with_a_prompted_user(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({OPENING_REQUEST: "budget lisbon trip, 3 days", "*": "never used"}))
    result = CliRunner().invoke(app, ["user-turn", "--user", f"prompted:scripted:{script}", "--intent", INTENT])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["text"] == "budget lisbon trip, 3 days"
    bad = CliRunner().invoke(app, ["user-turn", "--user", "prompted:prompted:hf:x", "--intent", INTENT])
    assert bad.exit_code != 0 and "cannot be wrapped again" in bad.output and "Traceback" not in bad.output
