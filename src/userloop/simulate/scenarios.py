"""Scenarios for simulated conversations: a hidden intent, the shards a user reveals, and a checker.

A scenario is one task (the Lost-in-Conversation setting, Laban et al. 2025, as used in the UserLM
paper, arXiv 2510.06552 §5): ``intent`` is the whole task given to the simulated user, ``shards`` the
pieces it is expected to reveal over turns (``shards[0]`` opens), ``full_prompt`` the same task in one
fully specified turn. ``kind`` picks the checker: ``math`` (final number vs the gold ``#### N``),
``code`` (HumanEval tests in a sandbox), ``tool`` (the assistant calls a domain's tools; the final database
against the goal state of the gold ``actions``, and the ``outputs`` told to the user: docs/agents.md), ``open``
(none). Scenario files are JSONL, one per line.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from userloop.conversation import read_parquet
from userloop.data.sources import prepared_splits
from userloop.errors import UserError
from userloop.files import open_user_file, read_user_lines, read_user_text
from userloop.simulate.domains import domain_spec, load_domain
from userloop.testbed.population import truth_folder
from userloop.userlm.intents import INTENT_PREFIX, offline_intent

KINDS = ("open", "math", "code", "tool")
# The fields only tool scenarios have (to_dict leaves them out of the others).
TOOL_FIELDS = ("domain", "db_seed", "actions", "outputs")
# Fields of the task files that scenarios are built from (none is a scenario field).
TASK_FILE_FIELDS = {"task_id", "question", "prompt", "test"}


@dataclass
class Scenario:
    """One task for a simulated user; see the module docstring and docs/scenarios.md."""

    id: str
    kind: str
    intent: str
    shards: list[str]
    full_prompt: str
    answer: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    prompt_code: str | None = None
    max_user_turns: int | None = None
    metadata: dict = field(default_factory=dict)
    domain: str | None = None
    db_seed: int | None = None
    actions: list[dict] | None = None
    outputs: list[str] | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict:
        record = asdict(self)
        if self.kind != "tool":
            for name in TOOL_FIELDS:
                record.pop(name)
        return record

    @classmethod
    def from_dict(cls, record: dict) -> Scenario:
        """The scenario in ``record``; a missing or unknown field or a bad value raises :class:`UserError`."""
        if not isinstance(record, dict):
            raise UserError(f"a scenario must be a JSON object, got {type(record).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(record) - set(names))
        if unknown:
            raise UserError(f"scenario has unknown field {unknown[0]!r} (fields: {', '.join(names)})")
        missing = [name for name in ("id", "kind", "intent") if name not in record]
        if missing:
            raise UserError(f"scenario is missing field {missing[0]!r}")
        values = dict(record)
        values.setdefault("shards", [])
        values.setdefault("full_prompt", values["intent"])
        return cls(**values)


def _validate(scenario: Scenario) -> None:
    def need_text(name: str, value, optional: bool = False) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"scenario {scenario.id!r}: {name} must be a non-empty string, got {value!r:.60}")

    if not isinstance(scenario.id, str) or not scenario.id.strip():
        raise UserError(f"scenario id must be a non-empty string, got {scenario.id!r:.60}")
    if scenario.kind not in KINDS:
        raise UserError(f"scenario {scenario.id!r}: kind must be one of {', '.join(KINDS)}, got {scenario.kind!r}")
    need_text("intent", scenario.intent)
    need_text("full_prompt", scenario.full_prompt)
    if not isinstance(scenario.shards, list):
        raise UserError(f"scenario {scenario.id!r}: shards must be a list of strings")
    for shard in scenario.shards:
        need_text("each shard", shard)
    for name in ("answer", "tests", "entry_point", "prompt_code"):
        need_text(name, getattr(scenario, name), optional=True)
    if scenario.kind == "math" and scenario.answer is None:
        raise UserError(f"scenario {scenario.id!r}: a math scenario needs 'answer' (the gold number)")
    if scenario.kind == "code" and (scenario.tests is None or scenario.entry_point is None):
        raise UserError(f"scenario {scenario.id!r}: a code scenario needs 'tests' and 'entry_point'")
    turns = scenario.max_user_turns
    if turns is not None and (not isinstance(turns, int) or isinstance(turns, bool) or turns < 1):
        raise UserError(f"scenario {scenario.id!r}: max_user_turns must be an integer >= 1, got {turns!r}")
    if not isinstance(scenario.metadata, dict):
        raise UserError(f"scenario {scenario.id!r}: metadata must be a JSON object")
    if scenario.kind == "tool":
        _validate_tool(scenario)
    else:
        given = next((name for name in TOOL_FIELDS if getattr(scenario, name) is not None), None)
        if given is not None:
            raise UserError(f"scenario {scenario.id!r}: {given!r} is a field of tool scenarios, not of kind "
                            f"{scenario.kind!r}")


def _validate_tool(scenario: Scenario) -> None:
    """A tool scenario: a domain spec, a database seed, the gold calls and the outputs (docs/agents.md)."""
    where = f"scenario {scenario.id!r}"
    if scenario.domain is None:
        raise UserError(f"{where}: a tool scenario needs 'domain' ('shop' or 'tau:FOLDER')")
    try:
        domain_spec(scenario.domain)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    seed = scenario.db_seed
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise UserError(f"{where}: db_seed must be an integer >= 0, got {seed!r:.60}")
    if not isinstance(scenario.actions, list):
        raise UserError(f"{where}: a tool scenario needs 'actions', the list of gold calls "
                        "[{\"name\", \"arguments\"}] ([] when the task changes nothing)")
    for number, action in enumerate(scenario.actions, start=1):
        if (not isinstance(action, dict) or set(action) != {"name", "arguments"} or not isinstance(action["name"], str)
                or not isinstance(action["arguments"], dict)):
            raise UserError(f"{where}: action {number} must be {{\"name\": str, \"arguments\": object}}, "
                            f"got {action!s:.80}")
    outputs = scenario.outputs
    if outputs is not None and (not isinstance(outputs, list)
                                or not all(isinstance(text, str) and text.strip() for text in outputs)):
        raise UserError(f"{where}: outputs must be a list of non-empty strings, got {outputs!r:.60}")


def load_scenarios(path: str | Path) -> list[Scenario]:
    """The scenarios in a JSONL file; a bad line is one :class:`UserError` naming ``file:line``,
    and so is an id used twice. Blank lines are allowed. A task file that is not a scenario file yet
    (Lost-in-Conversation, GSM8K, HumanEval) is an error that says how to build one from it."""
    path = Path(path)
    lines = read_user_lines(path, "scenario file")
    if lines and lines[0][1].lstrip().startswith("["):
        raise UserError(f"{path} is a JSON array, not a scenario file (JSONL, one scenario per line)"
                        + _build_hint(path))
    scenarios: list[Scenario] = []
    seen: dict[str, int] = {}
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not valid JSON: {err.msg}") from None
        try:
            scenario = Scenario.from_dict(record)
        except (UserError, TypeError) as err:
            hint = _build_hint(path) if isinstance(record, dict) and TASK_FILE_FIELDS & set(record) else ""
            raise UserError(f"{path}:{number}: {err}{hint}") from None
        if scenario.id in seen:
            raise UserError(f"{path}:{number}: scenario id {scenario.id!r} already used on line {seen[scenario.id]}")
        seen[scenario.id] = number
        scenarios.append(scenario)
    if not scenarios:
        raise UserError(f"scenario file {path} holds no scenarios")
    return scenarios


def _build_hint(path: Path) -> str:
    return (f"; a Lost-in-Conversation, GSM8K or HumanEval task file becomes a scenario file with: "
            f"userloop scenarios build --source {path} --out scenarios.jsonl")


def write_scenarios(scenarios: list[Scenario], path: str | Path) -> Path:
    """Write ``scenarios`` as JSONL (one object per line) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for scenario in scenarios:
            out.write(json.dumps(scenario.to_dict(), ensure_ascii=False) + "\n")
    return path


