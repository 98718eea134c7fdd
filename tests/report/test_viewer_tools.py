"""Tool calls in the conversation viewer's index: a shop task run with a scripted tool-calling assistant."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from userloop.report.viewer_index import load_index
from userloop.simulate.domains import load_domain
from userloop.simulate.runs import SimulationConfig, simulate

# the shop's task "shop-cancel-1": cancel order #W7947 because it was ordered by mistake
CALLS = {"tool_calls": [{"name": "get_order", "arguments": {"order_id": "#W7947"}},
                        {"name": "cancel_order", "arguments": {"order_id": "#W7947", "reason": "ordered by mistake"}},
                        {"name": "refund", "arguments": {}}]}
ASSISTANT_SCRIPT = {"unknown tool": "Your order #W7947 is cancelled.", "*": CALLS}


def build_tool_run(root: Path) -> Path:
    """A one-conversation run of the shop task with the scripted assistant, in a thread of its own (the browser
    tests' event loop must not see the simulation's)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_build_tool_run, root).result()


def _build_tool_run(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    task = next(t for t in load_domain("shop").tasks if t["id"] == "shop-cancel-1")
    (root / "tasks.jsonl").write_text(json.dumps(task) + "\n")
    (root / "assistant.json").write_text(json.dumps(ASSISTANT_SCRIPT))
    (root / "user.json").write_text(json.dumps(["Please cancel my order #W7947, I ordered it by mistake."]))
    simulate(SimulationConfig(assistant=f"scripted:{root / 'assistant.json'}", user=f"scripted:{root / 'user.json'}",
                              scenarios=str(root / "tasks.jsonl"), max_user_turns=1), root / "run")
    return root / "run"


def test_tool_steps_and_the_task_score_reach_the_viewer(tmp_path):
    index = load_index([build_tool_run(tmp_path)])
    [entry] = index.entries
    detail = index.conversation(entry.key)
    assert detail["outcome"] == "solved" and detail["task_score"]["passed"] is True
    user, reply = detail["messages"]
    assert "tool_steps" not in user and reply["content"] == "Your order #W7947 is cancelled."
    [step] = reply["tool_steps"]
    assert [(call["name"], call["ok"]) for call in step["calls"]] == [("get_order", True), ("cancel_order", True),
                                                                     ("refund", False)]
    assert step["calls"][2]["result"].startswith("error: unknown tool 'refund'")
    assert [event["action"] for event in reply["events"]] == ["call", "result", "call", "result", "call", "error"]
