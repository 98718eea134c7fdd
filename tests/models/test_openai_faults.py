"""Fault injection: a fake OpenAI-compatible server on 127.0.0.1 that answers what the API does not promise.

Every broken answer must become one ``ModelError(model, server, what is wrong)``; timeouts and retries are
set by ``--timeout`` / ``--retries``, ``$USERLOOP_TIMEOUT`` / ``$USERLOOP_RETRIES`` or load_model options;
``simulate`` exits 1 when every conversation ended in error and names the first error.
"""

from __future__ import annotations

import json

import pytest
import typer
from model_helpers import BROKEN_REPLIES, FaultServer
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.models import ModelError, load_model
from userloop.models.base import ContextLengthError
from userloop.models.openai_compatible import InvalidReply, parse_reply
from userloop.models.registry import current_request_limits, request_limits

HELLO = [{"role": "user", "content": "Hello"}]
FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


def provider(server: FaultServer, **options):
    return load_model(f"openai:m@{server.url}", **{**FAST, "timeout": 5, **options})


# --------------------------------------------------------------------------- broken 200 answers
@pytest.mark.parametrize(("action", "problem"), [
    ("malformed-json", "the reply is not JSON: {'id': 'x', 'choices': []}"),
    ("html", "the reply is not JSON: <!DOCTYPE html> <html><body><h1>Welcome to nginx!</h1></body></html>"),
    ("json-array", "the reply is a JSON list, not a chat completion object: [{"),
    ("no-message", "choice 0 of the reply has no 'message' object: {"),
    ("null-content", 'choice 0 of the reply has no text: its content is null (finish_reason "length")'),
    ("error-200", "the server answered with an error instead of a completion: upstream model overloaded"),
])
def test_a_reply_that_is_not_a_completion_is_one_model_error(fault_server, action, problem):
    fault_server.script = [action]
    with pytest.raises(ModelError) as caught:
        provider(fault_server).generate([HELLO])
    err = caught.value
    assert (err.model, err.server) == ("m", fault_server.url) and err.problem.startswith(problem)
    assert str(err) == f"m at {fault_server.url}: {err.problem}" and "\n" not in str(err)
    assert len(fault_server.requests) == 1  # a broken answer is not retried


@pytest.mark.parametrize("error", [
    {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
     "type": "invalid_request_error", "code": "context_length_exceeded"},                      # OpenAI
    {"message": "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens (2004 in "
                "the messages, 96 in the completion).", "type": "BadRequestError", "code": 400},   # vLLM
    {"message": "The input (5000 tokens) is longer than the model's context length (4096 tokens).",
     "type": "BadRequestError"},                                                                  # SGLang
    {"message": "the request exceeds the available context size, try increasing it",
     "type": "exceed_context_size_error"},                                                        # llama.cpp
])
def test_a_prompt_over_the_context_is_a_context_length_error(fault_server, error):
    fault_server.script = [(400, {"error": error})]
    with pytest.raises(ContextLengthError) as caught:
        provider(fault_server).generate([HELLO])
    assert str(caught.value).startswith(f"m at {fault_server.url}: answered HTTP 400: ")
    assert len(fault_server.requests) == 1  # not retried: the same prompt would not fit either


def test_other_rejections_stay_model_errors(fault_server):
    fault_server.script = [(400, {"error": {"message": "unknown field 'foo'", "type": "invalid_request_error"}})]
    with pytest.raises(ModelError, match="unknown field"):
        provider(fault_server).generate([HELLO])


def completion_body(choices, **fields) -> bytes:
    return json.dumps({"id": "x", "choices": choices, **fields}).encode()


def choice(index=0, content="hi", finish_reason="stop") -> dict:
    return {"index": index, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}


