"""Tool calls through the model interface: ``openai:`` (a fake server on 127.0.0.1), ``mock`` and ``scripted:``."""

from __future__ import annotations

import json

import pytest

from userloop.errors import UserError
from userloop.models import Capabilities, ModelError, ToolCall, load_model
from userloop.models.base import chat_messages
from userloop.models.mock import MockModel

HELLO = [{"role": "user", "content": "Where is order 7?"}]
TOOLS = [{"type": "function", "function": {"name": "find_order", "description": "Look an order up",
                                           "parameters": {"type": "object",
                                                          "properties": {"order_id": {"type": "integer"}}}}}]


def tool_reply(tool_calls, content=None) -> dict:
    return {"id": "x", "choices": [{"index": 0, "finish_reason": "tool_calls",
                                    "message": {"role": "assistant", "content": content, "tool_calls": tool_calls}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5}}


def call(name="find_order", arguments='{"order_id": 7}', id="call_a") -> dict:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def openai_model(server):
    return load_model(f"openai:m@{server.url}", timeout=5, backoff_base=0.01, backoff_max=0.05)


# --------------------------------------------------------------------------- openai:
def test_openai_sends_tools_and_reads_tool_calls(fault_server):
    fault_server.script = [tool_reply([call(), call("cancel_order", '{"order_id": 7, "reason": "late"}', "b")])]
    [completion] = openai_model(fault_server).generate([HELLO], tools=TOOLS)
    assert fault_server.requests[0]["body"]["tools"] == TOOLS
    assert completion.text == "" and completion.finish_reason == "tool_calls"  # "content": null with calls
    assert completion.tool_calls == (ToolCall("call_a", "find_order", {"order_id": 7}),
                                     ToolCall("b", "cancel_order", {"order_id": 7, "reason": "late"}))


def test_openai_without_tools_sends_none(fault_server):
    [completion] = openai_model(fault_server).generate([HELLO])
    assert "tools" not in fault_server.requests[0]["body"] and completion.tool_calls == ()


@pytest.mark.parametrize("arguments", ['{"order_id": 7', "[1, 2]", '"seven"', "not json"])
def test_openai_arguments_that_are_not_a_json_object_are_kept_raw(fault_server, arguments):
    fault_server.script = [tool_reply([call(arguments=arguments, id="")], content="Looking.")]
    [completion] = openai_model(fault_server).generate([HELLO], tools=TOOLS)
    assert completion.text == "Looking."
    assert completion.tool_calls == (ToolCall("call_0", "find_order", {}, arguments),)


@pytest.mark.parametrize(("tool_calls", "fragment"), [
    ("find_order", "'tool_calls' that are not a list"),
    ([{"id": "a"}], "a tool call without a function name"),
    ([{"id": "a", "function": {"arguments": "{}"}}], "a tool call without a function name"),
])
def test_openai_tool_calls_that_are_not_calls_are_one_model_error(fault_server, tool_calls, fragment):
    fault_server.script = [tool_reply(tool_calls)]
    with pytest.raises(ModelError, match=fragment):
        openai_model(fault_server).generate([HELLO], tools=TOOLS)


def test_openai_sends_tool_messages_in_openai_shape(fault_server):
    called = ToolCall("c1", "find_order", {"order_id": 7})
    conversation = [*HELLO, {"role": "assistant", "content": "", "tool_calls": [called]},
                    {"role": "tool", "tool_call_id": "c1", "name": "find_order", "content": '{"status": "shipped"}'}]
    openai_model(fault_server).generate([conversation], tools=TOOLS)
    sent = fault_server.requests[0]["body"]["messages"]
    assert sent[1] == {"role": "assistant", "content": "", "tool_calls": [call(arguments='{"order_id": 7}', id="c1")]}
    assert sent[2] == conversation[2]


# --------------------------------------------------------------------------- the interface
def test_a_model_without_tool_support_rejects_tools():
    model = MockModel(supports=Capabilities())
    with pytest.raises(UserError, match="cannot call tools"):
        model.generate([HELLO], tools=TOOLS)


@pytest.mark.parametrize("tools", [{"name": "x"}, [{"name": "x"}], [{"type": "function", "function": {}}]])
def test_tools_that_are_not_function_schemas_are_one_error(tools):
    with pytest.raises(UserError, match="tool"):
        MockModel().generate([HELLO], tools=tools)


def test_chat_messages_keep_tool_fields_only_where_they_belong():
    messages = chat_messages([{"role": "user", "content": "x", "name": "ann"},
                              {"role": "assistant", "content": "",
                               "tool_calls": [{"name": "f", "arguments": {"a": 1}}]},
                              {"role": "tool", "tool_call_id": "", "name": "f", "content": "1"}])
    assert messages[0] == {"role": "user", "content": "x"}
    assert messages[1]["tool_calls"] == [{"id": "", "type": "function",
                                          "function": {"name": "f", "arguments": '{"a": 1}'}}]
    with pytest.raises(UserError, match="tool message needs a string 'tool_call_id'"):
        chat_messages([{"role": "tool", "content": "1", "name": "f"}])


# --------------------------------------------------------------------------- mock and scripted
def test_mock_replies_may_call_tools():
    seen = []

    def reply(messages, **settings):
        seen.append(settings.get("tools"))
        return {"content": "One moment.", "tool_calls": [{"name": "find_order", "arguments": {"order_id": 7}},
                                                          {"name": "find_order", "arguments": "{oops", "id": "z"}]}

    [completion] = MockModel(replies=reply).generate([HELLO], tools=TOOLS)
    assert seen == [TOOLS] and completion.text == "One moment."
    assert completion.tool_calls == (ToolCall("call_0", "find_order", {"order_id": 7}),
                                     ToolCall("z", "find_order", {}, "{oops"))
    MockModel(replies=reply).generate([HELLO])
    assert seen[-1] is None  # no tools given: the reply function is not told about any


@pytest.mark.parametrize("reply", [{"text": "x"}, {"tool_calls": "f"}, {"tool_calls": [{"arguments": {}}]},
                                   {"content": 3}])
def test_a_malformed_tool_calling_reply_is_one_error(reply):
    with pytest.raises(UserError):
        MockModel(replies=[reply])


def test_scripted_replies_may_call_tools(tmp_path):
    script = tmp_path / "assistant.json"
    script.write_text(json.dumps({"shipped": "It has shipped.",
                                  "*": {"tool_calls": [{"name": "find_order", "arguments": {"order_id": 7}}]}}))
    model = load_model(f"scripted:{script}")
    first, second = model.generate([HELLO, [{"role": "user", "content": '{"status": "shipped"}'}]], tools=TOOLS)
    assert first.text == "" and first.tool_calls == (ToolCall("call_0", "find_order", {"order_id": 7}),)
    assert second.text == "It has shipped." and second.tool_calls == ()


def test_scripted_file_with_a_malformed_tool_reply_is_one_error(tmp_path):
    script = tmp_path / "assistant.json"
    script.write_text(json.dumps([{"tool_calls": [{"arguments": {}}]}]))
    with pytest.raises(UserError, match="at least one reply"):
        load_model(f"scripted:{script}")