# ---- builders: scenario files from task datasets ------------------------------------------------


@dataclass
class BuildResult:
    """The scenarios built from a source, with every record read accounted for."""

    scenarios: list[Scenario]
    source: str
    records_read: int
    skipped: dict[str, int] = field(default_factory=dict)
    renamed: int = 0
    not_drawn: int = 0

    def to_dict(self) -> dict:
        return {"source": self.source, "records_read": self.records_read, "scenarios": len(self.scenarios),
                "skipped": sum(self.skipped.values()), "skipped_by_reason": dict(self.skipped),
                "renamed_duplicate_ids": self.renamed, "not_drawn_by_limit": self.not_drawn}


def build_scenarios(source: str | Path | None, kind: str | None = None, limit: int | None = None,
                    split: str | None = None, seed: int = 0) -> BuildResult:
    """Scenarios from ``source``, whose layout is recognised from its content:

    * a Lost-in-Conversation sharded file (a JSON list of ``{"task_id", "task", "question", "answer",
      "shards": [{"shard_id", "shard"}]}``): ``math`` scenarios, shards in ``shard_id`` order;
    * a GSM8K JSONL (``question``, ``answer`` ending ``#### N``): ``math``, one shard (the question);
    * a HumanEval JSONL(.gz) (``prompt``, ``test``, ``entry_point``): ``code`` (see :func:`code_shards`);
    * a folder written by ``userloop data prepare``, or ``None`` for the built-in testbed: ``open``
      intents of the conversations of ``split`` (default ``test``);
    * with ``kind="math"``, a testbed folder (``userloop testbed generate``'s, or a prepared folder made
      from one): the testbed's sharded arithmetic word problems with their computed answers
      (:func:`_testbed_math`; a prepared folder keeps those of ``split``, default ``test``);
    * with ``kind="tool"``, a domain spec (``"shop"``, the default, or ``"tau:FOLDER"``): the domain's tasks
      (docs/agents.md).

    ``kind``, when given, must match what the source holds. ``limit`` keeps that many scenarios,
    drawn at random with ``seed`` (file order kept). Records that cannot become a scenario are counted
    by reason in :attr:`BuildResult.skipped`; a source that yields none is an error.
    """
    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    result = _tool_tasks(str(source or "shop"), split) if kind == "tool" else _source_tasks(source, kind, split)
    if not result.scenarios:
        reasons = "; ".join(f"{reason}: {count}" for reason, count in result.skipped.items()) or "no records"
        raise UserError(f"no scenarios could be built from {result.source} ({reasons})")
    if limit is not None and limit < len(result.scenarios):
        import random

        keep = sorted(random.Random(seed).sample(range(len(result.scenarios)), limit))
        result.not_drawn = len(result.scenarios) - limit
        result.scenarios = [result.scenarios[i] for i in keep]
    return result


