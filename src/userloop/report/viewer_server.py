"""``userloop view``: a local web page to browse conversations, served on 127.0.0.1 by the standard library.

Three layers, as vLLM's OpenAI server splits protocol, serving and routing:

* **protocol**: :func:`parse_list_request` turns a query string into :class:`~.viewer_index.Filters`
  and a page number, or a :class:`BadRequest` saying which parameter is wrong;
* **serving**: :class:`ViewerApp` answers each endpoint from the :class:`~.viewer_index.ViewerIndex`
  (JSON) or with the page;
* **routing**: :data:`ROUTES` maps paths to :class:`ViewerApp` methods, and the ``http.server`` handler
  only dispatches and writes responses.

Endpoints (GET, JSON): ``/api/overview`` (totals, sources, what could not be read),
``/api/conversations?source=&kind=&scenario=&outcome=&ended=&user=&q=&page=`` (one page of 50 and
the facet counts), ``/api/conversations/KEY`` (one conversation with its inline events) and
``/api/conversations/KEY/side-by-side`` (real and simulated conversations with its intent). ``/`` is
the page (``viewer.html``: no external resource; every text is set as text, never parsed as HTML).
Requests whose ``Host`` is not this server's (DNS rebinding) or that come from another site's page
(``Origin``) are refused first (:class:`~userloop.local_http.ClientCheck`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from userloop.errors import UserError
from userloop.local_http import ClientCheck
from userloop.report.viewer_index import FACETS, Filters, ViewerIndex, load_index

HOST = "127.0.0.1"
PAGE = Path(__file__).with_name("viewer.html")
# The page loads nothing from elsewhere: the browser is told so too.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# ---------------------------------------------------------------------- protocol
NONE_VALUE = "(none)"


class BadRequest(Exception):
    """A request the API cannot answer, with the reason (sent as HTTP 400)."""


def parse_list_request(query: str) -> tuple[Filters, int]:
    """The filters and page of ``/api/conversations?...``: one value per facet name, ``q`` (words that must
    all appear) and ``page`` (from 1). Unknown parameters, repeated ones and a bad page are refused."""
    params = parse_qs(query, keep_blank_values=True)
    allowed = {*FACETS, "q", "page"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r} (parameters: {', '.join(sorted(allowed))})")
    repeated = sorted(name for name, values in params.items() if len(values) > 1)
    if repeated:
        raise BadRequest(f"parameter {repeated[0]!r} given more than once")
    values = {name: values[0] for name, values in params.items()}
    page_text = values.pop("page", "1")
    if not page_text.isdigit() or int(page_text) < 1:
        raise BadRequest(f"page must be a whole number >= 1, got {page_text!r}")
    query_text = values.pop("q", "")
    # an empty facet value means "any"; the empty value itself (e.g. no scenario) is asked for as "(none)"
    facets = {name: ("" if value == NONE_VALUE else value) for name, value in values.items() if value != ""}
    return Filters(**facets, query=query_text), int(page_text)


# ---------------------------------------------------------------------- serving
@dataclass
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"


def _json(value: Any, status: HTTPStatus = HTTPStatus.OK) -> Response:
    import orjson

    return Response(status, orjson.dumps(value))


class ViewerApp:
    """The endpoints, answered from one :class:`ViewerIndex` (read-only, so safe across request threads)."""

    def __init__(self, index: ViewerIndex) -> None:
        self.index = index

    def page(self, query: str) -> Response:
        return Response(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")

    def overview(self, query: str) -> Response:
        return _json(self.index.overview())

    def conversations(self, query: str) -> Response:
        filters, page = parse_list_request(query)
        try:
            return _json(self.index.search(filters, page))
        except UserError as err:
            raise BadRequest(str(err)) from None

    def conversation(self, query: str, key: str) -> Response:
        return _json(self.index.conversation(key))

    def side_by_side(self, query: str, key: str) -> Response:
        return _json(self.index.side_by_side(key))


# ---------------------------------------------------------------------- routing
ROUTES: list[tuple[re.Pattern[str], Callable[..., Response]]] = [
    (re.compile(r"/"), ViewerApp.page),
    (re.compile(r"/api/overview"), ViewerApp.overview),
    (re.compile(r"/api/conversations"), ViewerApp.conversations),
    (re.compile(r"/api/conversations/(?P<key>\d+)"), ViewerApp.conversation),
    (re.compile(r"/api/conversations/(?P<key>\d+)/side-by-side"), ViewerApp.side_by_side),
]


def route(app: ViewerApp, target: str) -> Response:
    """The response to ``GET target``: 404 for an unknown path or conversation, 400 for a bad request."""
    parts = urlsplit(target)
    for pattern, endpoint in ROUTES:
        match = pattern.fullmatch(parts.path)
        if match:
            try:
                return endpoint(app, parts.query, **match.groupdict())
            except BadRequest as err:
                return _json({"error": str(err)}, HTTPStatus.BAD_REQUEST)
            except KeyError as err:
                return _json({"error": f"no conversation {err.args[0]}"}, HTTPStatus.NOT_FOUND)
    return _json({"error": f"no such page: {parts.path}"}, HTTPStatus.NOT_FOUND)


class _Handler(BaseHTTPRequestHandler):
    app: ViewerApp  # set on the subclass made by make_server, with clients
    clients: ClientCheck

    def do_GET(self) -> None:
        refusal = self.clients.refusal(self.headers.get("Host"), self.headers.get("Origin"),
                                       self.connection.getsockname()[0])
        if refusal is None:
            response = route(self.app, self.path)
        else:
            response = _json({"error": refusal.message}, HTTPStatus(refusal.status))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal shows the URL, not a line per request."""


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {port}")


def make_server(index: ViewerIndex, port: int = 0, clients: ClientCheck | None = None) -> ThreadingHTTPServer:
    """A server for ``index`` on 127.0.0.1:``port`` (0: any free port; see ``server.server_port``);
    ``clients`` adds ``Host`` names it answers besides the loopback ones. A port out of range or already
    in use is a :class:`UserError`."""
    check_port(port)
    handler = type("ViewerHandler", (_Handler,), {"app": ViewerApp(index), "clients": clients or ClientCheck()})
    try:
        server = ThreadingHTTPServer((HOST, port), handler)
    except OSError as err:
        raise UserError(f"cannot listen on {HOST}:{port}: {err.strerror or err} "
                        "(choose another --port, or --port 0 for any free one)") from None
    server.daemon_threads = True
    return server


def view(paths: Iterable[str | Path], port: int = 8765, open_browser: bool = True,
         on_ready: Callable[[str, ViewerIndex], None] | None = None,
         on_progress: Callable[[int], None] | None = None, allowed_hosts: Iterable[str] = ()) -> None:
    """Index ``paths`` and serve the viewer until Ctrl-C (``KeyboardInterrupt`` propagates after the server
    closes). ``on_ready(url, index)`` is called once it listens; ``open_browser`` opens the URL;
    ``allowed_hosts`` are ``Host`` names answered besides the loopback ones."""
    check_port(port)  # before the paths are read, which may take a while
    clients = ClientCheck(allowed_hosts)
    index = load_index(paths, on_progress)
    server = make_server(index, port, clients)
    url = f"http://{HOST}:{server.server_port}/"
    try:
        if on_ready is not None:
            on_ready(url, index)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        server.serve_forever()
    finally:
        server.server_close()
