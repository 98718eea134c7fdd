"""Tool domains: the databases and tools an assistant works with in a tool scenario (docs/agents.md).

``load_domain("shop")`` is the built-in shop (:mod:`~userloop.simulate.domains.shop`); ``load_domain("tau:FOLDER")``
a tau-bench-style folder (:mod:`~userloop.simulate.domains.tau`). A task's success is checked by
:func:`userloop.simulate.answer_check.score_tool_task`: the final state's :func:`state_hash` against the hash of
:func:`replay_actions` of its gold actions, and its outputs told to the user.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from userloop.errors import UserError
from userloop.simulate.domains.base import FunctionDomain, ToolDomain, replay_actions, state_hash
from userloop.simulate.domains.shop import shop_domain
from userloop.simulate.domains.tau import load_tau_folder

BUILTIN_DOMAINS = {"shop": shop_domain}

__all__ = ["BUILTIN_DOMAINS", "FunctionDomain", "ToolDomain", "domain_spec", "load_domain", "replay_actions",
           "state_hash"]


def domain_spec(spec: str) -> str:
    """``spec`` in the form scenario files keep: a built-in name as it is, ``tau:FOLDER`` with the folder's
    absolute path. An unknown spec is a :class:`UserError` that lists the valid ones."""
    if not isinstance(spec, str):
        raise UserError(f"a domain must be a string ('shop' or 'tau:FOLDER'), got {spec!r:.60}")
    if spec in BUILTIN_DOMAINS:
        return spec
    if spec.startswith("tau:") and spec[4:].strip():
        return f"tau:{Path(spec[4:].strip()).expanduser().resolve()}"
    raise UserError(f"unknown domain {spec!r}: use {', '.join(map(repr, BUILTIN_DOMAINS))} (built in) or "
                    "'tau:FOLDER' (a folder with tools.json, env.py and tasks.json; docs/agents.md)")


def load_domain(spec: str) -> ToolDomain:
    """The domain named by ``spec`` (``"shop"`` or ``"tau:FOLDER"``); loaded once per process and spec."""
    return _load(domain_spec(spec))


@cache
def _load(spec: str) -> ToolDomain:
    if spec in BUILTIN_DOMAINS:
        return BUILTIN_DOMAINS[spec]()
    return load_tau_folder(spec[4:])
