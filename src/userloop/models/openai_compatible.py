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
the error and the number of attempts. Other 4xx answers are not retried. ``timeout`` and
``max_retries`` default to :func:`~userloop.models.registry.request_limits` (``$USERLOOP_TIMEOUT``,
``$USERLOOP_RETRIES``), else 120 s and 4.

Every successful (2xx) answer is checked by :func:`parse_reply`, the one place that reads a reply
body: anything but a chat completion with ``n`` choices that each carry text (a body that is not
JSON, a JSON array, an ``{"error": ...}`` object, a choice without ``message``, ``"content": null``)
raises ``ModelError(model, server, what is wrong)`` at once, without retrying.

Given ``tools``, the request carries them (``"tools": [...]``) and each choice's ``message.tool_calls`` become
:attr:`Choice.tool_calls <userloop.models.Choice>` (``"content": null`` is then empty text). A call whose
``arguments`` are not a JSON object is kept with its text in :attr:`ToolCall.raw
<userloop.models.tools.ToolCall>` for the caller to answer with an error; a ``tool_calls`` field that is not a
list of ``{"id", "function": {"name", "arguments"}}`` objects is a malformed reply like the others.

A ``userloop serve --simulator`` server is recognised by its ``/v1/models`` entry
(:meth:`OpenAIChatModel.simulator_settings`, asked once); its replies' guardrail events become
:attr:`Choice.events <userloop.models.Choice>` and its ``"end_conversation"`` finish reason is kept.
"""

from __future__ import annotations

try:
    import openai
except ImportError:
    from userloop.errors import missing_dependency

    raise missing_dependency("openai", "openai") from None

import asyncio
import email.utils
import json
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from userloop.errors import UserError
from userloop.models.base import (
    CONTEXT_LENGTH_CODE,
    REQUEST_RETRIES,
    REQUEST_TIMEOUT_S,
    SIMULATOR_FIELD,
    SIMULATOR_KIND,
    Capabilities,
    ChatMessages,
    ChatModel,
    Choice,
    Completion,
    ContextLengthError,
    GenerationParams,
    ModelError,
    checked_retries,
    checked_timeout,
    cut_at_stop,
)
from userloop.models.tools import ToolCall

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
                 timeout: float = REQUEST_TIMEOUT_S, max_retries: int = REQUEST_RETRIES, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, server_bans: bool = False, extra_body: dict | None = None) -> None:
        self.model_id, base_urls = parse_target(target)
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise UserError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        timeout, max_retries = checked_timeout(timeout), checked_retries(max_retries)
        for name, value in (("backoff_base", backoff_base), ("backoff_max", backoff_max)):
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
        self.supports = Capabilities(banned_tokens=server_bans, banned_first_tokens=server_bans, logit_bias=True,
                                     tools=True)
        self._replicas = [_Replica(url) for url in base_urls]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._asking_settings: asyncio.Lock | None = None
        self._settings: tuple[Mapping | None] | None = None  # (simulator settings,) once a server answered

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams,
                         tools: list[dict] | None = None) -> list[Completion]:
        self._bind_to_running_loop()
        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the other requests
                tasks = [group.create_task(self._complete(messages, params, tools)) for messages in conversations]
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
    async def _complete(self, messages: ChatMessages, params: GenerationParams, tools: list[dict] | None) -> Completion:
        started = time.perf_counter()
        request = self._request(messages, params, tools)
        previous: _Replica | None = None
        for attempt in range(1, self.max_retries + 2):
            replica = self._pick_replica(avoid=previous)
            replica.in_flight += 1
            try:
                async with self._slots, asyncio.timeout(self.timeout):  # the whole answer, however it trickles in
                    response = await replica.client.chat.completions.with_raw_response.create(**request)
            except openai.APIStatusError as err:
                if err.status_code not in RETRIED_STATUSES and err.status_code < 500:
                    if context_overflow(err):
                        raise ContextLengthError(f"{self.model_id} at {replica.base_url}: "
                                                 f"{self._rejection(err)}") from None
                    raise self._error(replica, self._rejection(err)) from None
                failure, wait = f"HTTP {err.status_code}", retry_after_seconds(err.response.headers)
            except (openai.APITimeoutError, TimeoutError):
                failure, wait = f"no answer within {self.timeout:g}s", None
            except openai.APIConnectionError as err:
                failure, wait = f"connection failed ({_cause(err)})", None
            else:
                return self._completion(replica, response.content, params, started)
            finally:
                replica.in_flight -= 1
            if attempt > self.max_retries:
                break
            previous = replica
            backoff = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
            await asyncio.sleep(min(wait, self.backoff_max) if wait is not None else backoff)
        raise self._error(replica, f"{failure} after {attempt} attempt{'s' if attempt > 1 else ''}")

    def _request(self, messages: ChatMessages, params: GenerationParams, tools: list[dict] | None) -> dict:
        request: dict = {"model": self.model_id, "messages": messages, "max_tokens": params.max_new_tokens}
        if tools:
            request["tools"] = tools
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

    def _completion(self, replica: _Replica, body: bytes, params: GenerationParams, started: float) -> Completion:
        try:
            reply = parse_reply(body, params.n)
        except InvalidReply as err:
            raise self._error(replica, str(err)) from None
        texts, reasons = [], []
        for text, reason in zip(reply.texts, reply.finish_reasons):
            text, stopped = cut_at_stop(text, params.stop)
            texts.append(text)
            reasons.append("stop" if stopped else reason)
        counts = _split(reply.completion_tokens, [len(t) for t in texts])
        choices = [Choice(text, reason, count, reply.events if i == 0 else (), calls)
                   for i, (text, reason, count, calls) in enumerate(zip(texts, reasons, counts, reply.tool_calls))]
        return Completion(choices=choices,
                          prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                          seconds=time.perf_counter() - started, model=self.name)

    def _rejection(self, err: openai.APIStatusError) -> str:
        body = err.body if isinstance(err.body, dict) else {}
        detail = " ".join(str(body.get("message") or err.message).split())[:300]
        hint = f" (the key is read from ${self.api_key_env})" if err.status_code in (401, 403) else ""
        return f"answered HTTP {err.status_code}: {detail}{hint}"

    def _error(self, replica: _Replica, problem: str) -> ModelError:
        """The :class:`ModelError` for ``problem`` at ``replica`` (the API key, should a server echo it, masked)."""
        if self._api_key:
            problem = problem.replace(self._api_key, "***")
        return ModelError(self.model_id, replica.base_url, problem)

    # ------------------------------------------------------------------ replicas and event loops
    def _bind_to_running_loop(self) -> None:
        """Clients and the concurrency limit belong to one event loop; make them for the running one."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop, self._slots = loop, asyncio.Semaphore(self.max_concurrency)
        self._asking_settings = asyncio.Lock()
        for replica in self._replicas:
            replica.client = openai.AsyncOpenAI(api_key=self._api_key or PLACEHOLDER_KEY, base_url=replica.base_url,
                                                timeout=self.timeout, max_retries=0)

    async def simulator_settings(self) -> Mapping | None:
        """The settings a ``userloop serve --simulator`` server lists for this model in ``/v1/models`` (asked
        once); None for any other server. An unreachable server is asked again next time (the generation
        call reports the failure)."""
        self._bind_to_running_loop()
        async with self._asking_settings:
            if self._settings is None:
                replica = self._replicas[0]
                try:
                    async with asyncio.timeout(self.timeout):
                        response = await replica.client.models.with_raw_response.list()
                except openai.APIStatusError:  # no model list here: not a simulator
                    self._settings = (None,)
                except (openai.APIConnectionError, openai.APITimeoutError, TimeoutError):
                    return None
                else:
                    self._settings = (listed_simulator(response.content, self.model_id),)
        return self._settings[0]

    def _pick_replica(self, avoid: _Replica | None) -> _Replica:
        candidates = [r for r in self._replicas if r is not avoid] or self._replicas
        fewest = min(r.in_flight for r in candidates)
        return random.choice([r for r in candidates if r.in_flight == fewest])