def test_parse_reply_accepts_what_the_api_promises():
    reply = parse_reply(completion_body([choice(1, "b", None), choice(0, "", "length")],
                                        usage={"prompt_tokens": 4, "completion_tokens": 2}), n=2)
    assert (reply.texts, reply.finish_reasons) == (["", "b"], ["length", "stop"])  # index order; "" is a reply
    assert (reply.prompt_tokens, reply.completion_tokens) == (4, 2)
    unindexed = parse_reply(completion_body([{"message": {"content": "x"}}], usage=None), n=1)
    assert (unindexed.texts, unindexed.prompt_tokens) == (["x"], 0)


@pytest.mark.parametrize(("body", "n", "fragment"), [
    (b"", 1, "not JSON: (empty body)"),
    (b"\xff\xfe", 1, "not JSON"),
    (b'"just a string"', 1, "a JSON str, not a chat completion object"),
    (b'{"error": "rate limited"}', 1, "an error instead of a completion: rate limited"),
    (b'{"object": "chat.completion"}', 1, "no 'choices' list"),
    (completion_body([choice()]), 2, "1 choices for n=2"),
    (completion_body(["text"]), 1, "choice 0 of the reply has no 'message' object"),
    (completion_body([{"message": {"role": "assistant"}}]), 1, "its content is null"),
    (completion_body([{"message": {"content": ["a", "b"]}}]), 1, 'its content is ["a", "b"]'),
    (completion_body([choice(0), choice(0)]), 2, "has index 0"),
    (completion_body([choice(5)]), 1, "has index 5"),
    (completion_body([choice(finish_reason=7)]), 1, "finish_reason 7"),
    (completion_body([choice()], usage={"prompt_tokens": "many"}), 1, "usage is not token counts"),
    (completion_body([choice()], usage=[1, 2]), 1, "usage is not token counts"),
])
def test_parse_reply_names_what_is_wrong(body, n, fragment):
    with pytest.raises(InvalidReply) as caught:
        parse_reply(body, n)
    assert fragment in str(caught.value)


def test_the_api_key_never_appears_in_an_error(fault_server, monkeypatch):
    monkeypatch.setenv("FAULT_KEY", "sk-very-secret")
    fault_server.script = ["error-200"]
    echo = {"error": {"message": "bad key sk-very-secret"}}
    monkeypatch.setitem(BROKEN_REPLIES, "error-200", ("application/json", json.dumps(echo).encode()))
    with pytest.raises(ModelError) as caught:
        provider(fault_server, api_key_env="FAULT_KEY").generate([HELLO])
    assert "sk-very-secret" not in str(caught.value) and "bad key ***" in str(caught.value)


# --------------------------------------------------------------------------- timeouts and retries
def test_a_server_that_trickles_its_answer_is_cut_off_at_the_timeout(fault_server):
    fault_server.script = ["trickle", "trickle"]
    with pytest.raises(ModelError, match=r"no answer within 0.5s after 2 attempts"):
        provider(fault_server, timeout=0.5, max_retries=1).generate([HELLO])


def test_server_errors_then_success(fault_server):
    fault_server.script = ["503", "500"]
    assert provider(fault_server, max_retries=2).generate([HELLO])[0].text == "fine 0"
    fault_server.script = ["503"]
    with pytest.raises(ModelError, match=r"HTTP 503 after 1 attempt$"):
        provider(fault_server, max_retries=0).generate([HELLO])


