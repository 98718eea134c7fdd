"""Spec strings (``PREFIX:TARGET``) to :class:`~userloop.models.base.ChatModel` instances.

Each prefix names a provider module that is imported only when a spec asks for it, so a missing
optional dependency of one provider never affects the others.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager

from userloop.errors import UserError
from userloop.models.base import ChatModel, checked_retries, checked_timeout

PROVIDERS: dict[str, tuple[str, str, str]] = {
    # prefix: (module, class, what the target is)
    "hf": ("userloop.models.hf", "HFChatModel", "hf:PATH_OR_HUB_ID"),
    "openai": ("userloop.models.openai_compatible", "OpenAIChatModel", "openai:MODEL[@BASE_URL[,BASE_URL...]]"),
    "vllm": ("userloop.models.vllm", "VLLMChatModel", "vllm:PATH_OR_HUB_ID"),
    "scripted": ("userloop.models.scripted", "ScriptedChatModel", "scripted:FILE.json"),
    "prompted": ("userloop.userlm.prompted", "PromptedUserModel", "prompted:INNER_SPEC, e.g. prompted:hf:PATH"),
}
# Prefixes whose target is another spec: the inner model is loaded (with the options) and wrapped.
WRAPPERS = frozenset({"prompted"})
# The environment variables that set the request limits of models that call servers (see request_limits).
TIMEOUT_ENV, RETRIES_ENV = "USERLOOP_TIMEOUT", "USERLOOP_RETRIES"
_chosen_limits: dict | None = None  # set inside request_limits()


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``PREFIX:TARGET``; an unknown prefix or empty target raises :class:`UserError`."""
    if not isinstance(spec, str):
        raise UserError(f"a model spec must be a string such as 'hf:PATH', got {type(spec).__name__}")
    prefix, sep, target = spec.partition(":")
    known = ", ".join(f"{p}:" for p in PROVIDERS)
    if not sep or prefix not in PROVIDERS:
        raise UserError(f"unknown model spec {spec!r}: it must start with one of {known}")
    if not target.strip():
        raise UserError(f"model spec {spec!r} names no model: expected {PROVIDERS[prefix][2]}")
    return prefix, target.strip()


def load_model(spec: str, **options) -> ChatModel:
    """The model that ``spec`` names, e.g. ``hf:./my-user-lm`` or ``openai:llama@http://127.0.0.1:8000/v1``.

    ``options`` go to the provider (``device=``, ``max_batch_size=`` for ``hf``; ``api_key_env=``,
    ``timeout=`` for ``openai``; see docs/models.md); an option the provider does not take is an error.
    Providers that take ``timeout`` / ``max_retries`` get :func:`current_request_limits` unless ``options`` set them.
    A wrapper (``prompted:INNER_SPEC``) loads its inner spec with the options and wraps that model.
    """
    prefix, target = parse_spec(spec)
    module_name, class_name, _ = PROVIDERS[prefix]
    provider = getattr(importlib.import_module(module_name), class_name)
    if prefix in WRAPPERS:
        return provider(load_model(_inner_spec(prefix, target), **options))
    accepted = [name for name, p in inspect.signature(provider).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"{prefix}: models take no option {unknown[0]!r} (options: {', '.join(accepted) or 'none'})")
    limits = {name: value for name, value in current_request_limits().items() if name in accepted}
    return provider(target, **{**limits, **options})


@contextmanager
def request_limits(timeout: float | None = None, max_retries: int | None = None) -> Iterator[None]:
    """Within the block, :func:`load_model` gives models that call a server (those taking ``timeout`` and
    ``max_retries``: ``openai:``) this timeout in seconds per request and this retry count, unless the call
    sets them. ``None`` keeps ``$USERLOOP_TIMEOUT`` / ``$USERLOOP_RETRIES`` or, without them, the provider's
    defaults. The CLI's ``--timeout`` / ``--retries`` work through this; a bad value raises :class:`UserError`."""
    global _chosen_limits
    chosen = current_request_limits()
    if timeout is not None:
        chosen["timeout"] = checked_timeout(timeout)
    if max_retries is not None:
        chosen["max_retries"] = checked_retries(max_retries)
    previous, _chosen_limits = _chosen_limits, chosen
    try:
        yield
    finally:
        _chosen_limits = previous


def current_request_limits() -> dict:
    """``timeout`` / ``max_retries`` that :func:`load_model` gives server models now (only those set):
    from :func:`request_limits`, else from the environment (a malformed variable raises :class:`UserError`)."""
    if _chosen_limits is not None:
        return dict(_chosen_limits)
    limits = {}
    if os.environ.get(TIMEOUT_ENV, "").strip():
        limits["timeout"] = checked_timeout(_parsed(os.environ[TIMEOUT_ENV], float), TIMEOUT_ENV)
    if os.environ.get(RETRIES_ENV, "").strip():
        limits["max_retries"] = checked_retries(_parsed(os.environ[RETRIES_ENV], int), RETRIES_ENV)
    return limits


def _parsed(text: str, kind: type):
    """``text`` as a ``kind``, or the text itself when it is not one (the check then names it)."""
    try:
        return kind(text.strip())
    except ValueError:
        return text


def _inner_spec(prefix: str, target: str) -> str:
    """The spec a wrapper's target names, checked: a valid spec of a model that is not itself a wrapper."""
    try:
        inner_prefix, _ = parse_spec(target)
    except UserError as err:
        raise UserError(f"{prefix}:{target}: the inner model spec is not valid ({err})") from None
    if inner_prefix in WRAPPERS:
        raise UserError(f"{prefix}:{target}: a {inner_prefix}: model cannot be wrapped again; "
                        f"expected {PROVIDERS[prefix][2]}")
    return target
