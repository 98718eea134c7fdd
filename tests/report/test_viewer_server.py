"""`userloop view`'s server under hostile clients: the Host check (DNS rebinding) and the Origin check."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.local_http import ClientCheck
from userloop.report.viewer_index import load_index
from userloop.report.viewer_server import make_server


@pytest.fixture(scope="module")
def viewer(tmp_path_factory) -> int:
    """A viewer of one conversation that also answers the host name 'viewer-box'; yields its port."""
    chats = tmp_path_factory.mktemp("viewer-clients") / "chats.jsonl"
    chats.write_text(json.dumps({"id": "c1", "messages": [{"role": "user", "content": "hi"},
                                                          {"role": "assistant", "content": "hello"}]}) + "\n")
    server = make_server(load_index([chats]), 0, ClientCheck(["viewer-box"]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def get(port: int, path: str, **headers: str) -> tuple[int, dict]:
    """``GET path`` with exactly these headers (``Host`` as given, not derived from the address)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, (json.loads(body) if response.getheader("Content-Type") == "application/json" else {})
    finally:
        connection.close()


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "LOCALHOST", "[::1]:{port}",
                                  "viewer-box", "viewer-box:8080"])
def test_its_own_names_are_answered(viewer, host):
    status, overview = get(viewer, "/api/overview", Host=host.format(port=viewer))
    assert status == 200 and overview["conversations"] == 1
    assert get(viewer, "/", Host=host.format(port=viewer))[0] == 200


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1.evil.example",
                                  "localhost.evil.example:{port}", "viewer-box.evil.example", "0.0.0.0:{port}"])
def test_other_hosts_are_refused(viewer, host):
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, so the request arrives with that name as Host."""
    for path in ("/", "/api/overview", "/api/conversations?q=hi"):
        status, body = get(viewer, path, Host=host.format(port=viewer))
        assert status == 421 and "--allowed-host" in body["error"], (path, body)


def test_cross_origin_requests_are_refused_and_same_origin_answered(viewer):
    for origin in ("http://evil.example", "null", f"http://localhost:{viewer + 1}",
                   f"http://127.0.0.1:{viewer}.evil.example"):
        status, body = get(viewer, "/api/overview", Host=f"127.0.0.1:{viewer}", Origin=origin)
        assert status == 403 and f"cross-origin request from {origin!r}" in body["error"]
    for host, origin in ((f"127.0.0.1:{viewer}", f"http://127.0.0.1:{viewer}"),
                         (f"localhost:{viewer}", f"http://localhost:{viewer}"), ("viewer-box", "https://viewer-box")):
        assert get(viewer, "/api/overview", Host=host, Origin=origin)[0] == 200, (host, origin)
    assert get(viewer, "/api/overview")[0] == 200  # the address as Host, no Origin: not a browser


def test_a_bad_allowed_host_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["view", str(tmp_path), "--allowed-host", "http://box/", "--no-open"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --allowed-host takes a host name or address such as my-gpu-box or " \
                                    "10.0.0.5, got 'http://box/'"
