"""`userloop serve` under hostile clients: large prompts do not stall other requests, web pages cannot drive it
(Host and Origin checks, JSON-only POSTs)."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from model_helpers import uvicorn_server

from userloop.errors import UserError
from userloop.local_http import ClientCheck
from userloop.models import load_model
from userloop.models.serve import build_app
from userloop.models.serve.serving import ChatServing

ALLOWED_ORIGIN = "http://localhost:3000"
HELLO = [{"role": "user", "content": "Hello"}]
CHAT = json.dumps({"model": "s", "messages": HELLO}).encode()


# --------------------------------------------------------------------------- large prompts off the event loop
def hold(monkeypatch, owner, name: str) -> tuple[threading.Event, threading.Event]:
    """Replace ``owner.name`` by a version that, once called, waits for ``release``; (``entered``, ``release``)."""
    original = getattr(owner, name)
    entered, release = threading.Event(), threading.Event()

    def held(*args):
        entered.set()
        release.wait(60)
        return original(*args)

    monkeypatch.setattr(owner, name, held)
    return entered, release


@pytest.mark.parametrize("stage", ["parsing the body", "making the prompt"])
def test_health_answers_while_large_requests_are_processed(served_tiny, monkeypatch, stage):
    """The issue's stall: five large requests at once, then /health. Each stage whose work grows with the
    request is held until /health (and /v1/models) answered: on the event loop, the hold would block them."""
    owner, name = (ChatServing, "parse") if stage == "parsing the body" else (served_tiny.model, "prompt_ids")
    entered, release = hold(monkeypatch, owner, name)
    large = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hello world " * 20_000}],
                        "max_tokens": 4}).encode()  # 240 kB, far over the tiny model's 512-token context
    headers = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
    finished = []  # (what, status) in order of completion

    def post_large() -> None:
        response = httpx.post(served_tiny.url + "/chat/completions", content=large, headers=headers, timeout=120)
        finished.append(("large", response.status_code, response.json()["error"]["message"]))

    threads = [threading.Thread(target=post_large) for _ in range(5)]
    for thread in threads:
        thread.start()
    try:
        assert entered.wait(60), f"no request reached {stage}"
        health = httpx.get(served_tiny.url.removesuffix("/v1") + "/health", timeout=30)
        finished.append(("health", health.status_code))
        models = httpx.get(served_tiny.url + "/models", headers=headers, timeout=30)
        finished.append(("models", models.status_code))
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=120)
    assert finished[:2] == [("health", 200), ("models", 200)]
    assert [entry[:2] for entry in finished[2:]] == [("large", 400)] * 5
    assert all("exceeds the context" in entry[2] for entry in finished[2:]), finished


# --------------------------------------------------------------------------- Host, Origin, Content-Type
@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """A scripted model served with no API key (the case the issue found a web page could drive), with the
    extra host name 'gpu-box' and the origin http://localhost:3000 allowed; yields (base URL, port)."""
    script = tmp_path_factory.mktemp("scripted") / "replies.json"
    script.write_text('["ok"]')
    clients = ClientCheck(["gpu-box"], [ALLOWED_ORIGIN])
    with uvicorn_server(build_app(load_model(f"scripted:{script}"), "s", clients=clients)) as url:
        yield url.removesuffix("/v1"), int(url.rsplit(":", 1)[1].removesuffix("/v1"))


def send(server, method: str, path: str, headers: dict, content: bytes | None = None) -> httpx.Response:
    return httpx.request(method, server[0] + path, headers=headers, content=content, timeout=30)


def chat(server, **headers) -> httpx.Response:
    return send(server, "POST", "/v1/chat/completions", {"Content-Type": "application/json", **headers}, CHAT)


def assert_refused(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"], error


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "localhost:{port}", "LocalHost:80",
                                  "localhost.", "[::1]", "[::1]:{port}", "gpu-box", "gpu-box:8443"])
