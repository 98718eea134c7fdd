"""Spec strings (``PREFIX:TARGET``) to :class:`~userloop.models.base.ChatModel` instances, and the objects
that play each model role (:func:`load_role`).

Each prefix names a provider module that is imported only when a spec asks for it, so a missing
optional dependency of one provider never affects the others. A role (scorer, rewriter, judge, ...) is
played by a chat model or by a built-in provider with a name of its own (``testbed:judge``,
``rules:classifier``; docs/models.md, "Model roles").
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from userloop.errors import UserError
from userloop.models.base import ChatModel, checked_retries, checked_timeout

PROVIDERS: dict[str, tuple[str, str, str]] = {
    # prefix: (module, class, what the target is)
    "hf": ("userloop.models.hf", "HFChatModel", "hf:PATH_OR_HUB_ID"),
    "openai": ("userloop.models.openai_compatible", "OpenAIChatModel", "openai:MODEL[@BASE_URL[,BASE_URL...]]"),
    "vllm": ("userloop.models.vllm", "VLLMChatModel", "vllm:PATH_OR_HUB_ID"),
    "scripted": ("userloop.models.scripted", "ScriptedChatModel", "scripted:FILE.json"),
    "mock": ("userloop.models.mock", "MockModel", "mock[:NAME] (replies= a list or a function)"),
    "prompted": ("userloop.userlm.prompted", "PromptedUserModel", "prompted:INNER_SPEC, e.g. prompted:hf:PATH"),
    "testbed": ("userloop.simulate.panel", "testbed_chat_model", "testbed:graded[?KNOB=VALUE&...] (docs/validity.md)"),
}
# Prefixes shared with built-in providers: their chat models are these names only (testbed:graded?..., while
# testbed:judge is a built-in and testbed:nothing an unknown spec).
NAMED_TARGETS = {"testbed": ("graded",)}
# Providers whose spec may be the bare prefix: the target they get then.
DEFAULT_TARGETS = {"mock": "mock"}
# Prefixes whose target is another spec: the inner model is loaded (with the options) and wrapped.
WRAPPERS = frozenset({"prompted"})
# The environment variables that set the request limits of models that call servers (see request_limits).
TIMEOUT_ENV, RETRIES_ENV = "USERLOOP_TIMEOUT", "USERLOOP_RETRIES"
_chosen_limits: dict | None = None  # set inside request_limits()

# The roles a model spec can fill (what each is called in messages); any chat model spec plays any of them.
ROLES = {"user": "simulated user", "assistant": "assistant", "scorer": "scorer", "rewriter": "rewriter",
         "judge": "rewrite judge", "usereval_judge": "UserEval judge", "followup_classifier": "follow-up classifier",
         "persona_model": "persona model", "reply_classifier": "reply classifier"}
# Built-in providers: behaviours that play a role without a chat model, named KIND:WHAT, KIND saying what they
# rest on (testbed: the testbed's truth or scripts, testbed data only; offline: the classifier userloop trains
# offline; rules: hand-written rules; rm: a reward model folder). spec: {role: "module:factory"}. They live in
# higher layers, so this table is the one place that names them and each module is imported by name on first
# use, like an entry point. A factory gets the keyword context of load_role that it names; a spec ending in ":"
# takes a target (rm:PATH), which its factory gets first.
BUILTIN_PROVIDERS: dict[str, dict[str, str]] = {
    "testbed:scorer": {"scorer": "userloop.rlhi.reward_scorers:TestbedScorer.from_data"},
    "testbed:task-scorer": {"scorer": "userloop.rlhi.reward_scorers:TestbedTaskScorer.from_data"},
    "testbed:rewriter": {"rewriter": "userloop.rlhi.rewrites:TestbedRewriter"},
    "testbed:editor": {"rewriter": "userloop.rlhi.rewrites:TestbedEditor"},
    "testbed:corrector": {"rewriter": "userloop.rlhi.rewrites:TestbedCorrector"},
    "testbed:judge": {"judge": "userloop.rlhi.rewrites:ScorerJudge.from_data",
                      "usereval_judge": "userloop.rlhi.pairwise_judges:TestbedJudge.from_data"},
    "offline:classifier": {"followup_classifier": "userloop.rlhi.followup_classifier:loaded_offline"},
    "offline:personas": {"persona_model": "userloop.rlhi.personas:OfflinePersonas"},
    "rules:classifier": {"reply_classifier": "userloop.simulate.reply_kinds:RuleReplyClassifier"},
    "testbed:users": {"user": "userloop.simulate.testbed_users:TestbedUsers"},
    "testbed:assistant": {"assistant": "userloop.simulate.testbed_users:TestbedAssistant"},
    "rm:": {"scorer": "userloop.rlhi.reward_scorers:RewardModelScorer.from_path"},
}
BUILTIN_TARGETS = {"rm:": "rm:PATH (a reward model folder)"}
TESTBED_KIND = "testbed:"   # the built-ins that need the testbed's truth
# The bare words that named the built-ins before (YAML configs, commands, run folders), still read:
# (role, old spelling) -> spec.
ALIASES: dict[tuple[str, str], str] = {
    ("scorer", "testbed"): "testbed:scorer",
    ("rewriter", "testbed"): "testbed:rewriter",
    ("judge", "scorer"): "testbed:judge",
    ("judge", "testbed"): "testbed:judge",
    ("usereval_judge", "testbed"): "testbed:judge",
    ("followup_classifier", "offline"): "offline:classifier",
    ("persona_model", "offline"): "offline:personas",
    ("reply_classifier", "rules"): "rules:classifier",
}


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``PREFIX:TARGET``; an unknown prefix or empty target raises :class:`UserError`."""
    if not isinstance(spec, str):
        raise UserError(f"a model spec must be a string such as 'hf:PATH', got {type(spec).__name__}")
    if spec in DEFAULT_TARGETS:
        return spec, DEFAULT_TARGETS[spec]
    prefix, sep, target = spec.partition(":")
    known = ", ".join(f"{p}:" for p in PROVIDERS)
    if not sep or prefix not in PROVIDERS:
        raise UserError(f"unknown model spec {spec!r}: it must start with one of {known}")
    if not target.strip():
        raise UserError(f"model spec {spec!r} names no model: expected {PROVIDERS[prefix][2]}")
    if not _named_target(prefix, target):
        raise UserError(f"unknown model spec {spec!r}: expected {PROVIDERS[prefix][2]}")
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