def _source_tasks(source: str | Path | None, kind: str | None, split: str | None) -> BuildResult:
    """The scenarios of a task file or a data folder (every kind but ``tool``), checked against ``kind``."""
    if source is None:
        from userloop.testbed.default import default_data

        source = default_data(prepared=True)
    path = Path(source)
    if not path.exists():
        raise UserError(f"scenario source not found: {path}")
    if path.is_dir() and kind == "math":
        result = _testbed_math(path, split)
    elif path.is_dir():
        result = _open_intents(path, split or "test")
    elif split is not None:
        raise UserError("--split applies to a prepared data folder only")
    else:
        result = _task_file(path)
    found = {scenario.kind for scenario in result.scenarios}
    if kind is not None and found and found != {kind}:
        raise UserError(f"{path} holds {', '.join(sorted(found))} tasks, not --kind {kind}")
    return result


def _tool_tasks(spec: str, split: str | None) -> BuildResult:
    """The tasks of the tool domain ``spec`` (``shop`` or ``tau:FOLDER``) as tool scenarios."""
    if split is not None:
        raise UserError("--split applies to a prepared data folder only")
    domain = load_domain(spec)
    scenarios = []
    for number, record in enumerate(domain.tasks, start=1):
        try:
            scenarios.append(Scenario.from_dict(record))
        except (UserError, TypeError) as err:
            raise UserError(f"{domain.name}: task {number}: {err}") from None
    for scenario in scenarios:
        scenario.metadata.setdefault("source", domain.name)
    return BuildResult(scenarios, domain.name, len(domain.tasks))


