"""`userloop serve`'s app: the official openai client against it, streaming, errors as 4xx, limits."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import openai
import pytest
from model_helpers import uvicorn_server

from userloop.models import GenerationParams, load_model
from userloop.models.serve import build_app

HELLO = [{"role": "user", "content": "Hello, can you help me?"}]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(served_tiny) -> openai.OpenAI:
    return openai.OpenAI(api_key=served_tiny.api_key, base_url=served_tiny.url, max_retries=0, timeout=60)


def post(served, body, key: str | None = "test-key", path: str = "/chat/completions") -> httpx.Response:
    headers = {**JSON, **({"Authorization": f"Bearer {key}"} if key else {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(served.url + path, content=content, headers=headers, timeout=60)


def request(**fields) -> dict:
    return {"model": "tiny", "messages": HELLO, "max_tokens": 6, **fields}


# --------------------------------------------------------------------------- the official client
def test_chat_completion_with_the_openai_client(client, served_tiny, tiny_model):
    response = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, temperature=0)
    [choice] = response.choices
    direct = tiny_model.generate([HELLO], GenerationParams(max_new_tokens=8, temperature=0))[0]
    assert choice.message.role == "assistant" and choice.message.content == direct.text
    assert choice.finish_reason == direct.finish_reason and response.model == "tiny"
    assert response.usage.prompt_tokens == direct.prompt_tokens
    assert response.usage.completion_tokens == direct.completion_tokens
    assert response.usage.total_tokens == direct.prompt_tokens + direct.completion_tokens
    assert response.id.startswith("chatcmpl-") and response.object == "chat.completion"


def test_streaming_with_the_openai_client(client):
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and not chunks[-1].choices


def test_streaming_several_samples(client):
    stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=5, temperature=1.0, n=2,
                                            seed=4, stream=True)
    texts = {0: "", 1: ""}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=5, temperature=1.0, n=2, seed=4)
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]


def test_raw_stream_format(served_tiny):
    response = post(served_tiny, request(stream=True))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_models_and_health(client, served_tiny):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(served_tiny.url.removesuffix("/v1") + "/health").json() == {"status": "ok"}


def test_extension_fields_ban_tokens(served_tiny):
    model = served_tiny.model
    favoured = {t for v in ("I", " I") for t in model._tokens_by_text().get(v, ())}
    bias = {str(t): 50 for t in favoured}
    plain = post(served_tiny, request(temperature=0, logit_bias=bias)).json()
    banned = post(served_tiny, request(temperature=0, logit_bias=bias, banned_tokens=["I"],
                                       banned_first_tokens=["Sure"])).json()
    assert plain["choices"][0]["message"]["content"].strip().startswith("I")
    assert "I" not in banned["choices"][0]["message"]["content"].split()


def test_concurrent_requests_are_batched(served_tiny):
    served_tiny.model.batch_size_counts.clear()

    async def main():
        async with openai.AsyncOpenAI(api_key="test-key", base_url=served_tiny.url, max_retries=0) as client:
            return await asyncio.gather(*(client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=4, temperature=0)
                for i in range(16)))

    responses = asyncio.run(main())
    assert len(responses) == 16 and all(r.choices[0].message.content is not None for r in responses)
    counts = served_tiny.model.batch_size_counts
    assert sum(size * calls for size, calls in counts.items()) == 16
    assert max(counts) > 1  # requests arriving together shared a generate call


# --------------------------------------------------------------------------- errors are 4xx with a message
def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"], error
    assert error["type"]


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "Invalid JSON"),
    (b"", "Invalid JSON"),
    (b"[1, 2]", "object"),
    ({"model": "tiny"}, "messages"),
    ({"model": "tiny", "messages": []}, "messages"),
    ({"model": "tiny", "messages": [{"role": "user"}]}, "content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": 5}]}, "content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "content"),
    ({"model": "tiny", "messages": "hello"}, "messages"),
    (request(temperature=3), "temperature"),
    (request(top_p=0), "top_p"),
    (request(n=0), "n"),
    (request(n=100000), "n"),
    (request(max_tokens=0), "max_tokens"),
    (request(max_tokens="many"), "max_tokens"),
    (request(stop=[1]), "stop"),
    (request(stop=[""]), "stop"),
    (request(logit_bias={"abc": 1}), "logit_bias"),
    (request(logit_bias={"1": 500}), "logit_bias"),
    (request(logit_bias={"99999999": 1}), "vocabulary"),
    (request(seed="x"), "seed"),
    (request(tools=[{"type": "function"}]), "tools"),
    (request(frequency_penalty=0.5), "penalt"),
    (request(logprobs=True), "logprobs"),
    (request(messages=[{"role": "wizard", "content": "hi"}]), "unknown role 'wizard'"),
    (request(messages=[{"role": "", "content": "hi"}]), "unknown role ''"),
    (request(messages=[*HELLO, {"role": "User", "content": "hi"}]), "messages.1.role"),
    (request(messages=HELLO * 3000), "at most 2048"),
    (request(stop=["x"] * 300), "at most 256"),
    (request(banned_tokens=["x"] * 300), "at most 256"),
    (request(max_tokens=10**9), "exceeds the context"),
    (request(messages=[{"role": "user", "content": "word " * 1000}]), "exceeds the context"),
    (request(stream=True, max_tokens=10**9), "exceeds the context"),
])
def test_bad_requests_get_400(served_tiny, body, fragment):
    assert_error(post(served_tiny, body), 400, fragment)


def test_auth(served_tiny):
    assert_error(post(served_tiny, request(), key=None), 401, "API key")
    assert_error(post(served_tiny, request(), key="wrong"), 401, "API key")
    assert httpx.get(served_tiny.url + "/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong", base_url=served_tiny.url, max_retries=0).models.list()


def test_unknown_model_path_and_method(served_tiny):
    assert_error(post(served_tiny, request(model="gpt-4")), 404, "tiny")
    assert_error(post(served_tiny, request(), path="/completions"), 404, "Not Found")
    response = httpx.get(served_tiny.url + "/chat/completions", headers={"Authorization": "Bearer test-key"})
    assert_error(response, 405, "Method Not Allowed")


# --------------------------------------------------------------------------- body limits, stalls
@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """A scripted model behind an app with a 1 KB body limit and a 0.5 s body timeout; no key."""
    script = tmp_path_factory.mktemp("scripted") / "replies.json"
    script.write_text('["ok"]')
    app = build_app(load_model(f"scripted:{script}"), "s", max_body_bytes=1024, body_timeout=0.5)
    with uvicorn_server(app) as url:
        yield url


def test_body_over_the_limit(small_server):
    body = json.dumps({"model": "s", "messages": [{"role": "user", "content": "x" * 2000}]})
    response = httpx.post(small_server + "/chat/completions", content=body, headers=JSON)
    assert_error(response, 413, "limit")

    def chunked():
        yield body[:600].encode()
        yield body[600:].encode()

    assert_error(httpx.post(small_server + "/chat/completions", content=chunked(), headers=JSON), 413, "limit")


def test_stalled_body_gets_408(small_server):
    host, port = small_server.removeprefix("http://").removesuffix("/v1").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"model\": ")
        reply = b""
        for _ in range(20):   # headers and body may arrive in separate packets; the server closes after
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
            if b"not received" in reply:
                break
    assert reply.decode().startswith("HTTP/1.1 408") and "not received" in reply.decode()


def test_no_key_needed_when_none_set(small_server):
    response = httpx.post(small_server + "/chat/completions", json={"model": "s", "messages": HELLO})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "ok"
