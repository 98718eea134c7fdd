"""``openai:MODEL@BASE_URL[,BASE_URL...]``: any OpenAI-compatible chat-completions server.

vLLM, SGLang, Ollama, ``userloop serve`` and hosted APIs all speak this protocol. Without ``@BASE_URL``
the model is OpenAI's own (https://api.openai.com/v1); a base URL without a path gets ``/v1``.
Several base URLs spread requests over replicas (data-parallel servers): each request goes to the
replica with the fewest requests in flight, and a retry prefers another replica.

The API key is read from an environment variable (``OPENAI_API_KEY``, or the one named by
``api_key_env``), never from a spec or option, and never printed. Servers that need no key (local
ones) get a placeholder when the variable is unset; OpenAI's own API requires it.

Requests are limited to ``max_concurrency`` in flight. Each gets ``timeout`` seconds; 408, 429, 5xx
answers, timeouts and connection errors are retried up to ``max_retries`` times with exponential
backoff and full jitter (``backoff_base * 2**attempt`` seconds, capped at ``backoff_max``), or after
the server's ``Retry-After`` (seconds or an HTTP date; also ``retry-after-ms``) when it sends one,
capped the same way. The last failure raises :class:`~userloop.models.ModelError` naming the server,
the error and the number of attempts. Other 4xx answers are not retried.
"""

from __future__ import annotations

try:
    import openai
except ImportError:
    from userloop.errors import missing_dependency

    raise missing_dependency("openai", "openai") from None