def _task_file(path: Path) -> BuildResult:
    records = _read_records(path)
    first = next((record for record in records if isinstance(record, dict)), {})
    if "shards" in first:
        builder, name = _lost_in_conversation, "lost_in_conversation"
    elif "entry_point" in first:
        builder, name = _humaneval, "humaneval"
    elif "question" in first and "answer" in first:
        builder, name = _gsm8k, "gsm8k"
    else:
        raise UserError(f"{path}: not a recognised task file (expected Lost-in-Conversation shards, GSM8K "
                        "'question'/'answer' or HumanEval 'prompt'/'test'/'entry_point' records)")
    scenarios: list[Scenario] = []
    skipped: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        try:
            scenario = builder(record, number) if isinstance(record, dict) else None
            reason = None if scenario is not None else "not valid JSON" if record is _INVALID else "not a JSON object"
        except _Skip as skip:
            scenario, reason = None, str(skip)
        if scenario is None:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            scenario.metadata.setdefault("source", name)
            scenarios.append(scenario)
    if name == "lost_in_conversation" and not scenarios and any("translation" in r for r in skipped):
        raise UserError(f"{path} holds sharded translation tasks: userloop scores math and code only "
                        "(use a sharded math file, a GSM8K or a HumanEval file)")
    scenarios, renamed = _unique_ids(scenarios, skipped)
    return BuildResult(scenarios, str(path), len(records), skipped, renamed)


def _read_records(path: Path) -> list:
    """The records of a JSON array file or of a JSONL(.gz) file (an invalid line becomes ``_INVALID``)."""
    text = read_user_text(path, "scenario source")
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON: {err.msg} (line {err.lineno})") from None
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append(_INVALID)
    return records


_INVALID = object()  # a JSONL line that is not valid JSON: counted as skipped


class _Skip(Exception):
    """A record that cannot become a scenario; the message is the reason counted."""


