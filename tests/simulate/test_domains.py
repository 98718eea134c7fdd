"""Tool domains: the built-in shop and its tasks, tau-bench-style folders, tool scenarios, success and pass^k."""

from __future__ import annotations

import json
import math
import re

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.models.tools import ToolError
from userloop.report.html import tool_tasks_table
from userloop.report.viewer_index import load_index
from userloop.simulate.answer_check import output_told, score_tool_task
from userloop.simulate.domains import load_domain, replay_actions, state_hash
from userloop.simulate.records import SimulatedConversation
from userloop.simulate.runs import (
    compare_runs,
    group_summary,
    summarize,
    summary_markdown,
    tool_task_summary,
    write_summary,
)
from userloop.simulate.scenarios import Scenario, build_scenarios, load_scenarios, write_scenarios


@pytest.fixture(scope="module")
def shop():
    return load_domain("shop")


@pytest.fixture(scope="module")
def shop_scenarios():
    return build_scenarios("shop", kind="tool").scenarios


def by_id(scenarios, scenario_id):
    return next(scenario for scenario in scenarios if scenario.id == scenario_id)


# ---- the shop domain -------------------------------------------------------------------------------

def test_the_shop_has_eight_tools_over_a_seeded_database(shop):
    assert len(shop.tools) == 8 and all(tool["type"] == "function" for tool in shop.tools)
    first, again, other = shop.initial_state(0), shop.initial_state(0), shop.initial_state(1)
    assert state_hash(first) == state_hash(again) != state_hash(other)
    assert len(first["users"]) == 24 and 24 <= len(first["orders"]) <= 72 and len(first["products"]) == 8
    first["orders"].clear()  # a state is a copy: changing it leaves the next run's alone
    assert shop.initial_state(0)["orders"]


def test_every_builtin_task_reaches_its_goal_with_its_gold_actions(shop, shop_scenarios):
    assert len(shop_scenarios) >= 30 and len({s.id for s in shop_scenarios}) == len(shop_scenarios)
    kinds = {s.metadata["task_kind"] for s in shop_scenarios}
    assert kinds == {"cancel", "return", "exchange", "address", "order_total", "variant_price", "cancel_and_return"}
    names = {tool["function"]["name"] for tool in shop.tools}
    for scenario in shop_scenarios:
        start = shop.initial_state(scenario.db_seed)
        goal = replay_actions(shop, scenario.actions, scenario.db_seed)  # raises if a gold action fails
        assert {action["name"] for action in scenario.actions} <= names
        assert state_hash(goal) != state_hash(start) or scenario.outputs, scenario.id
        told = [f"Done. The amount is ${output}." for output in scenario.outputs]
        score = score_tool_task(scenario, goal, told)
        assert score.passed, (scenario.id, score.detail)
        assert "tool" not in scenario.intent.lower() and scenario.intent != scenario.full_prompt


def test_a_wrong_action_is_not_solved(shop, shop_scenarios):
    cancel = by_id(shop_scenarios, "shop-cancel-1")
    order_id = cancel.actions[0]["arguments"]["order_id"]
    state = shop.initial_state(0)
    other = next(o["order_id"] for o in state["orders"].values() if o["status"] == "pending" and o["order_id"] != order_id)
    shop.call(state, "cancel_order", {"order_id": other, "reason": cancel.actions[0]["arguments"]["reason"]})
    score = score_tool_task(cancel, state, ["I cancelled it."])
    assert not score.passed and "differs from the goal" in score.detail
    wrong_reason = shop.initial_state(0)
    reason = next(r for r in ("no longer needed", "ordered by mistake") if r != cancel.actions[0]["arguments"]["reason"])
    shop.call(wrong_reason, "cancel_order", {"order_id": order_id, "reason": reason})
    assert not score_tool_task(cancel, wrong_reason, ["Cancelled."]).passed
    assert not score_tool_task(cancel, shop.initial_state(0), ["Cancelled."]).passed  # nothing done


def test_reads_and_the_order_of_independent_calls_do_not_matter(shop, shop_scenarios):
    task = by_id(shop_scenarios, "shop-cancel-and-return-1")
    state = shop.initial_state(0)
    for action in reversed(task.actions):
        shop.call(state, "get_order", {"order_id": action["arguments"]["order_id"]})
        shop.call(state, action["name"], action["arguments"])
    assert score_tool_task(task, state, []).passed


