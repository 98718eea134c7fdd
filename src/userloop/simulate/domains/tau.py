"""``tau:FOLDER``: a tool domain brought as a tau-bench-style folder (docs/agents.md, "Bring your own domain").

The folder holds three files:

* ``tools.json``: a JSON list of OpenAI function schemas (``{"type": "function", "function": {"name",
  "description", "parameters"}}``; a bare ``{"name", "description", "parameters"}`` is accepted too);
* ``env.py``: ``initial_state(seed) -> dict`` (a JSON-serialisable database) and, for every tool, a function of
  that name called as ``function(state, **arguments)`` that reads or changes ``state`` and returns a
  JSON-serialisable result (it raises :class:`userloop.models.tools.ToolError`, or any exception, for a bad call);
* ``tasks.json``: a JSON list of tasks ``{"id", "instruction" (or "intent"), "actions": [{"name", "arguments"
  (or tau-bench's "kwargs")}], "outputs": [...], "db_seed", "full_prompt"}``; only the instruction and the
  actions are required (``id`` defaults to ``FOLDER-N``, ``db_seed`` to 0, ``outputs`` to none).

Every problem with the folder is one :class:`UserError` naming the file and what to fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import traceback
from pathlib import Path

from userloop.errors import UserError
from userloop.files import read_user_json
from userloop.simulate.domains.base import FunctionDomain

TASK_FIELDS = {"id", "instruction", "intent", "actions", "outputs", "db_seed", "full_prompt", "user_id"}


def load_tau_folder(folder: str | Path) -> FunctionDomain:
    """The domain of a tau-bench-style folder (see the module docstring), tasks included."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"tau domain folder not found: {folder} (it needs tools.json, env.py and tasks.json)")
    for name in ("tools.json", "env.py", "tasks.json"):
        if not (folder / name).is_file():
            raise UserError(f"tau domain folder {folder} has no {name} (it needs tools.json, env.py and tasks.json)")
    tools = _tools(folder / "tools.json")
    module = _module(folder / "env.py")
    initial_state = getattr(module, "initial_state", None)
    if not callable(initial_state):
        raise UserError(f"{folder / 'env.py'} defines no function initial_state(seed) returning the database")
    functions = {}
    for tool in tools:
        name = tool["function"]["name"]
        function = getattr(module, name, None)
        if not callable(function):
            raise UserError(f"{folder / 'env.py'} defines no function {name!r} for the tool of that name in "
                            "tools.json (called as function(state, **arguments))")
        functions[name] = function
    spec = f"tau:{folder}"
    tasks = _tasks(folder / "tasks.json", spec, {tool["function"]["name"] for tool in tools})
    return FunctionDomain(spec, tools, functions, initial_state, tasks)


def _tools(path: Path) -> list[dict]:
    data = read_user_json(path, "tools file")
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty JSON list of OpenAI function schemas")
    tools, seen = [], set()
    for number, entry in enumerate(data, start=1):
        function = entry.get("function", entry) if isinstance(entry, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name.isidentifier():
            raise UserError(f"{path}: tool {number} has no valid 'name' (expected {{\"type\": \"function\", "
                            "\"function\": {\"name\", \"description\", \"parameters\"}})")
        if name in seen:
            raise UserError(f"{path}: tool {name!r} is defined twice")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise UserError(f"{path}: tool {name!r}: 'parameters' must be a JSON schema object")
        seen.add(name)
        tools.append({"type": "function", "function": {**function, "parameters": parameters}})
    return tools


def _module(path: Path):
    name = "userloop_tau_env_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the user's module: any error while importing it is one line
        where = traceback.extract_tb(err.__traceback__)[-1]
        line = getattr(err, "lineno", None) or where.lineno
        raise UserError(f"{path}:{line}: importing it failed: {type(err).__name__}: {err}") from None
    return module


def _tasks(path: Path, spec: str, tool_names: set[str]) -> list[dict]:
    data = read_user_json(path, "tasks file")
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty JSON list of tasks")
    records, seen = [], set()
    for number, task in enumerate(data, start=1):
        where = f"{path}: task {number}"
        if not isinstance(task, dict):
            raise UserError(f"{where} is not a JSON object")
        unknown = sorted(set(task) - TASK_FIELDS)
        if unknown:
            raise UserError(f"{where} has unknown field {unknown[0]!r} (fields: {', '.join(sorted(TASK_FIELDS))})")
        instruction = task.get("instruction", task.get("intent"))
        if not isinstance(instruction, str) or not instruction.strip():
            raise UserError(f"{where} needs 'instruction': what the simulated user wants and knows")
        actions = task.get("actions")
        if not isinstance(actions, list):
            raise UserError(f"{where} needs 'actions': a list of gold calls {{\"name\", \"arguments\"}} ([] for none)")
        gold = []
        for action in actions:
            arguments = action.get("arguments", action.get("kwargs", {})) if isinstance(action, dict) else None
            if not isinstance(arguments, dict) or action.get("name") not in tool_names:
                raise UserError(f"{where}: each action needs a 'name' among the tools ({', '.join(sorted(tool_names))}) "
                                f"and 'arguments' (an object), got {str(action)[:80]}")
            gold.append({"name": action["name"], "arguments": arguments})
        task_id = str(task.get("id", f"{path.parent.name}-{number}"))
        if task_id in seen:
            raise UserError(f"{where}: id {task_id!r} is used twice")
        seen.add(task_id)
        records.append({"id": task_id, "kind": "tool", "intent": instruction.strip(), "shards": [],
                        "full_prompt": task.get("full_prompt") or instruction.strip(), "domain": spec,
                        "db_seed": task.get("db_seed", 0), "actions": gold, "outputs": task.get("outputs") or [],
                        "metadata": {"source": spec, **({"user_id": task["user_id"]} if "user_id" in task else {})}})
    return records