def test_request_limits_reach_the_provider(fault_server, monkeypatch):
    monkeypatch.delenv("USERLOOP_TIMEOUT", raising=False)
    monkeypatch.delenv("USERLOOP_RETRIES", raising=False)
    assert current_request_limits() == {}
    default = load_model(f"openai:m@{fault_server.url}")
    assert (default.timeout, default.max_retries) == (120.0, 4)
    monkeypatch.setenv("USERLOOP_TIMEOUT", "0.3")
    monkeypatch.setenv("USERLOOP_RETRIES", " 1 ")
    model = load_model(f"openai:m@{fault_server.url}", **FAST)
    assert (model.timeout, model.max_retries) == (0.3, 1)
    fault_server.script = ["hang", "hang"]
    with pytest.raises(ModelError, match=r"no answer within 0.3s after 2 attempts"):
        model.generate([HELLO])
    with request_limits(timeout=2, max_retries=0):  # over the environment; load_model options over both
        assert current_request_limits() == {"timeout": 2.0, "max_retries": 0}
        assert load_model(f"openai:m@{fault_server.url}").max_retries == 0
        assert load_model(f"openai:m@{fault_server.url}", max_retries=3).max_retries == 3
        assert load_model(f"prompted:openai:m@{fault_server.url}").inner.timeout == 2.0
    assert current_request_limits() == {"timeout": 0.3, "max_retries": 1}


@pytest.mark.parametrize(("variable", "value", "fragment"), [
    ("USERLOOP_TIMEOUT", "soon", "USERLOOP_TIMEOUT must be a number of seconds > 0, got 'soon'"),
    ("USERLOOP_TIMEOUT", "0", "USERLOOP_TIMEOUT must be a number of seconds > 0, got 0.0"),
    ("USERLOOP_TIMEOUT", "nan", "USERLOOP_TIMEOUT must be a number of seconds > 0"),
    ("USERLOOP_RETRIES", "2.5", "USERLOOP_RETRIES must be an integer >= 0, got '2.5'"),
    ("USERLOOP_RETRIES", "-1", "USERLOOP_RETRIES must be an integer >= 0, got -1"),
])
def test_bad_environment_limits_are_one_line(monkeypatch, variable, value, fragment):
    monkeypatch.setenv(variable, value)
    with pytest.raises(UserError) as caught:
        load_model("openai:m@http://127.0.0.1:9/v1")
    assert fragment in str(caught.value)


def test_hf_and_scripted_models_take_no_request_limits(monkeypatch, write_json):
    monkeypatch.setenv("USERLOOP_TIMEOUT", "3")
    with request_limits(timeout=1, max_retries=0):
        assert load_model(f"scripted:{write_json(['hi'])}").generate([HELLO])[0].text == "hi"


# --------------------------------------------------------------------------- the CLI
MODEL_COMMANDS = ["simulate", "evaluate-assistant", "eval-sim", "eval-persona-sim", "intents", "user-turn", "personas",
                  "eval-personal", "demo", "rlhi build", "rlhi rewards", "rlhi loop"]


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_commands_that_call_models_take_timeout_and_retries(name):
    command = typer.main.get_command(app)
    for part in name.split():
        command = command.commands[part]
    options = {param.name: param for param in command.params}
    assert options["timeout"].opts == ["--timeout"] and options["retries"].opts == ["--retries"]
    assert options["timeout"].default is None and options["retries"].default is None


@pytest.fixture
def simulate(tmp_path, write_json, monkeypatch, fault_server):
    """``simulate(out, *flags)``: ``userloop simulate`` of two open scenarios (one user turn each, a scripted
    user) with the fault server as the assistant; returns the result and the ``--json`` summary."""
    monkeypatch.delenv("USERLOOP_TIMEOUT", raising=False)
    monkeypatch.delenv("USERLOOP_RETRIES", raising=False)
    scenarios = tmp_path / "scenarios.jsonl"
    scenarios.write_text("".join(json.dumps({"id": f"o{i}", "kind": "open", "intent": f"(open-{i}) You want a fact."})
                                 + "\n" for i in (1, 2)), encoding="utf-8")
    user = write_json({"*": "Tell me something unusual today"}, "user.json")

    def run(out: str, *flags: str, as_json: bool = True):
        result = CliRunner().invoke(app, [
            "simulate", "--user", f"scripted:{user}", "--assistant", f"openai:m@{fault_server.url}", "--scenarios",
            str(scenarios), "--max-turns", "1", "--out", str(tmp_path / out), *(["--json"] if as_json else []), *flags])
        return result, json.loads(result.stdout) if as_json and result.exit_code in (0, 1) else None

    return run


