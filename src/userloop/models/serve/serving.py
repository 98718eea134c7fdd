"""What the server does for each endpoint, independent of the web framework.

Requests are turned into :class:`~userloop.models.GenerationParams` and handed to the model; an
``hf:`` model batches concurrent requests together. Streaming responses are produced after the
whole completion is generated (one role, content and finish chunk per choice): the batching
provider generates whole completions, so clients get the OpenAI stream format, not earlier tokens.
"""

from __future__ import annotations

import hmac
import logging

from pydantic import BaseModel, ValidationError

from userloop.errors import UserError
from userloop.models.base import CONTEXT_LENGTH_CODE, ChatModel, ContextLengthError, GenerationParams, ModelError
from userloop.models.serve.protocol import (
    ChatCompletionRequest,
    ServingError,
    chat_completion,
    chat_completion_chunks,
    model_list,
)

logger = logging.getLogger("userloop.serve")


class ChatServing:
    """Chat completions, model list and authorisation for one served model."""

    request_type: type[BaseModel] = ChatCompletionRequest  # what :meth:`parse` validates a body as

    def __init__(self, model: ChatModel, model_name: str, api_key: str | None = None,
                 default_max_tokens: int = 256) -> None:
        self.model = model
        self.model_name = model_name
        self.api_key = api_key
        self.default_max_tokens = default_max_tokens

    def authorize(self, authorization: str | None) -> None:
        """Check ``Authorization: Bearer KEY`` when the server has a key."""
        if self.api_key is None:
            return
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise ServingError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "invalid_api_key")

    def models(self) -> dict:
        return model_list(self.model_name)

    def parse(self, body: bytes):
        """The body as a :attr:`request_type` naming the served model, or a :class:`ServingError`."""
        try:
            request = self.request_type.model_validate_json(body)
        except ValidationError as err:
            raise ServingError(400, validation_message(err)) from None
        if request.model != self.model_name:
            raise ServingError(404, f"model {request.model!r} is not served here; this server serves "
                                    f"{self.model_name!r}", "model_not_found")
        return request

    async def chat_completion(self, request: ChatCompletionRequest) -> dict | list[dict]:
        """The response body, or the list of stream chunks when ``request.stream``."""
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        try:
            params = generation_params(request, self.default_max_tokens)
            [completion] = await self.model.agenerate([messages], params)
        except ModelError as err:
            raise ServingError(502, str(err)) from None
        except ContextLengthError as err:  # OpenAI's code for it, which clients (ours included) recognise
            raise ServingError(400, str(err), CONTEXT_LENGTH_CODE) from None
        except UserError as err:
            raise ServingError(400, str(err)) from None
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return chat_completion_chunks(completion, self.model_name, include_usage)
        return chat_completion(completion, self.model_name)


def generation_params(request: ChatCompletionRequest, default_max_tokens: int) -> GenerationParams:
    """The request's sampling fields as :class:`GenerationParams` (a bad value raises :class:`UserError`)."""
    stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    return GenerationParams(
        max_new_tokens=request.max_completion_tokens or request.max_tokens or default_max_tokens,
        temperature=request.temperature, top_p=request.top_p, stop=tuple(stop), seed=request.seed, n=request.n,
        banned_tokens=tuple(request.banned_tokens or ()), banned_first_tokens=tuple(request.banned_first_tokens or ()),
        logit_bias={int(token): bias for token, bias in (request.logit_bias or {}).items()},
    )


def validation_message(err: ValidationError) -> str:
    """The first validation error as one line, e.g. ``messages.0.content: Field required``."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
