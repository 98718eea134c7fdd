"""The FastAPI routes (thin: parsing and errors live in serving/protocol) and :func:`serve`.

Before any route, :class:`LocalClients` refuses requests from web pages (see :mod:`userloop.local_http`:
a ``Host`` that is not this server's, an ``Origin`` not allowed) and POSTs whose body is not declared
JSON (415), which a cross-site form or ``text/plain`` request would be. Request bodies are parsed in a
worker thread, so a large one never holds up the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as err:
    from userloop.errors import missing_dependency

    raise missing_dependency(err.name or "fastapi", "serve") from None

from userloop.errors import UserError
from userloop.local_http import ClientCheck, Refusal
from userloop.models.base import ChatModel
from userloop.models.registry import load_model
from userloop.models.serve.protocol import ServingError, error_body
from userloop.models.serve.serving import ChatServing

logger = logging.getLogger("userloop.serve")

MAX_BODY_BYTES = 8 * 2**20
BODY_TIMEOUT_SECONDS = 30.0


def build_app(model: ChatModel, model_name: str, api_key: str | None = None, *,
              max_body_bytes: int = MAX_BODY_BYTES, body_timeout: float = BODY_TIMEOUT_SECONDS,
              clients: ClientCheck | None = None, serving: ChatServing | None = None) -> FastAPI:
    """An OpenAI-compatible app serving ``model`` as ``model_name``; ``api_key`` (if any) is required.
    ``clients`` adds hosts and browser origins to those answered (loopback names and the connection's own
    address); allowed origins get CORS headers. ``serving`` answers the requests instead of a plain
    :class:`ChatServing` of ``model`` (e.g. a user simulator's, :mod:`~userloop.models.serve.simulator_serving`)."""
    serving = serving or ChatServing(model, model_name, api_key)
    clients = clients or ClientCheck()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await model.aclose()

    app = FastAPI(title="userloop", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if clients.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=sorted(clients.allowed_origins),
                           allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])
    app.add_middleware(LocalClients, clients=clients)  # added last: runs first

    @app.exception_handler(ServingError)
    async def serving_error(_request: Request, err: ServingError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(err.status_code, str(err.detail)), status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(400, str(err.errors()[0].get("msg", "invalid request"))), status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, err: Exception) -> JSONResponse:
        logger.exception("internal error")
        return JSONResponse(error_body(500, f"internal error: {type(err).__name__}"), status_code=500)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        serving.authorize(request.headers.get("authorization"))
        return serving.models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        serving.authorize(request.headers.get("authorization"))
        parsed = await asyncio.to_thread(serving.parse, await read_body(request, max_body_bytes, body_timeout))
        result = await serving.chat_completion(parsed)
        if parsed.stream:
            return StreamingResponse(server_sent_events(result), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return JSONResponse(result)

    return app


class LocalClients:
    """ASGI middleware: answers a refused request (:meth:`ClientCheck.refusal`, or a POST that is not
    ``application/json``: 415) with an OpenAI-style error before any route sees it."""

    def __init__(self, app: ASGIApp, clients: ClientCheck) -> None:
        self.app, self.clients = app, clients

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        response = JSONResponse(error_body(refusal.status, refusal.message), status_code=refusal.status)
        await response(scope, receive, send)

    def refusal(self, scope: Scope) -> Refusal | None:
        headers = Headers(scope=scope)
        local_address = (scope.get("server") or (None,))[0]
        refusal = self.clients.refusal(headers.get("host"), headers.get("origin"), local_address)
        if refusal is None and scope["method"] == "POST":
            content_type = headers.get("content-type", "")
            if content_type.partition(";")[0].strip().lower() != "application/json":
                return Refusal(415, f"the body must be JSON: send 'Content-Type: application/json' "
                                    f"(got {content_type!r})")
        return refusal


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, or a 413 when it is over ``limit`` bytes and a 408 when it stalls."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ServingError(413, f"request body of {int(declared):,} bytes is over the limit of {limit:,}")

    async def read() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ServingError(413, f"request body is over the limit of {limit:,} bytes")
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise ServingError(408, f"request body not received within {timeout:g} seconds") from None


async def server_sent_events(chunks: list[dict]) -> AsyncIterator[str]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port); failure is a :class:`UserError`."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def serve(spec: str, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          model_name: str | None = None, on_ready=None, allowed_hosts: Iterable[str] = (),
          allowed_origins: Iterable[str] = (), serving_for=None, **model_options) -> None:
    """Load ``spec`` and serve it until interrupted; ``on_ready(base_url, model_name)`` is called once it listens.
    ``host`` and ``allowed_hosts`` are the ``Host`` names answered besides the loopback ones; ``allowed_origins``
    the web pages that may call it from a browser. ``serving_for(model, model_name, api_key)``, when given,
    makes the :class:`ChatServing` that answers (``userloop serve --simulator``'s)."""
    with listen(host, port) as sock:  # before loading, so a busy port fails fast
        clients = ClientCheck([host, *allowed_hosts] if host else allowed_hosts, allowed_origins)
        model = load_model(spec, **model_options)
        model_name = model_name or spec.partition(":")[2]
        serving = serving_for(model, model_name, api_key) if serving_for is not None else None
        server = uvicorn.Server(uvicorn.Config(build_app(model, model_name, api_key, clients=clients, serving=serving),
                                               log_level="warning", timeout_graceful_shutdown=5))
        bound_host, bound_port = sock.getsockname()[:2]
        if on_ready is not None:
            on_ready(f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/v1", model_name)
        server.run(sockets=[sock])