def canonical_spec(role: str, spec: Any) -> Any:
    """``spec`` in today's spelling for ``role``: an old spelling in :data:`ALIASES` becomes its built-in,
    anything else is returned as it is (stripped). For comparing configs recorded by older versions."""
    return ALIASES.get((role, spec.strip()), spec.strip()) if isinstance(spec, str) else spec


def role_spec(role: str, spec: str) -> str:
    """``spec`` checked for ``role`` and in its current spelling: a built-in provider that plays the role
    (an old spelling in :data:`ALIASES` gives its built-in) or a chat model spec; anything else raises
    :class:`UserError` naming what the role takes."""
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r} (roles: {', '.join(ROLES)})")
    if not isinstance(spec, str):
        raise UserError(f"the {ROLES[role]} must be a spec string, got {type(spec).__name__}")
    spec = canonical_spec(role, spec)
    key, target = _builtin(spec)
    if key is None:
        prefix, _, target = spec.partition(":")
        if (prefix not in PROVIDERS or not _named_target(prefix, target)) and spec not in DEFAULT_TARGETS:
            raise UserError(f"unknown model spec {spec!r} for the {ROLES[role]}: give {_choices(role)}")
        parse_spec(spec)
    elif role not in BUILTIN_PROVIDERS[key]:
        raise UserError(f"{spec} is not a {ROLES[role]}: give {_choices(role)}")
    elif target == "":
        raise UserError(f"the {ROLES[role]} {spec!r} names nothing: expected {BUILTIN_TARGETS[key]}")
    return spec


def load_role(role: str, spec: str, chat_model: Callable[[ChatModel], Any] | None = None, **context) -> Any:
    """The object that plays ``role`` (:data:`ROLES`) as ``spec`` names it: a built-in provider's, made with
    the ``context`` keywords its factory takes (e.g. ``data=``), or, for a chat model spec,
    ``chat_model(load_model(spec))`` (the model itself without ``chat_model``)."""
    spec = role_spec(role, spec)
    key, target = _builtin(spec)
    if key is None:
        model = load_model(spec)
        return chat_model(model) if chat_model is not None else model
    module_name, _, path = BUILTIN_PROVIDERS[key][role].partition(":")
    factory = importlib.import_module(module_name)
    for name in path.split("."):
        factory = getattr(factory, name)
    taken = inspect.signature(factory).parameters
    chosen = {name: value for name, value in context.items() if name in taken}
    return factory(target, **chosen) if target is not None else factory(**chosen)


def needs_testbed(role: str, spec: str) -> bool:
    """Whether ``spec`` in ``role`` is a built-in that reads the testbed's truth (``testbed:...``)."""
    return role_spec(role, spec).startswith(TESTBED_KIND)


def _builtin(spec: str) -> tuple[str | None, str | None]:
    """(the key of the built-in provider ``spec`` names, its target or None); (None, None) for other specs."""
    if spec in BUILTIN_PROVIDERS and not spec.endswith(":"):
        return spec, None
    prefix, sep, target = spec.partition(":")
    if sep and f"{prefix}:" in BUILTIN_PROVIDERS:
        return f"{prefix}:", target.strip()
    return None, None


def _named_target(prefix: str, target: str) -> bool:
    """Whether ``target`` names a chat model of ``prefix`` (any target does, but for :data:`NAMED_TARGETS`)."""
    return prefix not in NAMED_TARGETS or target.partition("?")[0].strip() in NAMED_TARGETS[prefix]


def _choices(role: str) -> str:
    """What ``role`` takes, for messages: its built-ins, then the chat model prefixes."""
    builtins = [BUILTIN_TARGETS.get(key, key) for key, roles in BUILTIN_PROVIDERS.items() if role in roles]
    return ", ".join(builtins + [f"a chat model spec ({', '.join(p + ':' for p in PROVIDERS)})"])


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