def test_outputs_must_be_told(shop, shop_scenarios):
    task = by_id(shop_scenarios, "shop-return-1")
    goal = replay_actions(shop, task.actions, 0)
    assert not score_tool_task(task, goal, ["Your return is registered."]).passed
    assert "was not told" in score_tool_task(task, goal, ["Your return is registered."]).detail
    refund = task.outputs[0]
    assert score_tool_task(task, goal, ["Return registered.", f"You will get ${float(refund):,.2f} back."]).passed
    info = by_id(shop_scenarios, "shop-order-total-1")
    assert not score_tool_task(info, shop.initial_state(0), ["I can't tell."]).passed
    assert score_tool_task(info, shop.initial_state(0), [f"The total was {info.outputs[0]} dollars."]).passed


def test_outputs_are_matched_case_and_number_insensitively():
    assert output_told("29.90", ["you get $29.9 back"]) and output_told("1234.50", ["$1,234.50"])
    assert output_told("Delivered", ["It was DELIVERED yesterday."]) and output_told("45.00", ["$45."])
    assert not output_told("9.99", ["it costs 19.99"]) and not output_told("12.5", ["12.55"])


@pytest.mark.parametrize("name, arguments, fragment", [
    ("refund_everything", {}, "unknown tool 'refund_everything'"),
    ("get_order", {}, "missing argument 'order_id'"),
    ("get_order", {"order_id": "#W1", "verbose": True}, "unknown argument 'verbose'"),
    ("get_order", {"order_id": "#W1"}, "no order '#W1'"),
    ("find_user_by_email", {"email": "nobody@example.com"}, "no user with email"),
    ("return_items", {"order_id": "PENDING", "item_ids": ["x"]}, "only a delivered order can be returned"),
    ("cancel_order", {"order_id": "DELIVERED", "reason": "no longer needed"}, "only a pending order can be cancelled"),
    ("cancel_order", {"order_id": "PENDING", "reason": "because"}, "reason must be one of"),
    ("exchange_items", {"order_id": "DELIVERED", "item_ids": ["nope"], "new_item_ids": ["x"]}, "has no item 'nope'"),
])
def test_bad_calls_raise_tool_errors_and_change_nothing(shop, name, arguments, fragment):
    state = shop.initial_state(0)
    status = {o["status"]: o["order_id"] for o in state["orders"].values()}
    arguments = {k: status.get(v.lower(), v) if isinstance(v, str) else v for k, v in arguments.items()}
    before = state_hash(state)
    with pytest.raises(ToolError, match=re.escape(fragment)):
        shop.call(state, name, arguments)
    assert state_hash(state) == before


# ---- tool scenarios ----------------------------------------------------------------------------------

TOOL = {"id": "t", "kind": "tool", "intent": "You want to cancel order #W1.", "domain": "shop", "db_seed": 0,
        "actions": [{"name": "cancel_order", "arguments": {"order_id": "#W1", "reason": "no longer needed"}}],
        "outputs": []}


@pytest.mark.parametrize("change, fragment", [
    ({"domain": None}, "needs 'domain'"),
    ({"domain": "airline"}, "unknown domain 'airline'"),
    ({"db_seed": -1}, "db_seed must be an integer >= 0"),
    ({"db_seed": "0"}, "db_seed must be an integer"),
    ({"actions": None}, "needs 'actions'"),
    ({"actions": [{"name": "cancel_order"}]}, "action 1 must be"),
    ({"actions": [{"name": "cancel_order", "arguments": "#W1"}]}, "action 1 must be"),
    ({"outputs": "12"}, "outputs must be a list of non-empty strings"),
    ({"outputs": [""]}, "outputs must be a list of non-empty strings"),
])
def test_tool_scenarios_are_validated(change, fragment):
    with pytest.raises(UserError, match=fragment) as caught:
        Scenario.from_dict({**TOOL, **change})
    assert "\n" not in str(caught.value)