def test_simulate_exits_1_when_every_conversation_ended_in_error(simulate, fault_server):
    fault_server.script = ["error-200", "error-200"]
    result, summary = simulate("run")
    assert result.exit_code == 1, result.output
    overall = summary["overall"]
    assert overall["end_reasons"]["error"] == summary["conversations"] == 2
    assert overall["first_error"] == (f"assistant model: ModelError: m at {fault_server.url}: the server answered with "
                                      "an error instead of a completion: upstream model overloaded")
    expected = f"error: every conversation ended in error, the first with: {overall['first_error']}"
    assert result.stderr.split() == expected.split()  # (split: the progress bar may leave a blank line)


def test_simulate_exits_0_when_some_conversations_ended_in_error(simulate, fault_server):
    fault_server.script = ["null-content"]
    result, summary = simulate("run")
    assert result.exit_code == 0, result.output
    overall = summary["overall"]
    assert overall["end_reasons"]["error"] == 1 and summary["conversations"] == 2
    assert "choice 0 of the reply has no text: its content is null" in overall["first_error"]
    rerun, _ = simulate("run", as_json=False)  # nothing left to run: the terminal summary
    assert rerun.exit_code == 0
    assert f"errors: 1 of 2 conversations ended in error; the first: {overall['first_error']}\n" in rerun.stdout


def test_simulate_retry_errors_runs_the_errored_conversations_again(simulate, fault_server):
    fault_server.script = ["error-200", "ok"]
    first, summary = simulate("run")
    assert first.exit_code == 0 and summary["overall"]["end_reasons"]["error"] == 1
    _, summary = simulate("run")  # an errored conversation is finished: a plain rerun repeats nothing
    assert summary["resume"]["finished_now"] == 0 and summary["overall"]["end_reasons"]["error"] == 1
    retried, summary = simulate("run", "--retry-errors")  # the server answers now
    assert retried.exit_code == 0, retried.output
    assert summary["resume"]["errors_removed"] == 1 and summary["resume"]["finished_now"] == 1
    assert summary["conversations"] == 2 and summary["overall"]["end_reasons"]["error"] == 0
    assert summary["overall"]["first_error"] is None


def test_simulate_timeout_and_retries_reach_the_server_model(simulate, fault_server, monkeypatch):
    fault_server.script = ["hang", "hang"]
    result, summary = simulate("hang", "--timeout", "0.3", "--retries", "0")
    assert result.exit_code == 1, result.output
    assert summary["overall"]["first_error"].endswith("no answer within 0.3s after 1 attempt")
    assert len(fault_server.requests) == 2  # one attempt per conversation
    monkeypatch.setenv("USERLOOP_RETRIES", "0")
    fault_server.script = ["503", "503"]
    failed, summary = simulate("environment")
    assert failed.exit_code == 1 and summary["overall"]["first_error"].endswith("HTTP 503 after 1 attempt")
    fault_server.script = ["503", "502"]
    retried, summary = simulate("flag", "--retries", "1")
    assert retried.exit_code == 0, retried.output  # the flag wins over $USERLOOP_RETRIES
    assert summary["overall"]["end_reasons"]["error"] == 0 and summary["overall"]["first_error"] is None


@pytest.mark.parametrize(("flags", "environment", "fragment"), [
    (["--timeout", "0"], {}, "--timeout must be a number of seconds > 0"),
    (["--retries", "-2"], {}, "--retries must be an integer >= 0"),
    ([], {"USERLOOP_TIMEOUT": "2m"}, "USERLOOP_TIMEOUT must be a number of seconds > 0, got '2m'"),
])
def test_simulate_bad_limits_are_one_line(simulate, fault_server, monkeypatch, flags, environment, fragment):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result, _ = simulate("run", *flags, as_json=False)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {fragment}") and result.stderr.count("\n") == 1
    assert not fault_server.requests