def test_its_own_names_are_answered(open_server, host):
    host = host.format(port=open_server[1])
    assert send(open_server, "GET", "/health", {"Host": host}).json() == {"status": "ok"}
    response = chat(open_server, Host=host)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "ok"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost.evil.example", "gpu-box.evil.example", "127.0.0.2", "[::2]:{port}",
                                  "user@localhost", "local host", ""])
def test_other_hosts_are_refused(open_server, host):
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, so the request arrives with that name as Host."""
    host = host.format(port=open_server[1])
    for response in (send(open_server, "GET", "/health", {"Host": host}),
                     send(open_server, "GET", "/v1/models", {"Host": host}), chat(open_server, Host=host)):
        assert_refused(response, 421, "--allowed-host")


def test_cross_origin_requests_are_refused(open_server):
    port = open_server[1]
    # the request: a page's "simple" text/plain POST, which needs no CORS preflight
    simple = send(open_server, "POST", "/v1/chat/completions",
                  {"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"}, CHAT)
    assert_refused(simple, 403, "cross-origin request from 'http://evil.example'")
    for origin in ("http://evil.example", f"http://localhost:{port}.evil.example", "null",
                   f"http://localhost:{port + 1}", f"ftp://127.0.0.1:{port}", "http://localhost:3000/path"):
        assert_refused(chat(open_server, Origin=origin), 403, "--allowed-origin")
        assert_refused(send(open_server, "GET", "/health", {"Origin": origin}), 403, "cross-origin")
    preflight = send(open_server, "OPTIONS", "/v1/chat/completions",
                     {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert_refused(preflight, 403, "cross-origin")


def test_same_origin_no_origin_and_allowed_origins_are_answered(open_server):
    port = open_server[1]
    for headers in ({}, {"Origin": f"http://127.0.0.1:{port}"},
                    {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
                    {"Host": "gpu-box", "Origin": "https://gpu-box"}):
        assert chat(open_server, **headers).status_code == 200, headers
    allowed = chat(open_server, Origin=ALLOWED_ORIGIN)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    preflight = send(open_server, "OPTIONS", "/v1/chat/completions",
                     {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
                      "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/jsonp"])
def test_posts_that_are_not_json_are_refused(open_server, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    assert_refused(send(open_server, "POST", "/v1/chat/completions", headers, CHAT), 415, "application/json")


def test_json_content_types_are_answered(open_server):
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        response = send(open_server, "POST", "/v1/chat/completions", {"Content-Type": content_type}, CHAT)
        assert response.status_code == 200, (content_type, response.text)


def test_client_check_values_are_validated():
    assert ClientCheck(["GPU-Box:8000", "::1", "10.0.0.5"]).allowed_hosts == {"gpu-box", "[::1]", "10.0.0.5"}
    assert ClientCheck(allowed_origins=["HTTP://LocalHost:3000/"]).allowed_origins == {"http://localhost:3000"}
    for bad in ("http://gpu-box", "gpu box", "a/b", ""):
        with pytest.raises(UserError, match="--allowed-host takes a host name"):
            ClientCheck([bad])
    for bad in ("localhost:3000", "http://localhost:3000/app", "*", "file:///tmp"):
        with pytest.raises(UserError, match="--allowed-origin takes a web origin"):
            ClientCheck(allowed_origins=[bad])


def test_the_address_a_connection_arrived_on_is_accepted():
    """A server bound to 0.0.0.0 is reached by this machine's addresses: the one the connection arrived on is
    accepted as Host (an IPv4 client of a dual-stack socket shows it IPv4-mapped), others are not."""
    check = ClientCheck()
    assert check.refusal("10.0.0.5:8000", None, "10.0.0.5") is None
    assert check.refusal("10.0.0.5", None, "::ffff:10.0.0.5") is None
    assert check.refusal("[fe80::1]:8000", None, "fe80::1") is None
    assert check.refusal("10.0.0.6:8000", None, "10.0.0.5").status == 421
    assert check.refusal(None, None, "10.0.0.5") is None  # HTTP/1.0 clients may send no Host; browsers always do