def _text(record: dict, name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _Skip(f"missing {name}")
    return value.strip()


def _gold(answer: str) -> str:
    _, hashes, after = answer.rpartition("####")
    gold = after.strip().replace(",", "")
    if not hashes or not gold:
        raise _Skip("answer without '#### N'")
    try:
        float(gold)
    except ValueError:
        raise _Skip("answer after '####' is not a number") from None
    return gold


def math_intent(question: str) -> str:
    """The user LM's intent for a math problem, in the house intent style (docs/user-simulator.md)."""
    return f"{INTENT_PREFIX} get the answer to a math problem: {question}"


def _lost_in_conversation(record: dict, number: int) -> Scenario:
    task = record.get("task", "math")
    if task != "math":
        raise _Skip(f"unsupported task {task!r} (sharded translation is not scored)")
    question = _text(record, "question")
    shards = record.get("shards")
    if not isinstance(shards, list) or not shards:
        raise _Skip("no shards")
    try:
        ordered = sorted(shards, key=lambda shard: int(shard["shard_id"]))
        texts = [str(shard["shard"]).strip() for shard in ordered]
    except (KeyError, TypeError, ValueError):
        raise _Skip("shard without shard_id/shard") from None
    kept = [text for text in texts if text]
    if not kept:
        raise _Skip("only empty shards")
    task_id = str(record.get("task_id") or f"lic-math-{number}")
    metadata = {"task_id": task_id, **({"empty_shards_dropped": len(texts) - len(kept)} if len(kept) < len(texts) else {})}
    return Scenario(id=task_id, kind="math", intent=math_intent(question), shards=kept, full_prompt=question,
                    answer=_gold(_text(record, "answer")), metadata=metadata)


def _gsm8k(record: dict, number: int) -> Scenario:
    question = _text(record, "question")
    scenario_id = str(record.get("id") or record.get("task_id") or f"gsm8k-{number}")
    return Scenario(id=scenario_id, kind="math", intent=math_intent(question), shards=[question], full_prompt=question,
                    answer=_gold(_text(record, "answer")), metadata={"line": number})


def _humaneval(record: dict, number: int) -> Scenario:
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _Skip("missing prompt")
    tests, entry_point = _text(record, "test"), _text(record, "entry_point")
    shards = code_shards(prompt, entry_point)
    full = f"Write the Python function `{entry_point}` that completes this code:\n```python\n{prompt.strip()}\n```"
    task_id = str(record.get("task_id") or f"humaneval-{number}")
    intent = f"{INTENT_PREFIX} get a Python function written that completes this code:\n```python\n{prompt.strip()}\n```"
    return Scenario(id=task_id, kind="code", intent=intent, shards=shards, full_prompt=full, tests=tests,
                    entry_point=entry_point, prompt_code=prompt, metadata={"task_id": task_id})


def code_shards(prompt: str, entry_point: str) -> list[str]:
    """The pieces of a HumanEval task a user reveals: first the function's signature with the first
    paragraph of its docstring (the goal), then each further paragraph (details and constraints), then
    the examples (the ``>>>`` lines and what follows them, or an "Example" section) as the last shard."""
    import ast

    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        raise _Skip("prompt is not valid Python") from None
    function = next((node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == entry_point),
                    None)
    if function is None:
        raise _Skip("prompt does not define entry_point")
    signature = prompt.splitlines()[function.lineno - 1].strip().removesuffix(":")
    docstring = ast.get_docstring(function) or ""
    description, examples = _split_examples(docstring)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", description) if p.strip()]
    goal = paragraphs[0] if paragraphs else ""
    opening = f"Write a Python function `{signature}`" + (f": {goal}" if goal else ".")
    return [opening, *paragraphs[1:], *([f"Examples:\n{examples}"] if examples else [])]


def _split_examples(docstring: str) -> tuple[str, str]:
    match = re.search(r"^\s*(?:>>>|(?:for\s+)?examples?\b)", docstring, re.IGNORECASE | re.MULTILINE)
    if not match:
        return docstring, ""
    return docstring[:match.start()], docstring[match.start():].strip()


def _open_intents(folder: Path, split: str) -> BuildResult:
    splits = prepared_splits(folder)
    if not splits:
        raise UserError(f"{folder} is not a prepared data folder (run 'userloop data prepare' first)")
    if split not in splits:
        raise UserError(f"{folder} has no {split!r} split (it has {', '.join(splits)})")
    scenarios, skipped, read = [], {}, 0
    for conversation in read_parquet(splits[split]):
        read += 1
        if not conversation.user_turns:
            skipped["no user turn"] = skipped.get("no user turn", 0) + 1
            continue
        intent = (conversation.intent or "").strip()
        origin = "data"
        if not intent:
            intent, origin = offline_intent(conversation), "offline_intent"
        scenario_id = conversation.id or f"{split}-{read}"
        scenarios.append(Scenario(id=scenario_id, kind="open", intent=intent, shards=[], full_prompt=request(intent),
                                  metadata={"source": str(folder), "split": split, "intent_from": origin}))
    scenarios, renamed = _unique_ids(scenarios, skipped)
    return BuildResult(scenarios, str(folder), read, skipped, renamed)


def _testbed_math(folder: Path, split: str | None) -> BuildResult:
    """Math scenarios from the testbed's truth (docs/testbed.md): every arithmetic word problem of every
    conversation (a conversation's later tasks too), its shards in the order a gradual user reveals them
    (the goal without numbers first, then one fact each, as Lost-in-Conversation's sharded GSM8K), the whole
    problem as ``full_prompt`` and the computed integer answer as gold. A prepared folder keeps the problems
    of the conversations in ``split`` (default ``test``: users no model trained on); a raw testbed folder
    keeps them all."""
    truth = truth_folder(folder)
    if truth is None:
        raise UserError(f"{folder}: --kind math on a folder needs the testbed (its truth.jsonl, beside the raw "
                        "conversations); for other math tasks give a sharded math or GSM8K file")
    keep = split_ids(folder, split)
    outside = f"not in the {split or 'test'} split"
    scenarios, skipped, read = [], {}, 0
    with open_user_file(truth / "truth.jsonl", "testbed truth file") as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("type") != "conversation":
                continue
            read += 1
            if keep is not None and record["id"] not in keep:
                skipped[outside] = skipped.get(outside, 0) + 1
                continue
            problems = [(k, task) for k, task in enumerate(record["tasks"], start=1) if task["family"] == "math"]
            if not problems:
                skipped["no math task"] = skipped.get("no math task", 0) + 1
            for k, task in problems:
                scenarios.append(Scenario(
                    id=f"{record['id']}-task{k}", kind="math", intent=math_intent(task["full_request"]),
                    shards=list(task["shards"]), full_prompt=task["full_request"], answer=str(task["check"]["answer"]),
                    metadata={"source": "testbed", "conversation_id": record["id"], "user_id": record["user_id"],
                              "domain": task["domain"], "purpose": task["purpose"]}))
    scenarios, renamed = _unique_ids(scenarios, skipped)
    return BuildResult(scenarios, str(truth / "truth.jsonl"), read, skipped, renamed)


def split_ids(folder: Path, split: str | None) -> set[str] | None:
    """The conversation ids of ``split`` of a prepared folder; None for a raw testbed folder (no split)."""
    splits = prepared_splits(folder)
    if not splits:
        if split is not None:
            raise UserError("--split applies to a prepared data folder only")
        return None
    split = split or "test"
    if split not in splits:
        raise UserError(f"{folder} has no {split!r} split (it has {', '.join(splits)})")
    return {conversation.id for conversation in read_parquet(splits[split])}


def request(intent: str) -> str:
    """An intent as the user's own one-turn request: "You are a user chatting with an assistant language
    model to write a poem." becomes "Please help me write a poem."; other text is kept as it is."""
    if not intent.startswith(INTENT_PREFIX):
        return intent
    rest = intent[len(INTENT_PREFIX):].strip()
    return f"Please help me {rest.removeprefix('get help with ').removeprefix('get help ')}" if rest else intent


def _unique_ids(scenarios: list[Scenario], skipped: dict[str, int]) -> tuple[list[Scenario], int]:
    """Scenarios with unique ids: an exact repeat of an earlier record is skipped (counted), a different
    task under a used id gets ``ID#2``, ``ID#3``... (the original id stays in ``metadata["task_id"]``)."""
    kept: dict[str, Scenario] = {}
    renamed = 0
    for scenario in scenarios:
        if scenario.id not in kept:
            kept[scenario.id] = scenario
            continue
        if any(_same_task(scenario, other) for other in kept.values() if other.id.split("#")[0] == scenario.id):
            skipped["duplicate record"] = skipped.get("duplicate record", 0) + 1
            continue
        copy = 2
        while f"{scenario.id}#{copy}" in kept:
            copy += 1
        scenario.metadata.setdefault("task_id", scenario.id)
        scenario.id = f"{scenario.id}#{copy}"
        kept[scenario.id] = scenario
        renamed += 1
    return list(kept.values()), renamed


def _same_task(a: Scenario, b: Scenario) -> bool:
    return (a.intent, a.shards, a.answer, a.tests) == (b.intent, b.shards, b.answer, b.tests)


def build_scenario_file(out: str | Path, source: str | Path | None = None, kind: str | None = None,
                        limit: int | None = None, split: str | None = None, seed: int = 0) -> BuildResult:
    """:func:`build_scenarios` written to ``out`` as a scenario file (JSONL); returns the build report."""
    result = build_scenarios(source, kind=kind, limit=limit, split=split, seed=seed)
    write_scenarios(result.scenarios, out)
    return result
