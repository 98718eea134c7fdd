"""Helpers for the model tests: servers on 127.0.0.1 (uvicorn in a thread, a misbehaving HTTP server)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

END_CONVERSATION = "<|endconversation|>"
# 200 answers that are not what the chat-completions API promises: action -> (content type, body).
BROKEN_REPLIES = {
    "malformed-json": ("application/json", b"{'id': 'x', 'choices': []}"),
    "html": ("text/html", b"<!DOCTYPE html>\n<html><body><h1>Welcome to nginx!</h1></body></html>"),
    "json-array": ("application/json", b'[{"index": 0, "message": {"role": "assistant", "content": "hi"}}]'),
    "no-message": ("application/json", b'{"id": "x", "choices": [{"index": 0, "finish_reason": "stop"}]}'),
    "null-content": ("application/json", (b'{"id": "x", "choices": [{"index": 0, "finish_reason": "length", '
                                          b'"message": {"role": "assistant", "content": null}}]}')),
    "error-200": ("application/json", b'{"error": {"message": "upstream model overloaded", "type": "server_error"}}'),
}


@contextmanager
def uvicorn_server(app) -> Iterator[str]:
    """Run an ASGI app on a free 127.0.0.1 port in a thread; yields the /v1 base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Served:
    """A running `userloop serve` app: its base URL, the model object behind it, its key and model id."""

    url: str
    model: object
    api_key: str = "test-key"
    name: str = "tiny"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FaultServer:
    """An HTTP server on 127.0.0.1 that answers chat completions as told, one action per request.

    Actions: ``"ok"``, ``"slow"`` (ok after 0.2 s), an HTTP status such as ``"500"`` or ``"429"`` (with
    ``retry_after`` as its Retry-After header when set), ``"hang"`` (never answers, until the server
    stops), ``"drop"`` (closes the connection without answering), ``"trickle"`` (ok, one byte every
    0.05 s), the broken 200 answers of :data:`BROKEN_REPLIES`, or a dict: that JSON body as a 200 answer.
    When the script runs out, every request gets ``"ok"``. ``max_active`` is the most requests it was answering at once.
    """

    def __init__(self) -> None:
        self.script: list[str | dict] = []
        self.retry_after: str | None = None
        self.requests: list[dict] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.active = self.max_active = 0
        fault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                fault.requests.append({"time": time.monotonic(), "path": self.path, "body": body,
                                       "authorization": self.headers.get("authorization")})
                with fault.lock:
                    action = fault.script.pop(0) if fault.script else "ok"
                    fault.active += 1
                    fault.max_active = max(fault.max_active, fault.active)
                try:
                    self._act(action, body)
                finally:
                    with fault.lock:
                        fault.active -= 1

            def _act(self, action: str | dict, body: dict) -> None:
                if isinstance(action, tuple):  # (status, body)
                    self._send(*action)
                    return
                if isinstance(action, dict):
                    self._send(200, action)
                    return
                if action == "slow":
                    time.sleep(0.2)
                    action = "ok"
                if action == "hang":
                    fault.stopping.wait(60)
                    return
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action in BROKEN_REPLIES:
                    content_type, data = BROKEN_REPLIES[action]
                    self._send_bytes(200, content_type, data)
                    return
                if action == "trickle":
                    self._trickle(json.dumps(_completion(body)).encode())
                    return
                if action == "ok":
                    self._send(200, _completion(body))
                    return
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                self._send(int(action), {"error": {"message": f"scripted {action}", "type": "x"}}, headers)

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                self._send_bytes(status, "application/json", json.dumps(payload).encode(), headers)

            def _trickle(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for i in range(len(data)):
                    if fault.stopping.wait(0.05):
                        return
                    try:
                        self.wfile.write(data[i:i + 1])
                    except OSError:  # the client gave up
                        return

            def _send_bytes(self, status: int, content_type: str, data: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def _completion(body: dict) -> dict:
    """The chat completion a well-behaved server answers: ``fine 0``, ``fine 1``... for ``n`` choices."""
    n = body.get("n", 1)
    choices = [{"index": i, "message": {"role": "assistant", "content": f"fine {i}"}, "finish_reason": "stop"}
               for i in range(n)]
    return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n, "total_tokens": 3 + 2 * n}}
