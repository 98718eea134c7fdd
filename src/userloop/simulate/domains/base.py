"""What every tool domain is: tools over a JSON state, the state's hash, and the replay of gold actions.

A domain (the tau-bench setting, Yao et al. 2024, arXiv 2406.12045) is a small database (a JSON-serialisable
``dict``) and tools, OpenAI function schemas, that read or change it. A task's goal state is the state its gold
actions leave when replayed on the task's initial state; a run solves the task when its final state has the same
:func:`state_hash`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from userloop.errors import UserError
from userloop.models.tools import ToolError


class ToolDomain(Protocol):
    """A tool domain: ``tools`` (OpenAI function schemas), a seeded database and the calls that change it."""

    name: str
    tools: list[dict]
    tasks: list[dict]  # scenario records of kind "tool" (docs/agents.md); [] for a domain without tasks

    def initial_state(self, seed: int) -> dict:
        """A fresh database, the same for the same seed."""
        ...

    def call(self, state: dict, name: str, arguments: dict) -> Any:
        """Run tool ``name`` on ``state`` (which it may change) and return its JSON-serialisable result; a bad call
        raises :class:`~userloop.models.tools.ToolError`."""
        ...


def state_hash(state: Any) -> str:
    """sha256 of the state's normalised JSON (keys sorted, no spaces): tau-bench's database hash."""
    text = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tool_names(tools: list[dict]) -> list[str]:
    """The function names of OpenAI tool schemas, in order."""
    return [tool["function"]["name"] for tool in tools]


def replay_actions(domain: ToolDomain, actions: list[dict], seed: int) -> dict:
    """The state that ``actions`` (``[{"name", "arguments"}]``) leave on ``domain.initial_state(seed)``: the goal
    state of a task. A gold action the domain refuses is a :class:`UserError` naming it."""
    state = domain.initial_state(seed)
    for number, action in enumerate(actions, start=1):
        try:
            domain.call(state, action["name"], action.get("arguments", {}))
        except Exception as err:  # noqa: BLE001 - a gold action must replay: any failure is the task's fault
            raise UserError(f"gold action {number} ({action['name']}) fails on domain {domain.name!r} "
                            f"seed {seed}: {err}") from None
    return state


@dataclass
class FunctionDomain:
    """A domain whose tools are Python functions ``function(state, **arguments)``, one per schema in ``tools``.

    :meth:`call` checks the call against the tool's schema first (a known tool; every required argument
    present; no argument the schema does not name) and raises :class:`ToolError` otherwise; what the function
    raises goes to the caller. ``make_state(seed)`` builds the database; :meth:`initial_state` returns a deep copy
    of it, so a run never changes another run's state."""

    name: str
    tools: list[dict]
    functions: Mapping[str, Callable[..., Any]]
    make_state: Callable[[int], dict]
    tasks: list[dict] = field(default_factory=list)
    _states: dict[int, dict] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        missing = [name for name in tool_names(self.tools) if name not in self.functions]
        if missing:
            raise UserError(f"domain {self.name!r}: no function for tool {missing[0]!r}")

    def initial_state(self, seed: int) -> dict:
        if seed not in self._states:
            state = self.make_state(seed)
            if not isinstance(state, dict):
                raise UserError(f"domain {self.name!r}: initial_state({seed}) returned "
                                f"{type(state).__name__}, not a dict")
            try:
                json.dumps(state)
            except (TypeError, ValueError) as err:
                raise UserError(f"domain {self.name!r}: initial_state({seed}) is not JSON-serialisable: {err}") from None
            self._states[seed] = state
        return copy.deepcopy(self._states[seed])

    def call(self, state: dict, name: str, arguments: dict) -> Any:
        schema = next((tool["function"] for tool in self.tools if tool["function"]["name"] == name), None)
        if schema is None:
            raise ToolError(f"unknown tool {name!r} (tools: {', '.join(tool_names(self.tools))})")
        if not isinstance(arguments, dict):
            raise ToolError(f"{name}: arguments must be a JSON object")
        parameters = schema.get("parameters") or {}
        known = parameters.get("properties") or {}
        missing = [arg for arg in parameters.get("required", []) if arg not in arguments]
        if missing:
            raise ToolError(f"{name}: missing argument {missing[0]!r}")
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            raise ToolError(f"{name}: unknown argument {unknown[0]!r} (arguments: {', '.join(known) or 'none'})")
        return self.functions[name](state, **arguments)