import asyncio
import email.utils
import os
import random
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from userloop.errors import UserError
from userloop.models.base import (
    Capabilities,
    ChatMessages,
    ChatModel,
    Choice,
    Completion,
    GenerationParams,
    ModelError,
    cut_at_stop,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "EMPTY"
RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx
_TARGET = re.compile(r"^(?P<model>[^@]+?)(?:@(?P<urls>.+))?$")


@dataclass(eq=False)
class _Replica:
    base_url: str
    in_flight: int = 0
    client: openai.AsyncOpenAI | None = None


class OpenAIChatModel(ChatModel):
    """Chat completions from OpenAI-compatible servers, with retries, timeouts and replicas."""

    def __init__(self, target: str, *, api_key_env: str = "OPENAI_API_KEY", max_concurrency: int = 64,
                 timeout: float = 120.0, max_retries: int = 4, backoff_base: float = 0.5, backoff_max: float = 30.0,
                 server_bans: bool = False, extra_body: dict | None = None) -> None:
        self.model_id, base_urls = parse_target(target)
        for name, value, low in (("max_concurrency", max_concurrency, 1), ("max_retries", max_retries, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("timeout", timeout), ("backoff_base", backoff_base), ("backoff_max", backoff_max)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise UserError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if extra_body is not None and not isinstance(extra_body, dict):
            raise UserError(f"extra_body must be a dict of extra request fields, got {type(extra_body).__name__}")
        self.name = f"openai:{self.model_id}@{','.join(base_urls)}"
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or ""
        if not self._api_key and any(urlsplit(url).hostname == "api.openai.com" for url in base_urls):
            raise UserError(f"set the API key in the environment variable {api_key_env} "
                            "(keys are read from the environment, never from the command line)")
        self.max_concurrency, self.timeout, self.max_retries = max_concurrency, float(timeout), max_retries
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.extra_body = dict(extra_body or {})
        # with server_bans the server is trusted to take userloop's ban fields (e.g. `userloop serve`)
        self.supports = Capabilities(banned_tokens=server_bans, banned_first_tokens=server_bans, logit_bias=True)
        self._replicas = [_Replica(url) for url in base_urls]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams) -> list[Completion]:
        self._bind_to_running_loop()
        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the other requests
                tasks = [group.create_task(self._complete(messages, params)) for messages in conversations]
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None
        return [task.result() for task in tasks]

    async def aclose(self) -> None:
        for replica in self._replicas:
            client, replica.client = replica.client, None
            if client is not None:
                await client.close()
        self._loop = self._slots = None

    # ------------------------------------------------------------------ one request, retried
    async def _complete(self, messages: ChatMessages, params: GenerationParams) -> Completion:
        started = time.perf_counter()
        request = self._request(messages, params)
        previous: _Replica | None = None
        for attempt in range(1, self.max_retries + 2):
            replica = self._pick_replica(avoid=previous)
            replica.in_flight += 1
            try:
                async with self._slots:
                    response = await replica.client.chat.completions.create(**request)
                return self._completion(response, params, started)
            except openai.APIStatusError as err:
                if err.status_code not in RETRIED_STATUSES and err.status_code < 500:
                    raise ModelError(self._rejection(replica, err)) from None
                failure, wait = f"HTTP {err.status_code}", retry_after_seconds(err.response.headers)
            except openai.APITimeoutError:
                failure, wait = f"no answer within {self.timeout:g}s", None
            except openai.APIConnectionError as err:
                failure, wait = f"connection failed ({_cause(err)})", None
            finally:
                replica.in_flight -= 1
            if attempt > self.max_retries:
                break
            previous = replica
            backoff = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
            await asyncio.sleep(min(wait, self.backoff_max) if wait is not None else backoff)
        raise ModelError(f"{self.model_id} at {replica.base_url}: {failure} after {attempt} attempts")

    def _request(self, messages: ChatMessages, params: GenerationParams) -> dict:
        request: dict = {"model": self.model_id, "messages": messages, "max_tokens": params.max_new_tokens}
        for name in ("temperature", "top_p", "seed"):
            if getattr(params, name) is not None:
                request[name] = getattr(params, name)
        if params.stop:
            request["stop"] = list(params.stop)
        if params.n > 1:
            request["n"] = params.n
        if params.logit_bias:
            request["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
        extra = dict(self.extra_body)
        if params.banned_tokens:
            extra["banned_tokens"] = list(params.banned_tokens)
        if params.banned_first_tokens:
            extra["banned_first_tokens"] = list(params.banned_first_tokens)
        if extra:
            request["extra_body"] = extra
        return request

    def _completion(self, response, params: GenerationParams, started: float) -> Completion:
        choices = sorted(response.choices or (), key=lambda c: c.index)
        if len(choices) != params.n:
            raise ModelError(f"{self.model_id}: the server returned {len(choices)} choices for n={params.n}")
        texts, reasons = [], []
        for choice in choices:
            text, stopped = cut_at_stop(choice.message.content or "", params.stop)
            texts.append(text)
            reasons.append("stop" if stopped else (choice.finish_reason or "stop"))
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        counts = _split(completion_tokens, [len(t) for t in texts])
        return Completion(choices=[Choice(t, r, c) for t, r, c in zip(texts, reasons, counts)],
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          seconds=time.perf_counter() - started, model=self.name)

    def _rejection(self, replica: _Replica, err: openai.APIStatusError) -> str:
        body = err.body if isinstance(err.body, dict) else {}
        detail = " ".join(str(body.get("message") or err.message).split())[:300]
        hint = f" (the key is read from ${self.api_key_env})" if err.status_code in (401, 403) else ""
        return f"{self.model_id} at {replica.base_url} answered HTTP {err.status_code}: {detail}{hint}"

    # ------------------------------------------------------------------ replicas and event loops
    def _bind_to_running_loop(self) -> None:
        """Clients and the concurrency limit belong to one event loop; make them for the running one."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop, self._slots = loop, asyncio.Semaphore(self.max_concurrency)
        for replica in self._replicas:
            replica.client = openai.AsyncOpenAI(api_key=self._api_key or PLACEHOLDER_KEY, base_url=replica.base_url,
                                                timeout=self.timeout, max_retries=0)

    def _pick_replica(self, avoid: _Replica | None) -> _Replica:
        candidates = [r for r in self._replicas if r is not avoid] or self._replicas
        fewest = min(r.in_flight for r in candidates)
        return random.choice([r for r in candidates if r.in_flight == fewest])


def parse_target(target: str) -> tuple[str, list[str]]:
    """``MODEL[@URL[,URL...]]`` -> (model, base URLs); a malformed URL raises :class:`UserError`."""
    match = _TARGET.match(target)
    if match is None or not match["model"].strip():
        raise UserError(f"openai: spec {target!r} names no model: expected openai:MODEL[@BASE_URL[,BASE_URL...]]")
    urls = []
    for url in (match["urls"] or OPENAI_BASE_URL).split(","):
        url = url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(f"openai: base URL {url!r} must look like http://HOST:PORT/v1")
        urls.append(url if parts.path else url + "/v1")
    return match["model"].strip(), urls


def retry_after_seconds(headers) -> float | None:
    """Seconds the server asks to wait (``retry-after-ms``, ``Retry-After`` seconds or HTTP date), if any."""
    milliseconds = headers.get("retry-after-ms")
    value = headers.get("retry-after")
    try:
        if milliseconds is not None:
            return max(0.0, float(milliseconds) / 1000)
        if value is None:
            return None
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _split(total: int, weights: list[int]) -> list[int]:
    """``total`` tokens shared out in proportion to ``weights`` (servers report one total for n samples)."""
    if not any(weights):
        weights = [1] * len(weights)
    shares = [total * weight // sum(weights) for weight in weights]
    shares[-1] += total - sum(shares)
    return shares


def _cause(err: BaseException) -> str:
    cause = err.__cause__ or err.__context__
    return type(cause).__name__ if cause is not None else "no connection"