class InvalidReply(ValueError):
    """A 2xx answer whose body is not the chat completion the API promises (the message says what is wrong)."""


@dataclass(frozen=True)
class Reply:
    """A checked chat-completion body: each choice's text, finish reason and tool calls in index order, and
    token counts."""

    texts: list[str]
    finish_reasons: list[str]
    tool_calls: list[tuple[ToolCall, ...]]  # each choice's calls (none unless the request had tools)
    prompt_tokens: int
    completion_tokens: int
    events: tuple[Mapping[str, str], ...] = ()  # a user-simulator server's guardrail events (its 'userloop' field)


def parse_reply(body: bytes, n: int) -> Reply:
    """The chat completion with ``n`` choices in a 2xx answer's ``body``; anything else raises
    :class:`InvalidReply` saying what is wrong. The only place the provider reads a reply."""
    try:
        data = json.loads(body)
    except ValueError:  # also bytes that are not UTF-8
        raise InvalidReply(f"the reply is not JSON: {_excerpt(body)}") from None
    if not isinstance(data, dict):
        raise InvalidReply(f"the reply is a JSON {type(data).__name__}, not a chat completion object: {_excerpt(body)}")
    if data.get("error"):
        error = data["error"]
        message = " ".join(str(error.get("message") if isinstance(error, dict) else error).split())
        raise InvalidReply(f"the server answered with an error instead of a completion: {message[:300]}")
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise InvalidReply(f"the reply has no 'choices' list: {_excerpt(body)}")
    if len(choices) != n:
        raise InvalidReply(f"the reply has {len(choices)} choices for n={n}")
    by_index: dict[int, tuple[str, str, tuple[ToolCall, ...]]] = {}
    for position, choice in enumerate(choices):
        where = f"choice {position} of the reply"
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise InvalidReply(f"{where} has no 'message' object: {_excerpt(json.dumps(choice))}")
        content, reason = choice["message"].get("content"), choice.get("finish_reason") or "stop"
        calls = _tool_calls(choice["message"].get("tool_calls"), where)
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise InvalidReply(f"{where} has no text: its content is {json.dumps(content)[:60]} "
                               f"(finish_reason {json.dumps(choice.get('finish_reason'))[:40]})")
        if not isinstance(reason, str):
            raise InvalidReply(f"{where} has finish_reason {json.dumps(reason)[:40]}, not a string")
        index = choice.get("index", position)
        if isinstance(index, bool) or index not in range(n) or index in by_index:
            raise InvalidReply(f"{where} has index {json.dumps(index)[:40]}: expected distinct indexes 0..{n - 1}")
        by_index[index] = (content, reason, calls)
    usage = data.get("usage") or {}
    tokens = [usage.get(name) or 0 for name in ("prompt_tokens", "completion_tokens")] if isinstance(usage, dict) else []
    if len(tokens) != 2 or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
        raise InvalidReply(f"the reply's usage is not token counts: {_excerpt(json.dumps(usage))}")
    ordered = [by_index[index] for index in range(n)]
    return Reply([text for text, _, _ in ordered], [reason for _, reason, _ in ordered],
                 [calls for _, _, calls in ordered], *tokens, _simulator_events(data.get(SIMULATOR_FIELD)))


