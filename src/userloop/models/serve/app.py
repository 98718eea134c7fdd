"""The FastAPI routes (thin: parsing and errors live in serving/protocol) and :func:`serve`."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
except ImportError as err:
    from userloop.errors import missing_dependency

    raise missing_dependency(err.name or "fastapi", "serve") from None

from userloop.errors import UserError
from userloop.models.base import ChatModel
from userloop.models.registry import load_model
from userloop.models.serve.protocol import ServingError, error_body
from userloop.models.serve.serving import ChatServing

logger = logging.getLogger("userloop.serve")

MAX_BODY_BYTES = 8 * 2**20
BODY_TIMEOUT_SECONDS = 30.0


def build_app(model: ChatModel, model_name: str, api_key: str | None = None, *,
              max_body_bytes: int = MAX_BODY_BYTES, body_timeout: float = BODY_TIMEOUT_SECONDS) -> FastAPI:
    """An OpenAI-compatible app serving ``model`` as ``model_name``; ``api_key`` (if any) is required."""
    serving = ChatServing(model, model_name, api_key)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await model.aclose()

    app = FastAPI(title="userloop", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

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
        parsed = serving.parse(await read_body(request, max_body_bytes, body_timeout))
        result = await serving.chat_completion(parsed)
        if parsed.stream:
            return StreamingResponse(server_sent_events(result), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return JSONResponse(result)

    return app


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
          model_name: str | None = None, on_ready=None, **model_options) -> None:
    """Load ``spec`` and serve it until interrupted; ``on_ready(base_url, model_name)`` is called once it listens."""
    with listen(host, port) as sock:  # before loading, so a busy port fails fast
        model = load_model(spec, **model_options)
        model_name = model_name or spec.partition(":")[2]
        server = uvicorn.Server(uvicorn.Config(build_app(model, model_name, api_key), log_level="warning",
                                               timeout_graceful_shutdown=5))
        bound_host, bound_port = sock.getsockname()[:2]
        if on_ready is not None:
            on_ready(f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/v1", model_name)
        server.run(sockets=[sock])
