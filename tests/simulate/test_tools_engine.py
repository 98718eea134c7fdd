"""Tools in the engine: a tiny in-test domain, a mock tool-calling assistant and a mock user.

The domain ("counter") has counters a and b; ``add`` changes one, ``get`` reads one, ``explode`` changes the
database and then fails. Calls run between user turns, their results go back to the assistant as tool messages,
every call is an event, bad calls are errors to the assistant (never a crashed run), and ``solved`` is the
tool task's score.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from userloop.models import Capabilities, ChatModel, Choice, Completion, GenerationParams, ToolError
from userloop.models.base import ContextLengthError
from userloop.models.mock import MockModel, count_words
from userloop.models.tools import calls_in_text
from userloop.simulate import answer_check, domains
from userloop.simulate.domains import FunctionDomain, state_hash
from userloop.simulate.engine import END_REASONS, Job, SimulationEngine
from userloop.simulate.records import SimulatedConversation
from userloop.simulate.runs import SimulationConfig, read_records, simulate
from userloop.simulate.scenarios import Scenario
from userloop.userlm.simulator import GuardrailConfig, UserSimulator


def _schema(name: str, required: list[str], properties: dict) -> dict:
    return {"type": "function", "function": {"name": name, "description": name,
                                             "parameters": {"type": "object", "properties": properties,
                                                            "required": required}}}


def _add(state, name, amount):
    if name not in state["counters"]:
        raise ToolError(f"no counter {name!r}")
    state["counters"][name] += amount
    return {"counter": name, "value": state["counters"][name]}


def _explode(state):
    state["counters"]["a"] = 999
    raise RuntimeError("the counter broke")


def counter_domain() -> FunctionDomain:
    return FunctionDomain(
        name="counter",
        tools=[_schema("add", ["name", "amount"], {"name": {"type": "string"}, "amount": {"type": "integer"}}),
               _schema("get", ["name"], {"name": {"type": "string"}}),
               _schema("explode", [], {})],
        functions={"add": _add, "get": lambda state, name: state["counters"][name], "explode": _explode},
        make_state=lambda seed: {"counters": {"a": seed, "b": 0}})


@pytest.fixture(autouse=True)
def counter(monkeypatch):
    """The counter domain as a built-in, with the domain and goal caches cleared around each test."""
    monkeypatch.setitem(domains.BUILTIN_DOMAINS, "counter", counter_domain)
    domains._load.cache_clear()
    answer_check.goal_hash.cache_clear()
    yield
    domains._load.cache_clear()
    answer_check.goal_hash.cache_clear()


def task(actions, outputs=None, id="t1") -> Scenario:
    return Scenario(id=id, kind="tool", intent="You want counter a raised by 2 and b by 3.", shards=[],
                    full_prompt="Raise a by 2 and b by 3.", domain="counter", db_seed=0, actions=actions,
                    outputs=outputs)


GOLD = [{"name": "add", "arguments": {"name": "a", "amount": 2}},
        {"name": "add", "arguments": {"name": "b", "amount": 3}}]


def calls(*named) -> dict:
    return {"tool_calls": [{"name": name, "arguments": arguments} for name, arguments in named]}


def scripted_assistant(*turn_steps, final="Done: a is now 2."):
    """A mock assistant that answers a user message with ``turn_steps[0]``, each tool result with the next step,
    and the last result with ``final``."""
    def reply(messages, **settings):
        if messages[-1]["role"] == "user":
            return turn_steps[0] if turn_steps else final
        done = sum(m["role"] == "assistant" and bool(m.get("tool_calls")) for m in messages[_last_user(messages):])
        return turn_steps[done] if done < len(turn_steps) else final

    return MockModel("assistant", replies=reply)


def _last_user(messages) -> int:
    return max(i for i, m in enumerate(messages) if m["role"] == "user")


def run(assistant, scenario, *, user_turns=1, **engine_options) -> SimulatedConversation:
    user_model = MockModel("user", replies=["Please raise a by 2 and b by 3."])
    off = GuardrailConfig(filter_first_tokens=False, avoid_termination=False, length_thresholds=False,
                          filter_repetition=False, samples_per_call=1)
    engine = SimulationEngine(assistant, UserSimulator(user_model, off, GenerationParams(max_new_tokens=20)),
                              assistant_params=GenerationParams(max_new_tokens=20), max_user_turns=user_turns,
                              **engine_options)
    records = []
    asyncio.run(engine.run([Job(scenario, 0)], records.append))
    [record] = records
    run.user_model = user_model
    return record


def results(record) -> list[tuple[str, bool, str]]:
    return [(call.name, call.ok, call.result) for m in record.messages for step in m.tool_steps for call in step.calls]


# --------------------------------------------------------------------------- correct and incorrect behaviour
def test_correct_calls_change_the_state_and_solve_the_task():
    assistant = scripted_assistant(calls(("add", {"name": "a", "amount": 2}), ("add", {"name": "b", "amount": 3})),
                                   calls(("get", {"name": "a"})))
    record = run(assistant, task(GOLD, outputs=["a is now 2"]))
    assert (record.solved, record.end_reason) == (True, "max_turns")
    assert record.task_score.passed and "goal state reached" in record.task_score.detail
    assert record.final_state_hash == state_hash({"counters": {"a": 2, "b": 3}}) == record.task_score.extracted
    reply = record.messages[-1]
    assert [m.role for m in record.messages] == ["user", "assistant"] and reply.content == "Done: a is now 2."
    assert [len(step.calls) for step in reply.tool_steps] == [2, 1]  # two calls in one step, then one
    assert results(record) == [("add", True, '{"counter": "a", "value": 2}'),
                               ("add", True, '{"counter": "b", "value": 3}'), ("get", True, "2")]
    assert [(e["tool"], e["action"]) for e in reply.events] == [("add", "call"), ("add", "result"), ("add", "call"),
                                                                 ("add", "result"), ("get", "call"), ("get", "result")]
    sent_words = sum(count_words(m["content"]) for messages, _ in assistant.calls for m in messages)
    assert reply.tokens.prompt == record.tokens["assistant"].prompt == sent_words  # its three requests, summed

    # the assistant saw its calls and their results as OpenAI messages
    last_request = assistant.calls[-1][0]
    assert [m["role"] for m in last_request] == ["user", "assistant", "tool", "tool", "assistant", "tool"]
    assert last_request[2] == {"role": "tool", "tool_call_id": "call_0", "name": "add",
                               "content": '{"counter": "a", "value": 2}'}
    assert last_request[1]["tool_calls"][1]["function"] == {"name": "add", "arguments": '{"name": "b", "amount": 3}'}
    assert len(assistant.calls) == 3


def test_wrong_calls_or_untold_outputs_do_not_solve_it():
    wrong = run(scripted_assistant(calls(("add", {"name": "a", "amount": 20}), ("add", {"name": "b", "amount": 3}))),
                task(GOLD))
    assert wrong.solved is False and "differs from the goal state" in wrong.task_score.detail
    untold = run(scripted_assistant(calls(("add", {"name": "a", "amount": 2}), ("add", {"name": "b", "amount": 3})),
                                    final="All done."), task(GOLD, outputs=["a is now 2"]))
    assert untold.solved is False and "not told" in untold.task_score.detail
    nothing = run(scripted_assistant(final="I cannot help."), task(GOLD))
    assert nothing.solved is False and nothing.messages[-1].tool_steps == [] and nothing.messages[-1].events == []


def test_the_state_carries_over_between_user_turns():
    assistant = scripted_assistant(calls(("add", {"name": "a", "amount": 1})))
    record = run(assistant, task([{"name": "add", "arguments": {"name": "a", "amount": 1}}] * 2), user_turns=2)
    assert [m.role for m in record.messages] == ["user", "assistant"] * 2 and record.solved is True
    first_turn_tool_messages = [m for m in assistant.calls[-1][0] if m["role"] == "tool"]
    assert len(first_turn_tool_messages) == 2  # the second turn's request still shows the first turn's call
    user_saw = [m for messages, _ in run.user_model.calls for m in messages]
    assert any(m["content"] == "Done: a is now 2." for m in user_saw)  # the reply, but never a tool or a result
    assert all(set(m) == {"role", "content"} and '"value"' not in m["content"] for m in user_saw)


# --------------------------------------------------------------------------- the cap
def test_calls_past_the_cap_are_not_run_and_the_turn_ends():
    three = calls(*[("add", {"name": "a", "amount": 1})] * 3)
    assistant = MockModel("assistant", replies=lambda messages, **settings: {"content": "Working on it.", **three})
    record = run(assistant, task([]), max_tool_calls_per_turn=2)
    reply = record.messages[-1]
    assert [ok for _, ok, _ in results(record)] == [True, True, False]
    assert results(record)[2][2].startswith("error: not run: the cap of 2 tool calls per turn is reached")
    assert record.final_state_hash == state_hash({"counters": {"a": 2, "b": 0}})
    assert len(assistant.calls) == 2 and reply.content == "Working on it."  # asked once more, then the cap ends it
    assert reply.events[-1]["action"] == "cap" and "not run: add, add, add" in reply.events[-1]["detail"]
    assert record.end_reason == "max_turns" and record.error is None


def test_the_cap_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="max_tool_calls_per_turn"):
        SimulationEngine(MockModel(), None, assistant_params=GenerationParams(), max_tool_calls_per_turn=0)


# --------------------------------------------------------------------------- malformed calls
def test_each_malformed_call_is_an_error_to_the_assistant_not_a_crash():
    bad = {"content": "", "tool_calls": [
        {"name": "refund", "arguments": {}},                                 # unknown tool
        {"name": "add", "arguments": '{"name": "a", "amount": '},            # arguments that are not JSON
        {"name": "add", "arguments": "[1, 2]"},                              # JSON, not an object
        {"name": "add", "arguments": {"name": "a"}},                         # a missing argument
        {"name": "add", "arguments": {"name": "a", "amount": 1, "x": 2}},   # an argument the schema does not name
        {"name": "add", "arguments": {"name": "z", "amount": 1}},           # the tool's own ToolError
        {"name": "get", "arguments": {"name": "z"}},                         # an exception (KeyError) in the tool
        {"name": "explode", "arguments": {}},                                # an exception after changing the state
    ]}
    assistant = scripted_assistant(bad, final="Sorry, something went wrong.")
    record = run(assistant, task([]))
    assert record.end_reason == "max_turns" and record.error is None and record.solved is True  # nothing changed
    assert record.final_state_hash == state_hash({"counters": {"a": 0, "b": 0}})
    outcomes = results(record)
    assert all(not ok and result.startswith("error: ") for _, ok, result in outcomes)
    details = [result for _, _, result in outcomes]
    assert "unknown tool 'refund' (tools: add, get, explode)" in details[0]
    assert "arguments of add must be a JSON object" in details[1] and "arguments of add" in details[2]
    assert "missing argument 'amount'" in details[3] and "unknown argument 'x'" in details[4]
    assert details[5] == "error: no counter 'z'"
    assert "get failed: KeyError" in details[6] and "explode failed: RuntimeError: the counter broke" in details[7]
    raw = record.messages[-1].tool_steps[0].calls[1]
    assert (raw.raw, raw.arguments) == ('{"name": "a", "amount": ', {})
    assert [e["action"] for e in record.messages[-1].events] == ["call", "error"] * 8
    sent = [m for m in assistant.calls[-1][0] if m["role"] == "tool"]
    assert [m["content"] for m in sent] == details  # the errors went back to the assistant


class TextToolCaller(ChatModel):
    """An assistant whose first reply is a call it wrote as text that is not JSON (as ``hf:`` reads such a block)."""

    name, supports = "text-caller", Capabilities(tools=True)

    async def _agenerate(self, conversations, params, tools=None):
        called = any(m["role"] == "tool" for m in conversations[0])
        choice = Choice("Sorry.", "stop", 1) if called else Choice("", "stop", 3, tool_calls=calls_in_text(
            "<tool_call>add(a, 2)</tool_call>")[1])
        return [Completion([choice], 1, choice.completion_tokens, 0.0, self.name)]


def test_a_call_without_a_name_is_an_error():
    record = run(TextToolCaller(), task([]))
    nameless = "error: a tool call needs a function name and JSON arguments, got 'add(a, 2)'"
    assert results(record) == [("", False, nameless)]
    assert record.messages[-1].content == "Sorry."


def test_a_model_failure_after_tool_calls_keeps_the_calls_that_ran():
    def reply(messages, **settings):
        if messages[-1]["role"] == "tool":
            raise ContextLengthError("prompt of 90 tokens plus max_new_tokens 20 exceeds the context of mock (80 tokens)")
        return calls(("add", {"name": "a", "amount": 2}))

    record = run(MockModel("assistant", replies=reply), task([]))
    assert record.end_reason == "context" and "ContextLengthError" in record.error
    reply_message = record.messages[-1]
    assert (reply_message.role, reply_message.content, reply_message.finish_reason) == ("assistant", "", None)
    assert results(record) == [("add", True, '{"counter": "a", "value": 2}')]
    assert record.final_state_hash == state_hash({"counters": {"a": 2, "b": 0}}) and record.solved is False


def test_a_model_that_cannot_call_tools_ends_that_conversation_with_an_error():
    record = run(MockModel("assistant", supports=Capabilities()), task([]))
    assert record.end_reason == "error" and "cannot call tools" in record.error
    assert record.end_reason in END_REASONS


# --------------------------------------------------------------------------- records
def test_tool_records_round_trip_through_json():
    assistant = scripted_assistant(calls(("add", {"name": "a", "amount": 2}), ("refund", {})),
                                   {"content": "", "tool_calls": [{"name": "add", "arguments": "{oops"}]})
    record = run(assistant, task(GOLD))
    data = json.loads(json.dumps(record.to_dict()))
    assert data["messages"][1]["tool_steps"][0]["calls"][1]["ok"] is False
    assert data["messages"][1]["tool_steps"][1]["calls"][0]["raw"] == "{oops"
    assert data["final_state_hash"] == record.final_state_hash and data["task_score"]["passed"] is False
    again = SimulatedConversation.from_dict(data)
    assert again.to_dict() == record.to_dict() and again.messages[1].tool_steps == record.messages[1].tool_steps
    plain = SimulatedConversation.from_dict({**data, "messages": [data["messages"][0]], "user_turns": 1})
    plain.final_state_hash = plain.task_score = None
    assert "final_state_hash" not in plain.to_dict() and "tool_steps" not in plain.to_dict()["messages"][0]


def test_simulate_runs_tool_scenarios_with_a_scripted_assistant(tmp_path):
    scenarios = tmp_path / "tasks.jsonl"
    rows = [task(GOLD, outputs=["a is now 2"], id="good").to_dict(),
            task([{"name": "add", "arguments": {"name": "a", "amount": 5}}], id="other").to_dict()]
    scenarios.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "assistant.json").write_text(json.dumps({
        '"value": 3': "Done: a is now 2.",
        "*": calls(("add", {"name": "a", "amount": 2}), ("add", {"name": "b", "amount": 3}))}))
    (tmp_path / "user.json").write_text(json.dumps(["Please raise a by 2 and b by 3."]))
    config = SimulationConfig(assistant=f"scripted:{tmp_path / 'assistant.json'}",
                              user=f"scripted:{tmp_path / 'user.json'}", scenarios=str(scenarios), max_user_turns=1,
                              max_tool_calls_per_turn=4)
    simulate(config, tmp_path / "run")
    records, _ = read_records(tmp_path / "run" / "conversations.jsonl")
    by_id = {r.scenario_id: r for r in records}
    assert by_id["good"].solved is True and by_id["other"].solved is False
    assert len(by_id["good"].messages[-1].tool_steps) == 1
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["max_tool_calls_per_turn"] == 4


def test_a_tiny_hf_assistant_runs_a_tool_scenario_reproducibly(tmp_path):
    from userloop.models import load_model
    from userloop.models.tiny import build_tiny_chat_model

    path = build_tiny_chat_model(tmp_path / "assistant", max_positions=2048)  # the tool block takes ~800 tokens
    runs = []
    for _ in range(2):
        record = run(load_model(f"hf:{path}"), task(GOLD), user_turns=2)
        runs.append(([(m.role, m.content, [s.to_dict() for s in m.tool_steps]) for m in record.messages],
                     record.final_state_hash, record.end_reason, record.tokens["assistant"].prompt))
    assert runs[0] == runs[1] and runs[0][2] == "max_turns"
    assert runs[0][3] > 2 * 700  # every request carried the tools (a system block: the tiny template takes none)
