"""`userloop serve --simulator`: the official openai client against it (plain, streamed, concurrent, with a
key, bad requests), its end signal, and `openai:` models pointed at it acting as user models."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest
from model_helpers import END_CONVERSATION, free_port, uvicorn_server
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.models import GenerationParams, load_model
from userloop.models.mock import MockModel
from userloop.models.openai_compatible import listed_simulator
from userloop.models.serve.simulator_protocol import HarnessOptions
from userloop.userlm.flip import user_system_message
from userloop.userlm.simulator import PROTOCOL_HARNESS, GuardrailConfig, UserSimulator
from userloop.userlm.simulator_server import build_simulator_app

INTENT = "You are a user chatting with an assistant language model to plan a weekend trip."
KEY = "sim-key"
# The user LM: keyed by a substring of the last message (the intent for the opening turn, then the assistant's).
USER_SCRIPT = {
    "plan a weekend trip": "can you help me plan a weekend trip",
    "Where to?": "somewhere with mountains and lakes",
    "Try the Alps": END_CONVERSATION,
    "Happy to help": "I want it cheap please",
    # a tau2-bench-style task (TAU2_SYSTEM): the opening turn is keyed by its scenario, the greeting left out
    "'Important Meeting' for user_1": "hello, I need a task for my meeting",
    "your user id": "my user id is user_1",
    "title should": "call it Important Meeting please",
    "task is created": "great, thanks a lot" + END_CONVERSATION,
    "*": "tell me more about that option",
}
OPENING = [{"role": "system", "content": INTENT}]


def conversation(*replies: str) -> list[dict[str, str]]:
    """The harness's view: the intent, then (user turn, assistant reply) pairs ending with ``replies[-1]``."""
    user_turns = ["can you help me plan a weekend trip", "somewhere with mountains and lakes", "a cheap hotel please"]
    messages = list(OPENING)
    for user_turn, reply in zip(user_turns, replies):
        messages += [{"role": "user", "content": user_turn}, {"role": "assistant", "content": reply}]
    return messages


@pytest.fixture(scope="module")
def user_script(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("simulator") / "user.json"
    path.write_text(json.dumps(USER_SCRIPT))
    return f"scripted:{path}"


@pytest.fixture(scope="module")
def simulator_url(user_script):
    """A simulator server for the scripted user LM as 'user-lm', key 'sim-key'."""
    with uvicorn_server(build_simulator_app(UserSimulator(user_script), "user-lm", api_key=KEY)) as url:
        yield url


@pytest.fixture
def client(simulator_url) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=simulator_url, max_retries=0, timeout=60)


def extension(response) -> dict:
    return response.model_extra["userloop"]


# --------------------------------------------------------------------------- the official client
def test_a_conversation_turn_by_turn(client):
    opening = client.chat.completions.create(model="user-lm", messages=OPENING)
    [choice] = opening.choices
    assert (choice.message.content, choice.finish_reason) == ("can you help me plan a weekend trip", "stop")
    assert extension(opening) == {"ended": False, "events": []} and opening.model == "user-lm"
    assert opening.usage.prompt_tokens > 0 and opening.usage.completion_tokens == 16  # both samples of the call
    second = client.chat.completions.create(model="user-lm", messages=conversation("Where to?"))
    assert second.choices[0].message.content == "somewhere with mountains and lakes"
    ending = client.chat.completions.create(model="user-lm", messages=conversation("Where to?", "Try the Alps."))
    [choice] = ending.choices
    assert (choice.message.content, choice.finish_reason) == ("", "end_conversation")
    assert extension(ending) == {"ended": True, "events": []}
    assert END_CONVERSATION not in json.dumps(ending.model_dump())


def test_an_early_end_is_resampled_and_the_events_say_so(client, user_script):
    """The end token at user turn 2 breaks the avoid-termination guardrail: every sample is resampled, the
    least severe is kept, and the events the server sends are those of the in-process simulator."""
    messages = conversation("Try the Alps.")
    response = client.chat.completions.create(model="user-lm", messages=messages)
    events = extension(response)["events"]
    assert [e["action"] for e in events] == ["resample"] * 8 + ["fallback"]
    assert events[0]["guardrail"] == "avoid_termination" and response.choices[0].finish_reason == "end_conversation"
    local = UserSimulator(user_script).next_turn(INTENT, messages[1:])
    assert (local.text, local.ended, local.events) == (response.choices[0].message.content, True, events)


