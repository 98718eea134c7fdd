"""UserSimulator: each UserLM-8b guardrail (scripted models, deterministic), the hf path on the look-alike, the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import Message
from userloop.errors import UserError
from userloop.models.base import Capabilities, GenerationParams
from userloop.models.mock import MockModel
from userloop.userlm.simulator import (
    GuardrailConfig,
    UserSimulator,
    UserTurn,
    first_word,
    guardrails_for,
    normalise,
    parse_sample,
)
from userloop.userlm.template import END_CONVERSATION

INTENT = "You are a user chatting with an assistant language model to write a short poem about launching an open source library."
END = END_CONVERSATION
# One sample per call, so a list script's replies are the samples in order.
SERIAL = {"samples_per_call": 1}


@pytest.fixture
def scripted(tmp_path):
    """``scripted(replies, **guardrails)``: a simulator over a list script (each sample takes the next reply)."""
    def make(replies: list[str], **guardrails) -> UserSimulator:
        path = tmp_path / f"script{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(replies))
        return UserSimulator(f"scripted:{path}", GuardrailConfig(**{**SERIAL, **guardrails}))

    return make


def history(user_turns: int, first: str = "hello, can you help me with a poem") -> list[dict[str, str]]:
    """A history with ``user_turns`` exchanges, ending with the assistant."""
    messages = []
    for i in range(user_turns):
        messages.append({"role": "user", "content": first if i == 0 else f"and now version number {i} please"})
        messages.append({"role": "assistant", "content": f"Here is draft {i}."})
    return messages


def resamples(turn: UserTurn) -> list[str]:
    return [e["guardrail"] for e in turn.events if e["action"] == "resample"]


# --------------------------------------------------------------------------- post-processing


def test_leading_newline_is_stripped(scripted):
    turn = scripted(["\n\nwrite me a poem about the sea\n"]).first_turn(INTENT)
    assert turn == UserTurn("write me a poem about the sea", False, [])


def test_text_after_end_is_discarded_and_the_turn_ends(scripted):
    simulator = scripted([f"ok thanks, bye now{END} and then some rambling"])
    turn = simulator.next_turn(INTENT, history(2))
    assert (turn.text, turn.ended) == ("ok thanks, bye now", True)


def test_a_bare_end_token_ends_with_empty_text(scripted):
    turn = scripted([f"\n{END}"]).next_turn(INTENT, history(3))
    assert (turn.text, turn.ended, turn.events) == ("", True, [])


def test_helpers():
    assert parse_sample(f" hi {END}x", truncated=True).truncated is False  # an end token is not a cut turn
    assert normalise("Write  me, a POEM!") == ["write", "me", "a", "poem"]
    assert [first_word(t) for t in ("I'm here", "Iceland trip", "  x", "Here's one", "42 is")] == ["I", "Iceland", "", "Here", ""]


# --------------------------------------------------------------------------- guardrail 1: first tokens


def test_filter_first_tokens_resamples_banned_first_words(scripted):
    simulator = scripted(["I want a poem", "You know what, write a poem", "Here's my idea: a poem",
                          "I'm after a poem", "Iceland-themed poem please, short one"])
    turn = simulator.first_turn(INTENT)
    assert turn.text == "Iceland-themed poem please, short one"
    assert resamples(turn) == ["filter_first_tokens"] * 4
    assert "starts with 'I'" in turn.events[0]["detail"]


def test_filter_first_tokens_off_and_custom_words(scripted):
    assert scripted(["I want a poem"], filter_first_tokens=False).first_turn(INTENT).text == "I want a poem"
    turn = scripted(["Please write a poem", "i want a poem now"], first_words=("Please",)).first_turn(INTENT)
    assert turn.text == "i want a poem now"


# --------------------------------------------------------------------------- guardrail 2: termination


def test_no_end_during_the_first_n_turns(scripted):
    simulator = scripted([END, "thanks, that one is lovely"], avoid_termination_turns=2)
    turn = simulator.next_turn(INTENT, history(1))  # user turn 2: still banned
    assert (turn.text, turn.ended, resamples(turn)) == ("thanks, that one is lovely", False, ["avoid_termination"])
    assert scripted([END], avoid_termination_turns=2).next_turn(INTENT, history(2)).ended  # turn 3: allowed


def test_no_end_ever_with_always(scripted):
    turn = scripted([END, "one more change, please"], avoid_termination_turns=None).next_turn(INTENT, history(20))
    assert (turn.ended, resamples(turn)) == (False, ["avoid_termination"])


def test_termination_guardrail_off_lets_the_first_turn_end(scripted):
    assert scripted([END], avoid_termination=False).first_turn(INTENT).ended


# --------------------------------------------------------------------------- guardrail 3: length


def test_length_thresholds(scripted):
    long = " ".join(["word"] * 26)
    turn = scripted(["poem pls", long, "a poem about launching code"]).first_turn(INTENT)
    assert turn.text == "a poem about launching code"
    assert [e["detail"] for e in turn.events] == ["2 words < min_words 3", "26 words > max_words 25"]
    assert scripted(["poem"], min_words=1, max_words=1).first_turn(INTENT).events == []
    assert scripted(["poem"], length_thresholds=False).first_turn(INTENT).text == "poem"


def test_length_does_not_apply_to_an_ending_turn(scripted):
    turn = scripted([f"thx{END}"]).next_turn(INTENT, history(3))
    assert (turn.text, turn.ended, turn.events) == ("thx", True, [])


def test_a_turn_cut_at_max_new_tokens_is_too_long(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(["one two three four five six", "short poem request here"]))
    simulator = UserSimulator(f"scripted:{path}", GuardrailConfig(**SERIAL),
                              GenerationParams(max_new_tokens=5, temperature=1.0))  # the scripted model counts words
    turn = simulator.first_turn(INTENT)
    assert turn.text == "short poem request here"
    assert "cut at max_new_tokens" in turn.events[0]["detail"]


# --------------------------------------------------------------------------- guardrail 4: repetition


def test_repeating_an_earlier_user_turn_is_resampled(scripted):
    turn = scripted(["Hello,  can you help me with a POEM?!", "make it rhyme this time"]).next_turn(INTENT, history(2))
    assert (turn.text, resamples(turn)) == ("make it rhyme this time", ["filter_repetition"])
    assert turn.events[0]["detail"] == "repeats user turn 1"


def test_copying_the_intent_is_resampled(scripted):
    copied = "Write a short poem about launching an open source library!"
    long_copy = "hey so basically I need to write a short poem about launching an open source library for work"
    turn = scripted([copied, long_copy, "poem for our library launch, short"]).first_turn(INTENT)
    assert turn.text == "poem for our library launch, short"
    assert resamples(turn) == ["filter_repetition", "filter_repetition"]
    assert "copies 10 consecutive words of the intent" in turn.events[0]["detail"]
    # short turns inside the intent are fine (fewer than 4 words), as are shorter shared runs
    assert scripted(["a short poem"]).first_turn(INTENT).events == []
    assert scripted(["can you write a short poem about our launch"]).first_turn(INTENT).events == []


def test_repetition_guardrail_off(scripted):
    turn = scripted(["hello, can you help me with a poem"], filter_repetition=False).next_turn(INTENT, history(1))
    assert turn.events == []


# --------------------------------------------------------------------------- bounded resampling


def test_bounded_resampling_falls_back_to_the_least_severe_sample(scripted):
    simulator = scripted([END, "I like poems about the sea", "ok"], max_attempts=3)
    turn = simulator.first_turn(INTENT)
    assert (turn.text, turn.ended) == ("ok", False)  # length (1) beats first word (2) beats an early end (8)
    assert [e["action"] for e in turn.events] == ["resample"] * 3 + ["fallback"]
    assert turn.events[-1] == {"guardrail": "length_thresholds", "action": "fallback",
                               "detail": "no sample of 3 passed; kept sample 3: 1 words < min_words 3"}


def test_samples_are_drawn_n_per_call_up_to_max_attempts(tmp_path):
    model = MockModel("counting", replies=["I keep saying I"])
    simulator = UserSimulator(model, GuardrailConfig(max_attempts=7, samples_per_call=3))
    turn = simulator.first_turn(INTENT)
    assert [params.n for _, params in model.calls] == [3, 3, 1]
    assert [e["action"] for e in turn.events] == ["resample"] * 7 + ["fallback"]


def test_a_passing_sample_in_a_batch_of_candidates_wins(scripted):
    turn = scripted(["I want", "poem about a launch please", "never reached"], samples_per_call=3).first_turn(INTENT)
    assert turn.text == "poem about a launch please"
    assert len(turn.events) == 1


# --------------------------------------------------------------------------- bans at generation


def recording(supports: Capabilities, reply: str = "write me a poem please") -> MockModel:
    """Replies with one fixed text; the turns below ask for one conversation a call, so ``calls`` holds each call."""
    return MockModel("recording", replies=[reply], supports=supports)


def params_of(model: MockModel) -> list[GenerationParams]:
    return [params for _, params in model.calls]


def test_bans_go_to_models_that_enforce_them():
    model = recording(Capabilities(banned_tokens=True, banned_first_tokens=True))
    turn = UserSimulator(model).first_turn(INTENT)
    assert params_of(model)[0].banned_first_tokens == ("I", "You", "Here")
    assert params_of(model)[0].banned_tokens == (END,)
    assert [(e["guardrail"], e["action"]) for e in turn.events] == [("filter_first_tokens", "ban"),
                                                                     ("avoid_termination", "ban")]
    UserSimulator(model, GuardrailConfig(avoid_termination_turns=1)).next_turn(INTENT, history(1))
    assert params_of(model)[-1].banned_tokens == ()  # turn 2 may end


def test_end_token_ids_become_a_logit_bias_where_bans_are_not_enforced():
    model = recording(Capabilities(logit_bias=True))
    UserSimulator(model, GuardrailConfig(end_token_ids=(7, 9)), GenerationParams(logit_bias={3: 2.0})).first_turn(INTENT)
    assert dict(params_of(model)[0].logit_bias) == {3: 2.0, 7: -100.0, 9: -100.0}
    assert params_of(model)[0].banned_tokens == params_of(model)[0].banned_first_tokens == ()
    UserSimulator(model).first_turn(INTENT)  # without ids: resampling only
    assert dict(params_of(model)[-1].logit_bias) == {}


def test_seeds_differ_per_conversation_and_call_but_repeat_per_run():
    model = recording(Capabilities(), reply="I")
    simulator = UserSimulator(model, GuardrailConfig(max_attempts=2, samples_per_call=1),
                              GenerationParams(temperature=1.0, seed=5))
    simulator.first_turn(INTENT)
    simulator.first_turn(INTENT)
    seeds = [p.seed for p in params_of(model)]
    assert seeds[:2] == seeds[2:] and seeds[0] != seeds[1]


def test_hf_bans_act_at_generation_on_the_userlm_lookalike(userlm_path, userlm_tokenizer):
    """The look-alike pushed hard towards "I" and the end token: banned, never generated (no resampling)."""
    from userloop.models import load_model

    ids = {t: userlm_tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("I", " I", END)}
    assert all(len(v) == 1 for v in ids.values())
    push = {v[0]: 30.0 for v in ids.values()}
    model = load_model(f"hf:{userlm_path}")
    no_resampling = {"length_thresholds": False, "filter_repetition": False, "max_attempts": 1,
                     "samples_per_call": 1, "avoid_termination_turns": None}

    async def turns(guardrails_on: bool, seed: int) -> list[UserTurn]:
        simulator = UserSimulator(model, GuardrailConfig(filter_first_tokens=guardrails_on,
                                                         avoid_termination=guardrails_on, **no_resampling),
                                  GenerationParams(max_new_tokens=6, temperature=1.0, top_p=0.8, seed=seed,
                                                   logit_bias=push))
        async with model:
            return await simulator.anext_turns([INTENT] * 4, [[], history(1), history(2), history(3)])

    for seed in range(3):
        guarded = asyncio.run(turns(True, seed))
        assert all(first_word(t.text) not in ("I", "You", "Here") and not t.ended for t in guarded), guarded
        assert all(e["action"] == "ban" for t in guarded for e in t.events)
    unguarded = asyncio.run(turns(False, 0))
    assert any(t.ended or first_word(t.text) == "I" for t in unguarded), unguarded


# --------------------------------------------------------------------------- inputs


def test_history_is_validated(scripted):
    simulator = scripted(["write me a poem please"])
    with pytest.raises(UserError, match="expected 'assistant'"):
        simulator.next_turn(INTENT, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(UserError, match="must end with an assistant turn"):
        simulator.next_turn(INTENT, [{"role": "user", "content": "a"}])
    with pytest.raises(UserError, match="non-empty string"):
        simulator.first_turn("  ")
    turn = simulator.next_turn(INTENT, [Message("user", "hi there"), Message("assistant", "Hello!")])
    assert turn.text == "write me a poem please"


def test_configuration_is_validated():
    for bad in ({"min_words": 5, "max_words": 4}, {"avoid_termination_turns": -1}, {"max_attempts": 0},
                {"first_words": ("two words",)}, {"samples_per_call": True}):
        with pytest.raises(UserError):
            GuardrailConfig(**bad)
    with pytest.raises(UserError, match="logit_bias"):
        UserSimulator(recording(Capabilities()), GuardrailConfig(end_token_ids=(5,)))


def test_batched_turns_keep_their_order(scripted):
    simulator = scripted(["first user reply here", "second user reply here"])

    async def run():
        return await simulator.afirst_turns([INTENT, INTENT])

    assert [t.text for t in asyncio.run(run())] == ["first user reply here", "second user reply here"]
    with pytest.raises(UserError, match="one history per intent"):
        asyncio.run(simulator.anext_turns([INTENT], []))


def test_lazy_top_level_export():
    code = ("import sys, userloop; assert 'userloop.userlm.simulator' not in sys.modules; "
            "from userloop import UserSimulator; assert UserSimulator.__module__ == 'userloop.userlm.simulator'; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_user_turn_prints_one_json_object(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["I start badly", "\nhi, a poem about our launch please"]))
    history_file = tmp_path / "h.json"
    history_file.write_text(json.dumps({"messages": history(1)}))
    result = runner.invoke(app, ["user-turn", "--user", f"scripted:{script}", "--intent", INTENT,
                                 "--history", str(history_file), "--samples-per-call", "1"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == {"text": "hi, a poem about our launch please", "ended": False, "events": [
        {"guardrail": "filter_first_tokens", "action": "resample", "detail": "starts with 'I'"}]}


def test_cli_user_turn_flags(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps([END]))
    history_file = tmp_path / "h.json"
    history_file.write_text(json.dumps(history(1)))
    args = ["user-turn", "--user", f"scripted:{script}", "--intent", INTENT, "--history", str(history_file)]
    ended = orjson.loads(runner.invoke(app, [*args, "--avoid-termination-turns", "1"]).stdout)
    assert ended == {"text": "", "ended": True, "events": []}
    always = orjson.loads(runner.invoke(app, [*args, "--avoid-termination-turns", "always", "--max-attempts", "2"]).stdout)
    assert always["ended"] and [e["action"] for e in always["events"]] == ["resample", "resample", "fallback"]


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ('{"turns": []}', "a JSON list of messages or an object with 'messages'"),
    ('[{"role": "assistant", "content": "hi"}]', "expected 'user'"),
])
def test_cli_user_turn_bad_history_is_one_line(tmp_path, content, fragment):
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["a poem please, thanks"]))
    history_file = tmp_path / "h.json"
    history_file.write_text(content)
    result = runner.invoke(app, ["user-turn", "--user", f"scripted:{script}", "--intent", INTENT,
                                 "--history", str(history_file)])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr


def test_cli_user_turn_checks_history_and_intent_before_loading_the_model(tmp_path):
    """A bad history or intent fails at once, not after loading a (possibly 8B) model: the model here does not exist."""
    history_file = tmp_path / "h.json"
    for content, intent, fragment in [
        (json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                     {"role": "assistant", "content": "hello"}]), INTENT, "is a system message"),
        ('[{"role": "user", "content": "hi"}]', INTENT, "must end with an assistant turn"),
        ('[]', "   ", "non-empty string"),
    ]:
        history_file.write_text(content)
        result = runner.invoke(app, ["user-turn", "--user", f"hf:{tmp_path / 'no_model'}", "--intent", intent,
                                     "--history", str(history_file)])
        assert result.exit_code == 2 and fragment in result.stderr and "no such model" not in result.stderr, result.stderr


def test_guardrail_settings_are_the_model_card_or_the_raw_model():
    assert guardrails_for("on") == GuardrailConfig()
    raw = guardrails_for("off")
    assert not (raw.filter_first_tokens or raw.avoid_termination or raw.length_thresholds or raw.filter_repetition)
    assert raw.samples_per_call == 1   # nothing to resample
    with pytest.raises(UserError, match="--guardrails must be 'on' or 'off', got 'maybe'"):
        guardrails_for("maybe")