def test_tool_fields_belong_to_tool_scenarios_only(tmp_path):
    with pytest.raises(UserError, match="'actions' is a field of tool scenarios"):
        Scenario.from_dict({"id": "m", "kind": "math", "intent": "2+2", "answer": "4", "actions": []})
    math_one = Scenario.from_dict({"id": "m", "kind": "math", "intent": "2+2", "answer": "4"})
    assert "domain" not in math_one.to_dict()
    tool = Scenario.from_dict(TOOL)
    assert load_scenarios(write_scenarios([tool, math_one], tmp_path / "s.jsonl")) == [tool, math_one]


def test_scenarios_build_writes_the_shop_tasks(tmp_path):
    out = tmp_path / "shop.jsonl"
    result = CliRunner().invoke(app, ["scenarios", "build", "--kind", "tool", "--out", str(out)])
    assert result.exit_code == 0, result.output
    scenarios = load_scenarios(out)
    assert len(scenarios) == 36 and {s.kind for s in scenarios} == {"tool"} and {s.domain for s in scenarios} == {"shop"}
    bad = CliRunner().invoke(app, ["scenarios", "build", "--kind", "tool", "--source", "airline", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown domain 'airline'" in bad.output and "Traceback" not in bad.output


# ---- pass^k --------------------------------------------------------------------------------------------

def trial(task: str, sample: int, solved: bool | None) -> SimulatedConversation:
    return SimulatedConversation([], scenario_id=task, sample=sample, kind="tool", setting="multi_turn",
                                 end_reason="user_ended" if solved is not None else "error", solved=solved,
                                 max_user_turns=6, seed=0)


def test_pass_hat_k_against_hand_computed_values():
    outcomes = {"a": [True, False, True, False], "b": [True] * 4, "c": [False, False, None, False]}
    records = [trial(task, i, solved) for task, runs in outcomes.items() for i, solved in enumerate(runs)]
    summary = tool_task_summary(records)
    expected = {"1": (0.5 + 1 + 0) / 3, "2": (1 / 6 + 1 + 0) / 3, "3": 1 / 3, "4": 1 / 3}
    assert summary["pass_hat_k"].keys() == expected.keys()
    for k, value in expected.items():
        assert math.isclose(summary["pass_hat_k"][k], value)
    assert summary["per_task"][0] == {"scenario_id": "a", "trials": 4, "successes": 2, "unscored": 0}
    assert summary["per_task"][2]["unscored"] == 1 and summary["tasks"] == 3 and summary["trials"] == 12
    uneven = tool_task_summary([trial("a", 0, True), trial("a", 1, True), trial("b", 0, False)])
    assert uneven["pass_hat_k"] == {"1": 0.5}  # k only up to the fewest trials of any task


def test_the_summary_markdown_shows_pass_hat_k():
    markdown = summary_markdown({"setting": "multi_turn", "overall": group_summary([trial("a", 0, True)]), "by_kind": {},
                                 "tool_tasks": tool_task_summary([trial("a", 0, True), trial("a", 1, False)])})
    assert "| 1 | 0.500 |" in markdown and "| 2 | 0.000 |" in markdown and "| a | 1/2 |" in markdown


def test_runs_compare_shows_pass_hat_k(tmp_path):
    for name, outcomes in (("a", [True, True]), ("b", [True, False])):
        (tmp_path / name).mkdir()
        write_summary(tmp_path / name, summarize([trial("t", i, solved) for i, solved in enumerate(outcomes)]))
    table = compare_runs(tmp_path / "a", tmp_path / "b")
    assert "| tool tasks | pass^1 | 1.000 | 0.500 |" in table and "| tool tasks | pass^2 | 1.000 | 0.000 |" in table


# ---- tau-bench-style folders ------------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "add_note", "description": "Add a note.", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}},
         {"name": "count_notes", "description": "How many notes there are.",
          "parameters": {"type": "object", "properties": {}}}]
ENV = """
from userloop.models.tools import ToolError


def initial_state(seed):
    return {"notes": ["seed %d" % seed]}


def add_note(state, text):
    if not text.strip():
        raise ToolError("empty note")
    state["notes"].append(text)
    return len(state["notes"])


def count_notes(state):
    return len(state["notes"])
"""
TASKS = [{"id": "remember-milk", "instruction": "You want a note 'buy milk' added.",
          "actions": [{"name": "add_note", "kwargs": {"text": "buy milk"}}]},
         {"instruction": "You want to know how many notes you have.", "actions": [], "outputs": ["1"], "db_seed": 3}]


def tau_folder(tmp_path, tools=TOOLS, env=ENV, tasks=TASKS, name="notes"):
    folder = tmp_path / name
    folder.mkdir()
    for file, content in (("tools.json", tools), ("env.py", env), ("tasks.json", tasks)):
        if content is not None:
            (folder / file).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return folder


def test_a_tau_folder_loads_builds_and_scores(tmp_path):
    folder = tau_folder(tmp_path)
    domain = load_domain(f"tau:{folder}")
    assert [tool["function"]["name"] for tool in domain.tools] == ["add_note", "count_notes"]
    scenarios = build_scenarios(f"tau:{folder}", kind="tool").scenarios
    assert [s.id for s in scenarios] == ["remember-milk", "notes-2"]
    assert scenarios[0].domain == f"tau:{folder.resolve()}" and scenarios[1].db_seed == 3
    state = domain.initial_state(0)
    domain.call(state, "add_note", {"text": "buy milk"})
    assert score_tool_task(scenarios[0], state, []).passed
    assert not score_tool_task(scenarios[0], domain.initial_state(0), []).passed
    assert score_tool_task(scenarios[1], domain.initial_state(3), ["You have 1 note."]).passed
    with pytest.raises(ToolError, match="empty note"):
        domain.call(state, "add_note", {"text": " "})
    out = tmp_path / "notes.jsonl"
    result = CliRunner().invoke(app, ["scenarios", "build", "--kind", "tool", "--source", f"tau:{folder}",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [s.id for s in load_scenarios(out)] == ["remember-milk", "notes-2"]


@pytest.mark.parametrize("broken, fragment", [
    ({"tools": None}, "has no tools.json"),
    ({"tools": "{not json"}, "tools file"),
    ({"tools": [{"description": "nameless"}]}, "tool 1 has no valid 'name'"),
    ({"tools": TOOLS + [TOOLS[0]]}, "tool 'add_note' is defined twice"),
    ({"env": None}, "has no env.py"),
    ({"env": "def initial_state(seed):\n    return {\n"}, "importing it failed: SyntaxError"),
    ({"env": "raise RuntimeError('no database')\n"}, "importing it failed: RuntimeError: no database"),
    ({"env": ENV.replace("def count_notes", "def other")}, "no function 'count_notes'"),
    ({"env": ENV.replace("def initial_state", "def start")}, "no function initial_state"),
    ({"tasks": []}, "non-empty JSON list of tasks"),
    ({"tasks": [{"actions": []}]}, "task 1 needs 'instruction'"),
    ({"tasks": [{"instruction": "x"}]}, "task 1 needs 'actions'"),
    ({"tasks": [{"instruction": "x", "actions": [{"name": "delete_all", "arguments": {}}]}]}, "among the tools"),
    ({"tasks": [{"instruction": "x", "actions": [], "reward": 1}]}, "unknown field 'reward'"),
])
def test_broken_tau_folders_are_one_line_errors(tmp_path, broken, fragment):
    files = {"tools": TOOLS, "env": ENV, "tasks": TASKS, **broken}
    folder = tau_folder(tmp_path, files["tools"], files["env"], files["tasks"])
    with pytest.raises(UserError, match=re.escape(fragment)) as caught:
        load_domain(f"tau:{folder}")
    assert "\n" not in str(caught.value)


def test_a_tau_folder_whose_state_or_gold_actions_are_bad(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match="tau domain folder not found"):
        load_domain(f"tau:{missing}")
    folder = tau_folder(tmp_path, env=ENV.replace('return {"notes": ["seed %d" % seed]}', "return [seed]"), name="a")
    with pytest.raises(UserError, match=r"initial_state\(0\) returned list, not a dict"):
        load_domain(f"tau:{folder}").initial_state(0)
    tasks = [{"id": "bad", "instruction": "x", "actions": [{"name": "add_note", "arguments": {"text": ""}}]}]
    folder = tau_folder(tmp_path, tasks=tasks, name="b")
    scenario = build_scenarios(f"tau:{folder}", kind="tool").scenarios[0]
    with pytest.raises(UserError, match=r"gold action 1 \(add_note\) fails .*: empty note"):
        score_tool_task(scenario, {"notes": []}, [])


# ---- end to end: `userloop simulate` with a scripted tool-calling assistant ------------------------------

N = 2  # trials per task


def _agent_script(scenarios, behaviour, state):
    """Replies for a scripted assistant run with --concurrency 1 (conversations one after another, scenario-major):
    per conversation, one turn of tool calls and then a text reply. ``correct``: a call to an unknown tool first (a
    bad call the run survives), then the gold calls, then the outputs told; ``wrong``: the wrong order cancelled,
    returns done but the refund not told, anything else not done."""
    pending = [o["order_id"] for o in state["orders"].values() if o["status"] == "pending"]
    replies = []
    for scenario in scenarios:
        calls = [dict(action) for action in scenario.actions] or [{"name": "get_product", "arguments": {"product_id": "lamp"}}]
        text = "Done. " + " ".join(f"That is ${output}." for output in scenario.outputs)
        if behaviour == "correct":
            calls = [{"name": "refund_everything", "arguments": {}}, *calls]
        elif scenario.metadata["task_kind"] == "cancel":
            order_id = calls[0]["arguments"]["order_id"]
            calls = [{"name": "cancel_order", "arguments": {**calls[0]["arguments"],
                                                            "order_id": next(o for o in pending if o != order_id)}}]
        elif scenario.metadata["task_kind"] == "return":
            text = "Done, your return is registered."
        else:
            calls, text = [{"name": "get_product", "arguments": {"product_id": "lamp"}}], "Done."
        replies += [{"content": "", "tool_calls": calls}, text] * N
    return replies


@pytest.mark.parametrize("behaviour", ["correct", "wrong"])
def test_simulate_scores_a_scripted_tool_calling_assistant_by_the_goal_states(tmp_path, shop, behaviour):
    tasks = tmp_path / "shop.jsonl"
    assert CliRunner().invoke(app, ["scenarios", "build", "--kind", "tool", "--out", str(tasks)]).exit_code == 0
    scenarios = load_scenarios(tasks)
    agent = tmp_path / "agent.json"
    agent.write_text(json.dumps(_agent_script(scenarios, behaviour, shop.initial_state(0))), encoding="utf-8")
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"Done": "Thanks, that's all. <|endconversation|>",
                                "*": "Hi, I need help with an order of mine."}), encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["simulate", "--user", f"scripted:{user}", "--assistant", f"scripted:{agent}",
                                      "--scenarios", str(tasks), "--n", str(N), "--concurrency", "1",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    tools = summary["tool_tasks"]
    assert tools["tasks"] == len(scenarios) and tools["trials"] == N * len(scenarios)
    records = [json.loads(line) for line in (out / "conversations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == N * len(scenarios) and all(r["end_reason"] == "user_ended" for r in records)
    if behaviour == "correct":
        assert tools["pass_hat_k"] == {"1": 1.0, "2": 1.0}, [r["task_score"] for r in records if not r["solved"]]
        assert all(r["solved"] for r in records) and summary["overall"]["solved"]["rate"] == 1.0
        first_calls = [r["messages"][1]["tool_steps"][0]["calls"][0] for r in records]
        assert all(not call["ok"] and call["result"].startswith("error: ") for call in first_calls)
    else:
        assert tools["pass_hat_k"] == {"1": 0.0, "2": 0.0}
        assert not any(r["solved"] for r in records)
        details = {r["scenario_id"].rsplit("-", 1)[0]: r["task_score"]["detail"] for r in records}
        assert "differs from the goal" in details["shop-cancel"]
        assert "was not told" in details["shop-return"]
    [source] = load_index([out]).overview()["sources"]
    assert f"pass^1 {tools['pass_hat_k']['1']:.3f}, pass^2 {tools['pass_hat_k']['2']:.3f}" in source["headline"]
    assert all(row["trials"] == N for row in tools["per_task"])
    assert "| 1 |" in (out / "summary.md").read_text(encoding="utf-8")
    value = "1.000" if behaviour == "correct" else "0.000"
    assert f"pass^1 {value}, pass^2 {value}" in tool_tasks_table({"shop": out})