def test_streamed_turns_match_plain_ones(client):
    for messages in (OPENING, conversation("Happy to help"), conversation("Where to?", "Try the Alps.")):
        plain = client.chat.completions.create(model="user-lm", messages=messages)
        chunks = list(client.chat.completions.create(model="user-lm", messages=messages, stream=True,
                                                     stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == plain.choices[0].message.content
        [finish] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish.choices[0].finish_reason == plain.choices[0].finish_reason
        assert extension(finish) == extension(plain)
        assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens and not chunks[-1].choices


def test_models_lists_a_user_simulator_and_the_key_is_required(client, simulator_url):
    [entry] = client.models.list().data
    settings = entry.model_extra["userloop"]
    assert entry.id == "user-lm" and settings["kind"] == "user_simulator"
    assert settings["guardrails"]["max_words"] == 25 and settings["sampling"]["top_p"] == 0.8
    for key in ("wrong", None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(simulator_url + "/chat/completions", json={"model": "user-lm", "messages": OPENING},
                              headers=headers, timeout=30)
        assert response.status_code == 401 and "API key" in response.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong", base_url=simulator_url, max_retries=0).chat.completions.create(
            model="user-lm", messages=OPENING)


# --------------------------------------------------------------------------- what reaches the user LM
def recorder() -> MockModel:
    """A user LM that answers a fixed turn; it records each conversation and its parameters (``calls``)."""
    return MockModel("recorder", replies=["what would you suggest for that"])


def test_intent_field_persona_and_sampling_reach_the_user_lm():
    user_lm = recorder()
    with uvicorn_server(build_simulator_app(UserSimulator(user_lm), "user-lm")) as url:
        client = openai.OpenAI(api_key="none", base_url=url, max_retries=0)
        agent_view = [{"role": "system", "content": "You are a helpful travel agent."},
                      {"role": "user", "content": "plan a trip"}, {"role": "assistant", "content": "Where to?"}]
        client.chat.completions.create(model="user-lm", messages=agent_view, max_tokens=10, temperature=0.5, seed=3,
                                       extra_body={"intent": INTENT, "persona": "a retired  teacher"})
        [(messages, params)] = user_lm.calls
        assert messages == [{"role": "system", "content": user_system_message(INTENT, "a retired teacher")},
                            *agent_view[1:]]
        # the seed of the simulator's first call is derived from the request's (as in process)
        assert (params.max_new_tokens, params.temperature, params.top_p, params.seed) == (10, 0.5, 0.8, 3 * 1_000_003)
        user_lm.calls.clear()
        client.chat.completions.create(model="user-lm", messages=OPENING, max_tokens=4000)
        [(messages, params)] = user_lm.calls
        assert messages == OPENING and params.max_new_tokens == 96  # a request cannot raise the server's budget


# --------------------------------------------------------------------------- bad requests: one clear 4xx each
def body(**fields) -> dict:
    return {"model": "user-lm", "messages": conversation("Where to?"), **fields}


@pytest.mark.parametrize(("request_body", "status", "fragment"), [
    (body(messages=[]), 400, "empty conversation"),
    (body(messages=conversation("Where to?")[1:]), 400, "no user-simulator intent"),
    (body(messages=[{"role": "system", "content": "  "}]), 400, "intent is empty"),
    (body(messages=conversation("Where to?")[:2]), 400, "ends with the simulated user's own turn ('user')"),
    (body(messages=[*OPENING, *[{"role": "assistant", "content": "Hi! How can I help?"}] * 2]), 400,
     "messages[2] is a second 'assistant' turn in a row"),
    (body(messages=[*OPENING, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]), 400,
     "second 'user'"),
    (body(messages=[*conversation("Where to?"), {"role": "tool", "content": "{}"}]), 400, "role 'tool'"),
    (body(messages=[*conversation("Where to?"), {"role": "system", "content": "be brief"}]), 400,
     "messages[3] is a system"),
    (body(messages=[{"role": "narrator", "content": "x"}]), 400, "unknown role"),
    (body(n=2), 400, "one user turn per request"),
    (body(stop=["\n"]), 400, "stop"),
    (body(tool_choice="required"), 400, "never calls tools"),
    (body(logit_bias={"1": 5}), 400, "logit_bias"),
    (body(temperature=5), 400, "temperature"),
    (body(frequency_penalty=1), 400, "frequency_penalty"),
    (body(model="gpt-4o"), 404, "'user-lm'"),
    (b"{not json", 400, "JSON"),
])
def test_bad_requests_get_one_clear_4xx_and_the_server_keeps_serving(client, simulator_url, request_body, status,
                                                                      fragment):
    content = request_body if isinstance(request_body, bytes) else json.dumps(request_body).encode()
    response = httpx.post(simulator_url + "/chat/completions", content=content, timeout=30,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]
    assert client.chat.completions.create(model="user-lm", messages=OPENING).choices[0].finish_reason == "stop"


# --------------------------------------------------------------------------- harnesses with a prompted user (tau2)
# tau2-bench's user model call: its system prompt is role-play guidelines for a prompted model followed by the
# task's scenario in <scenario> tags; the roles are swapped (the agent's turns as 'user', the user's own as
# 'assistant'); the agent greets first; the end is '###STOP###' in the text. (Guidelines paraphrased here.)
SCENARIO = ("Persona:\n\tA busy team lead who writes briefly\nInstructions:\n\tDomain: mock\n\tReason for call:\n"
            "\t\tCreate a new task called 'Important Meeting' for user_1.")
TAU2_SYSTEM = ("# User Simulation Guidelines\nPlay a customer talking to a support agent, one message at a time, "
               "following the scenario. When the goal is met, write '###STOP###'.\n\n"
               f"<scenario>\n{SCENARIO}\n</scenario>")
GREETING = "Hi! How can I help you today?"
AGENT_REPLIES = ["Sure. What is your user id?", "Thanks. Which title should it have?", "Done, the task is created."]
STOP = "###STOP###"
TAU2_HARNESS = HarnessOptions(perspective="user", end_text=STOP, intent_tag="scenario")
SWAPPED = {"user": "assistant", "assistant": "user"}


@pytest.fixture(scope="module")
def tau2_url(user_script):
    """A simulator server started for tau2-style harnesses: --perspective user --end-text '###STOP###'
    --intent-tag scenario."""
    with uvicorn_server(build_simulator_app(UserSimulator(user_script), "user-lm", api_key=KEY,
                                            harness=TAU2_HARNESS)) as url:
        yield url


def tau2_request(trajectory: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The messages a tau2-style harness sends its user model for ``trajectory`` (its own roles: the agent
    ``assistant``, the simulated user ``user``): the system prompt, then every turn with its role swapped."""
    return [{"role": "system", "content": TAU2_SYSTEM},
            *({"role": SWAPPED[role], "content": text} for role, text in trajectory)]


def test_a_tau2_style_harness_runs_a_conversation_unchanged(tau2_url):
    """The harness's loop as tau2-bench runs it: the agent greets, the user model answers each agent turn,
    and the conversation is over when the user's text contains '###STOP###'."""
    client = openai.OpenAI(api_key=KEY, base_url=tau2_url, max_retries=0, timeout=60)
    trajectory, responses = [("assistant", GREETING)], []
    for agent_reply in [*AGENT_REPLIES, "(never sent)"]:
        response = client.chat.completions.create(model="user-lm", messages=tau2_request(trajectory), seed=300)
        responses.append(response)
        trajectory.append(("user", response.choices[0].message.content))
        if STOP in response.choices[0].message.content:
            break
        trajectory.append(("assistant", agent_reply))
    assert [text for role, text in trajectory if role == "user"] == [
        "hello, I need a task for my meeting", "my user id is user_1", "call it Important Meeting please",
        f"great, thanks a lot {STOP}"]
    assert [r.choices[0].finish_reason for r in responses] == ["stop"] * 3 + ["end_conversation"]
    assert [extension(r)["ended"] for r in responses] == [False] * 3 + [True]
    for response in responses:  # the greeting (messages[1]) is left out of every turn, and the events say so
        [dropped] = [e for e in extension(response)["events"] if e["action"] == "drop"]
        assert dropped["guardrail"] == "opening_assistant_turn" and "messages[1]" in dropped["detail"]
    chunks = list(client.chat.completions.create(model="user-lm", messages=tau2_request(trajectory[:-1]),
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == f"great, thanks a lot {STOP}"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "end_conversation"


def test_what_reaches_the_user_lm_from_a_tau2_style_request():
    """Roles swapped back, the greeting and the guidelines left out, the scenario as the intent; the tools tau2
    offers a user in some domains are accepted and never called, and an event says so."""
    user_lm = recorder()
    with uvicorn_server(build_simulator_app(UserSimulator(user_lm), "user-lm", harness=TAU2_HARNESS)) as url:
        client = openai.OpenAI(api_key="none", base_url=url, max_retries=0)
        tool = {"type": "function", "function": {"name": "check_notifications", "parameters": {"type": "object"}}}
        trajectory = [("assistant", GREETING), ("user", "hello, I need a task"), ("assistant", AGENT_REPLIES[0])]
        response = client.chat.completions.create(model="user-lm", messages=tau2_request(trajectory),
                                                  tools=[tool], tool_choice="auto")
    [(messages, _)] = user_lm.calls
    assert messages == [{"role": "system", "content": SCENARIO}, {"role": "user", "content": "hello, I need a task"},
                        {"role": "assistant", "content": AGENT_REPLIES[0]}]
    assert [(e["guardrail"], e["action"]) for e in extension(response)["events"]] == [
        ("user_tools", "ignore"), ("opening_assistant_turn", "drop")]


def test_request_fields_choose_the_perspective_and_the_end_text(client):
    """A harness that can add fields gets the same from the default server, request by request."""
    def flipped(messages):
        return [messages[0], *({"role": SWAPPED[m["role"]], "content": m["content"]} for m in messages[1:])]

    for messages in (conversation("Where to?"), conversation("Where to?", "Try the Alps.")):
        plain = client.chat.completions.create(model="user-lm", messages=messages)
        swapped = client.chat.completions.create(model="user-lm", messages=flipped(messages),
                                                 extra_body={"perspective": "user"})
        assert (swapped.choices[0].message.content, extension(swapped)) == (plain.choices[0].message.content,
                                                                            extension(plain))
    ending = client.chat.completions.create(model="user-lm", messages=conversation("Where to?", "Try the Alps."),
                                            extra_body={"end_text": STOP})
    assert (ending.choices[0].message.content, ending.choices[0].finish_reason) == (STOP, "end_conversation")
    greeted = client.chat.completions.create(
        model="user-lm", messages=[*OPENING, {"role": "assistant", "content": GREETING}])
    assert greeted.choices[0].message.content == "can you help me plan a weekend trip"
    assert [e["guardrail"] for e in extension(greeted)["events"]] == ["opening_assistant_turn"]


def test_the_harness_options_are_listed_and_a_userloop_client_refuses_such_a_server(tau2_url, monkeypatch):
    client = openai.OpenAI(api_key=KEY, base_url=tau2_url, max_retries=0)
    harness = client.models.list().data[0].model_extra["userloop"]["harness"]
    assert harness == {"perspective": "user", "end_text": STOP, "intent_tag": "scenario"}
    assert HarnessOptions().model_dump() == PROTOCOL_HARNESS  # what userloop's own requests assume
    monkeypatch.setenv("SIM_KEY", KEY)
    remote = UserSimulator(load_model(f"openai:user-lm@{tau2_url}", api_key_env="SIM_KEY"))
    with pytest.raises(UserError, match="serves harnesses of another kind .*perspective 'user'"):
        remote.next_turn(INTENT, [])


@pytest.mark.parametrize(("messages", "fields", "fragment"), [
    ([{"role": "system", "content": "Play a customer."}, {"role": "user", "content": GREETING}], {},
     "no <scenario>...</scenario> section"),
    (tau2_request([("assistant", GREETING), ("user", "hello")]), {},
     "ends with the simulated user's own turn ('assistant')"),
    (tau2_request([("assistant", GREETING), ("assistant", "Anyone there?")]), {}, "second 'user' turn in a row"),
    ([*tau2_request([("assistant", GREETING)]), {"role": "tool", "content": "{}"}], {}, "role 'tool'"),
    (tau2_request([("assistant", GREETING)]), {"perspective": "agent"}, "perspective"),
    (tau2_request([("assistant", GREETING)]), {"end_text": "  "}, "end_text"),
    (tau2_request([("assistant", GREETING)]), {"tool_choice": {"type": "function"}}, "never calls tools"),
])
def test_bad_tau2_style_requests_get_one_clear_400(tau2_url, messages, fields, fragment):
    response = httpx.post(tau2_url + "/chat/completions", json={"model": "user-lm", "messages": messages, **fields},
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


# --------------------------------------------------------------------------- a real user LM: batching, context
@pytest.fixture(scope="module")
def tiny_simulator_url(tiny_model_path):
    """A simulator server for the tiny hf checkpoint: one call of 2 samples per turn, 6 tokens each."""
    simulator = UserSimulator(load_model(f"hf:{tiny_model_path}"), GuardrailConfig(max_attempts=2),
                              GenerationParams(max_new_tokens=6, temperature=1.0, top_p=0.8))
    with uvicorn_server(build_simulator_app(simulator, "tiny-user")) as url:
        yield url, simulator.model


def test_concurrent_requests_are_batched(tiny_simulator_url):
    url, model = tiny_simulator_url
    model.batch_size_counts.clear()

    async def main():
        async with openai.AsyncOpenAI(api_key="none", base_url=url, max_retries=0, timeout=120) as client:
            return await asyncio.gather(*(client.chat.completions.create(
                model="tiny-user", messages=[{"role": "system", "content": f"{INTENT} Trip number {i}."}], seed=i)
                for i in range(8)))

    responses = asyncio.run(main())
    assert all(r.choices[0].finish_reason in ("stop", "end_conversation") for r in responses)
    assert all(END_CONVERSATION not in r.choices[0].message.content for r in responses)
    rows = model.batch_size_counts
    assert sum(size * calls for size, calls in rows.items()) == 16  # 8 requests x 2 samples, no resampling
    assert max(rows) > 2  # requests arriving together shared a generate call


def test_an_oversize_context_is_a_400_and_the_server_keeps_serving(tiny_simulator_url):
    url, _ = tiny_simulator_url
    client = openai.OpenAI(api_key="none", base_url=url, max_retries=0, timeout=120)
    long = [*OPENING, {"role": "user", "content": "word " * 3000}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(openai.BadRequestError, match="exceeds the context"):
        client.chat.completions.create(model="tiny-user", messages=long)
    assert client.chat.completions.create(model="tiny-user", messages=OPENING).choices[0].message.content is not None


# --------------------------------------------------------------------------- clients: openai: as a user model
def test_an_openai_model_pointed_at_the_server_is_a_user_model(simulator_url, user_script, monkeypatch):
    """A UserSimulator over ``openai:`` takes the server's turns and events as they are (no second round of
    guardrails: the server refuses the n=2 a plain user LM is asked for)."""
    monkeypatch.setenv("SIM_KEY", KEY)
    remote = UserSimulator(load_model(f"openai:user-lm@{simulator_url}", api_key_env="SIM_KEY"))
    local = UserSimulator(user_script)
    for history in ([], conversation("Where to?")[1:], conversation("Try the Alps.")[1:],
                    conversation("Where to?", "Try the Alps.")[1:]):
        assert remote.next_turn(INTENT, history) == local.next_turn(INTENT, history)


def test_simulate_with_a_remote_user_records_what_an_in_process_user_records(simulator_url, user_script, tmp_path,
                                                                             monkeypatch):
    from userloop.simulate.runs import SimulationConfig, read_records, simulate

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assistant = tmp_path / "assistant.json"
    assistant.write_text(json.dumps({"help me plan": "Where to?", "mountains": "Try the Alps.",
                                     "*": "Happy to help"}))
    scenarios = tmp_path / "scenarios.jsonl"
    scenarios.write_text("".join(json.dumps({"id": f"o{i}", "kind": "open", "intent": intent}) + "\n" for i, intent in
                                 enumerate([INTENT, ("You are a user chatting with an assistant language model to "
                                                     "find a recipe.")])))
    runs = {}
    for name, user in (("remote", f"openai:user-lm@{simulator_url}"), ("local", user_script)):
        simulate(SimulationConfig(assistant=f"scripted:{assistant}", user=user, scenarios=str(scenarios), n=2),
                 tmp_path / name)
        records, _ = read_records(tmp_path / name / "conversations.jsonl")
        runs[name] = sorted(records, key=lambda r: r.key)

    def outcome(record):
        return (record.end_reason, record.end_events, record.tokens,
                [(m.role, m.content, m.events) for m in record.messages])

    assert [outcome(r) for r in runs["remote"]] == [outcome(r) for r in runs["local"]]
    assert {r.end_reason for r in runs["remote"]} == {"user_ended", "max_turns"}
    assert any(m.events for r in runs["remote"] for m in r.messages)


def test_listed_simulator_reads_only_a_simulator_entry_for_the_model():
    entry = {"id": "user-lm", "object": "model", "userloop": {"kind": "user_simulator", "guardrails": {}}}
    assert listed_simulator(json.dumps({"data": [entry]}).encode(), "user-lm") == entry["userloop"]
    assert listed_simulator(json.dumps({"data": [entry]}).encode(), "other") is None
    assert listed_simulator(json.dumps({"data": [{"id": "user-lm", "object": "model"}]}).encode(), "user-lm") is None
    assert listed_simulator(b"<html>", "user-lm") is None and listed_simulator(b"[1]", "user-lm") is None


def test_a_plain_server_is_not_taken_for_a_simulator(served_tiny):
    model = load_model(f"openai:tiny@{served_tiny.url}", api_key_env="TINY_TEST_KEY")

    async def settings():
        async with model:
            return await model.simulator_settings()

    assert asyncio.run(settings()) is None


# --------------------------------------------------------------------------- the command
def test_serve_simulator_process_end_to_end(user_script):
    port = free_port()
    env = {**os.environ, "SIM_SERVER_KEY": KEY}
    command = [sys.executable, "-m", "userloop.cli", "serve", user_script, "--simulator", "--port", str(port),
               "--model-name", "user-lm", "--api-key-env", "SIM_SERVER_KEY", "--avoid-termination-turns", "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "userloop serve --simulator did not become healthy"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client = openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        ending = client.chat.completions.create(model="user-lm", messages=conversation("Try the Alps."))
        assert ending.choices[0].finish_reason == "end_conversation"  # turn 2 may end: --avoid-termination-turns 1
        assert client.models.list().data[0].model_extra["userloop"]["guardrails"]["avoid_termination_turns"] == 1
    finally:
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    assert "as user simulator 'user-lm'" in stderr and KEY not in stdout + stderr


def test_serve_simulator_errors(user_script):
    def error(args: list[str]) -> str:
        result = CliRunner().invoke(app, ["serve", *args])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        return lines[0]

    assert "add --simulator" in error([user_script, "--max-attempts", "3"])
    assert "'always'" in error([user_script, "--simulator", "--avoid-termination-turns", "soon", "--port", "0"])
    assert "max_attempts must be" in error([user_script, "--simulator", "--max-attempts", "0", "--port", "0"])
    assert "API key" in error([user_script, "--simulator", "--host", "0.0.0.0", "--port", "0"])
    assert "hf: or scripted:" in error(["openai:m@http://127.0.0.1:1/v1", "--port", "0"])
    assert "--end-text applies only to a user simulator" in error([user_script, "--end-text", STOP])
    assert "--perspective: Input should be 'assistant' or 'user'" in error(
        [user_script, "--simulator", "--perspective", "agent", "--port", "0"])
    assert "--end-text: String should have at least 1 character" in error(
        [user_script, "--simulator", "--end-text", " ", "--port", "0"])
    assert "--intent-tag: give a tag's name, such as scenario" in error(
        [user_script, "--simulator", "--intent-tag", "<scenario>", "--port", "0"])


def test_serve_simulator_passes_the_harness_options(user_script, monkeypatch):
    from userloop.userlm import simulator_server

    served = []
    monkeypatch.setattr(simulator_server, "serve_simulator",
                        lambda spec, guardrails, params, harness, **_: served.append(harness))
    for flags, harness in (([], HarnessOptions()),
                           (["--perspective", "user", "--end-text", STOP, "--intent-tag", "scenario"], TAU2_HARNESS)):
        result = CliRunner().invoke(app, ["serve", user_script, "--simulator", "--port", "0", *flags])
        assert result.exit_code == 0, result.output
        assert served.pop() == harness
