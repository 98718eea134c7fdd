"""The openai provider: spec strings, keys, parameters, retries, timeouts, replicas; and against `userloop serve`."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest
from model_helpers import FaultServer, free_port

from userloop.errors import UserError
from userloop.models import GenerationParams, ModelError, load_model
from userloop.models.base import ContextLengthError
from userloop.models.openai_compatible import OPENAI_BASE_URL, parse_target, retry_after_seconds

HELLO = [{"role": "user", "content": "Hello"}]
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5}


def provider(server: FaultServer, **options):
    return load_model(f"openai:m@{server.url}", **{**FAST, **options})


# --------------------------------------------------------------------------- spec strings and keys
def test_parse_target():
    assert parse_target("gpt-4o-mini") == ("gpt-4o-mini", [OPENAI_BASE_URL])
    assert parse_target("llama@http://127.0.0.1:8000") == ("llama", ["http://127.0.0.1:8000/v1"])
    assert parse_target("org/m@http://a:1/v1/, https://b/v1") == ("org/m", ["http://a:1/v1", "https://b/v1"])


@pytest.mark.parametrize("target", ["m@ftp://x/v1", "m@127.0.0.1:8000", "@http://x/v1", "m@http://a/v1,"])
def test_bad_targets(target):
    with pytest.raises(UserError):
        load_model(f"openai:{target}")


def test_openai_api_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        load_model("openai:gpt-4o-mini")
    monkeypatch.setenv("MY_KEY", "sk-secret-value")
    model = load_model("openai:gpt-4o-mini", api_key_env="MY_KEY")
    assert "sk-secret" not in repr(model) and "sk-secret" not in model.name


def test_key_from_the_environment_is_sent(fault_server, monkeypatch):
    monkeypatch.setenv("FAULT_KEY", "sk-local")
    provider(fault_server, api_key_env="FAULT_KEY").generate([HELLO])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider(fault_server).generate([HELLO])  # a local server without a key gets a placeholder
    assert [r["authorization"] for r in fault_server.requests] == ["Bearer sk-local", "Bearer EMPTY"]


@pytest.mark.parametrize(("options", "fragment"), [({"max_concurrency": 0}, "max_concurrency"),
                                                   ({"timeout": -1}, "timeout"), ({"max_retries": -1}, "max_retries"),
                                                   ({"extra_body": "x"}, "extra_body")])
def test_bad_options(options, fragment):
    with pytest.raises(UserError, match=fragment):
        load_model("openai:m@http://127.0.0.1:9/v1", **options)


# --------------------------------------------------------------------------- parameters
def test_parameters_are_passed_through(fault_server):
    model = provider(fault_server, extra_body={"skip_special_tokens": False})
    params = GenerationParams(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=["\n"], n=2,
                              logit_bias={5: -100})
    [completion] = model.generate([HELLO], params)
    body = fault_server.requests[0]["body"]
    assert body["messages"] == HELLO and body["model"] == "m"
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"], body["stop"], body["n"]) == (
        7, 0.5, 0.9, 3, ["\n"], 2)
    assert body["logit_bias"] == {"5": -100} and body["skip_special_tokens"] is False
    assert [c.text for c in completion.choices] == ["fine 0", "fine 1"]
    assert completion.completion_tokens == 4 == sum(c.completion_tokens for c in completion.choices)
    assert completion.prompt_tokens == 3 and completion.model == model.name


def test_unset_parameters_are_left_to_the_server(fault_server):
    provider(fault_server).generate([HELLO])
    assert set(fault_server.requests[0]["body"]) == {"model", "messages", "max_tokens"}


def test_bans_need_a_server_that_takes_them(fault_server):
    with pytest.raises(UserError, match="banned_tokens"):
        provider(fault_server).generate([HELLO], GenerationParams(banned_tokens=["I"]))
    assert not fault_server.requests
    provider(fault_server, server_bans=True).generate([HELLO], GenerationParams(banned_tokens=["I"],
                                                                                banned_first_tokens=["Sure"]))
    body = fault_server.requests[0]["body"]
    assert body["banned_tokens"] == ["I"] and body["banned_first_tokens"] == ["Sure"]


def test_stop_strings_are_enforced_on_the_reply(fault_server):
    [completion] = provider(fault_server).generate([HELLO], GenerationParams(stop=[" 0"]))
    assert (completion.text, completion.finish_reason) == ("fine", "stop")


# --------------------------------------------------------------------------- retries and errors
def test_retry_after_is_honoured(fault_server):
    fault_server.script = ["429"]
    fault_server.retry_after = "1"
    [completion] = provider(fault_server, backoff_max=5).generate([HELLO])
    assert completion.text == "fine 0" and len(fault_server.requests) == 2
    gap = fault_server.requests[1]["time"] - fault_server.requests[0]["time"]
    assert gap >= 0.9  # waited as told (without Retry-After the backoff is at most 0.01 s)


def test_retry_after_is_capped_by_backoff_max(fault_server):
    fault_server.script = ["503"]
    fault_server.retry_after = "3600"
    assert provider(fault_server, backoff_max=0.1).generate([HELLO])[0].text == "fine 0"


def test_retry_after_formats():
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_seconds({"retry-after": date}) <= 30
    assert retry_after_seconds({"retry-after": "2.5"}) == 2.5
    assert retry_after_seconds({"retry-after-ms": "300", "retry-after": "9"}) == 0.3
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


def test_server_errors_are_retried(fault_server):
    fault_server.script = ["500", "502", "503"]
    assert provider(fault_server).generate([HELLO])[0].text == "fine 0"
    assert len(fault_server.requests) == 4


def test_dropped_connection_is_retried(fault_server):
    fault_server.script = ["drop", "drop"]
    assert provider(fault_server).generate([HELLO])[0].text == "fine 0"
    assert len(fault_server.requests) == 3


def test_hang_times_out_with_a_clear_error(fault_server):
    fault_server.script = ["hang", "hang"]
    with pytest.raises(ModelError) as err:
        provider(fault_server, timeout=0.3, max_retries=1).generate([HELLO])
    message = str(err.value)
    assert "no answer within 0.3s" in message and "2 attempts" in message and fault_server.url in message


def test_clear_error_after_the_last_retry(fault_server):
    fault_server.script = ["500"] * 10
    with pytest.raises(ModelError) as err:
        provider(fault_server, max_retries=2).generate([HELLO])
    message = str(err.value)
    assert "HTTP 500" in message and "3 attempts" in message and fault_server.url in message and "\n" not in message
    assert len(fault_server.requests) == 3


def test_client_errors_are_not_retried(fault_server):
    fault_server.script = ["400"]
    with pytest.raises(ModelError, match="HTTP 400: scripted 400"):
        provider(fault_server).generate([HELLO])
    fault_server.script = ["401"]
    with pytest.raises(ModelError, match=r"\$OPENAI_API_KEY"):
        provider(fault_server).generate([HELLO])
    assert len(fault_server.requests) == 2


def test_unreachable_server():
    model = load_model(f"openai:m@http://127.0.0.1:{free_port()}/v1", max_retries=1, **FAST)
    with pytest.raises(ModelError, match="connection failed .* after 2 attempts"):
        model.generate([HELLO])


def test_one_failure_fails_the_batch_with_its_error(fault_server):
    fault_server.script = ["ok", "400"]
    with pytest.raises(ModelError, match="HTTP 400"):
        provider(fault_server).generate([HELLO, HELLO, HELLO])


# --------------------------------------------------------------------------- concurrency and replicas
def test_concurrency_limit(fault_server):
    fault_server.script = ["slow"] * 6
    completions = provider(fault_server, max_concurrency=2).generate([HELLO] * 6)
    assert len(completions) == 6 and fault_server.max_active == 2


def test_replicas_share_the_load_and_retries_move():
    first, second = FaultServer(), FaultServer()
    try:
        model = load_model(f"openai:m@{first.url},{second.url}", **FAST)
        first.script = second.script = ["slow"] * 10
        assert len(model.generate([HELLO] * 10)) == 10
        assert len(first.requests) == len(second.requests) == 5
        first.requests.clear(), second.requests.clear()
        first.script, second.script = ["500"], ["500"]
        model.generate([HELLO])  # each retry goes to the other replica: A, B, A or B, A, B
        assert sorted([len(first.requests), len(second.requests)]) == [1, 2]
    finally:
        first.stop(), second.stop()


def test_reuse_across_event_loops(fault_server):
    model = provider(fault_server)
    assert model.generate([HELLO])[0].text == model.generate([HELLO])[0].text == "fine 0"

    async def main():
        async with model:
            return await model.agenerate([HELLO])

    assert asyncio.run(main())[0].text == "fine 0"


# --------------------------------------------------------------------------- against `userloop serve`
def test_against_userloop_serve(served_tiny, tiny_model, monkeypatch):
    monkeypatch.setenv("SERVE_KEY", served_tiny.api_key)
    model = load_model(f"openai:tiny@{served_tiny.url}", api_key_env="SERVE_KEY", server_bans=True)
    conversations = [HELLO, [{"role": "user", "content": "What is the capital of France?"}]]
    params = GenerationParams(max_new_tokens=8, temperature=0)
    remote = model.generate(conversations, params)
    local = tiny_model.generate(conversations, params)
    assert [c.text for c in remote] == [c.text for c in local]
    assert [(c.prompt_tokens, c.completion_tokens) for c in remote] == [
        (c.prompt_tokens, c.completion_tokens) for c in local]
    sampled = model.generate([HELLO], GenerationParams(max_new_tokens=6, temperature=1.0, seed=2, n=3,
                                                       banned_tokens=["I"]))
    assert len(sampled[0].choices) == 3


def test_serve_rejections_are_clear(served_tiny, monkeypatch):
    monkeypatch.setenv("SERVE_KEY", served_tiny.api_key)
    model = load_model(f"openai:tiny@{served_tiny.url}", api_key_env="SERVE_KEY")
    with pytest.raises(ContextLengthError, match="HTTP 400: .*exceeds the context"):  # the engine's "context" end
        model.generate([HELLO], GenerationParams(max_new_tokens=100_000))
    monkeypatch.setenv("SERVE_KEY", "wrong")
    with pytest.raises(ModelError, match="HTTP 401"):
        load_model(f"openai:tiny@{served_tiny.url}", api_key_env="SERVE_KEY").generate([HELLO])