def _tool_calls(listed, where: str) -> tuple[ToolCall, ...]:
    """A choice's ``message.tool_calls`` (absent or null: none). Arguments that are not a JSON object are kept
    as the call's ``raw`` text; a list that is not calls raises :class:`InvalidReply`."""
    if listed is None:
        return ()
    if not isinstance(listed, list):
        raise InvalidReply(f"{where} has 'tool_calls' that are not a list: {_excerpt(json.dumps(listed))}")
    calls = []
    for number, call in enumerate(listed):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidReply(f"{where} has a tool call without a function name: {_excerpt(json.dumps(call))}")
        calls.append(ToolCall.parsed(str(call.get("id") or f"call_{number}"), function["name"],
                                     function.get("arguments")))
    return tuple(calls)


def _simulator_events(extension) -> tuple[Mapping[str, str], ...]:
    """The guardrail events in a user-simulator server's ``userloop`` reply field (none without the field)."""
    if extension is None:
        return ()
    events = extension.get("events") if isinstance(extension, dict) else None
    if not isinstance(events, list) or not all(
            isinstance(event, dict) and all(isinstance(value, str) for value in event.values()) for event in events):
        raise InvalidReply(f"the reply's {SIMULATOR_FIELD!r} field is not a user simulator's "
                           f"{{'ended', 'events'}}: {_excerpt(json.dumps(extension))}")
    return tuple(events)


def listed_simulator(body: bytes, model_id: str) -> Mapping | None:
    """The ``userloop`` settings of ``model_id`` in a ``/v1/models`` body when a user-simulator server lists
    it (``"kind": "user_simulator"``); None for any other list, or a body that is not one."""
    try:
        entries = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    for entry in entries if isinstance(entries, list) else ():
        settings = entry.get(SIMULATOR_FIELD) if isinstance(entry, dict) and entry.get("id") == model_id else None
        if isinstance(settings, dict) and settings.get("kind") == SIMULATOR_KIND:
            return settings
    return None


def _excerpt(body: bytes | str) -> str:
    """The start of a body on one line, for an error message."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return (text[:120] + "...") if len(text) > 120 else (text or "(empty body)")


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


_CONTEXT_OVERFLOW = re.compile(r"context (?:length|window|size)|maximum context|too long to fit|longer than the "
                               r"model|exceeds the model", re.IGNORECASE)


def context_overflow(err: openai.APIStatusError) -> bool:
    """Whether a refused request was too long for the model's context: OpenAI's code ``context_length_exceeded``,
    or a 400/413 whose message says so as vLLM ("maximum context length is N tokens"), SGLang ("longer than the
    model's context length") and llama.cpp ("exceeds the available context size") word it."""
    if getattr(err, "code", None) == CONTEXT_LENGTH_CODE:
        return True
    body = err.body if isinstance(err.body, dict) else {}
    return err.status_code in (400, 413) and bool(_CONTEXT_OVERFLOW.search(str(body.get("message") or err.message)))
