"""Tools with ``hf:`` models: the chat template's own tool support or a system-prompt block, and calls read
from the generated text."""

from __future__ import annotations

import pytest

from userloop.models import Choice, GenerationParams, ToolCall, load_model
from userloop.models.tools import TOOL_BLOCK_INTRO, calls_in_text

TOOLS = [{"type": "function", "function": {"name": "find_order", "parameters": {"type": "object"}}}]
CONVERSATION = [
    {"role": "user", "content": "Where is it?"},
    {"role": "assistant", "content": "", "tool_calls": [ToolCall("c1", "find_order", {"order_id": 7}).to_message()]},
    {"role": "tool", "tool_call_id": "c1", "name": "find_order", "content": '{"status": "shipped"}'},
]
# a template that reads `tools` and writes each call's arguments as JSON (transformers' shape: a dict)
TOOL_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|start_header_id|>system<|end_header_id|>\n\nTOOLS {{ tools | tojson }}<|eot_id|>"
    "{% endif %}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}{% for call in message.get('tool_calls') or [] %}"
    "CALL {{ call['function']['name'] }} {{ call['function']['arguments'] | tojson }}{% endfor %}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def prompt_text(model, messages, tools=None) -> str:
    return model.tokenizer.decode(model.prompt_ids(messages, 4, tools), skip_special_tokens=False)


@pytest.mark.parametrize(("text", "rest", "calls"), [
    ('Let me look.\n<tool_call>\n{"name": "find_order", "arguments": {"order_id": 7}}\n</tool_call>', "Let me look.",
     (ToolCall("call_0", "find_order", {"order_id": 7}),)),
    ('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": "{\\"x\\": 1}"}',
     "", (ToolCall("call_0", "a", {}), ToolCall("call_1", "b", {"x": 1}))),  # an unclosed last block counts
    ('{"name": "find_order", "parameters": {"order_id": 7}}', "", (ToolCall("call_0", "find_order", {"order_id": 7}),)),
    ("<tool_call>find_order(7)</tool_call>", "", (ToolCall("call_0", "", {}, "find_order(7)"),)),
    ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "", (ToolCall("call_0", "f", {}, "[1]"),)),
    ('{"name": "find_order"}', '{"name": "find_order"}', ()),  # no arguments: text, not a call
    ("It has shipped.", "It has shipped.", ()),
])
def test_calls_are_read_from_the_text(text, rest, calls):
    assert calls_in_text(text) == (rest, calls)


def test_a_template_without_tools_gets_a_system_block(tiny_model):
    assert not tiny_model.template_takes_tools
    text = prompt_text(tiny_model, CONVERSATION, TOOLS)
    assert text.index(TOOL_BLOCK_INTRO) < text.index("Where is it?")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert '<tool_call>\n{"name": "find_order", "arguments": {"order_id": 7}}\n</tool_call>' in text
    assert '<|start_header_id|>tool<|end_header_id|>\n\n{"status": "shipped"}' in text
    with_system = prompt_text(tiny_model, [{"role": "system", "content": "Be kind."}, *CONVERSATION], TOOLS)
    assert with_system.count("<|start_header_id|>system") == 1 and "Be kind.\n\n# Tools" in with_system
    assert TOOL_BLOCK_INTRO not in prompt_text(tiny_model, CONVERSATION[:1])


def test_a_template_that_takes_tools_gets_them(tmp_path):
    from userloop.models.tiny import build_tiny_chat_model

    model = load_model(f"hf:{build_tiny_chat_model(tmp_path / 'tools', chat_template=TOOL_TEMPLATE)}")
    assert model.template_takes_tools
    text = prompt_text(model, CONVERSATION, TOOLS)
    assert 'TOOLS [{"type": "function", "function": {"name": "find_order"' in text and TOOL_BLOCK_INTRO not in text
    assert 'CALL find_order {"order_id": 7}' in text  # arguments as a dict, not JSON text


def test_generated_calls_become_tool_calls_only_when_tools_were_given(tiny_model_path, monkeypatch):
    model = load_model(f"hf:{tiny_model_path}")
    written = '<tool_call>{"name": "find_order", "arguments": {"order_id": 7}}</tool_call>'
    monkeypatch.setattr(model, "_choice", lambda tokens, stop: Choice(written, "stop", 3))
    params = GenerationParams(max_new_tokens=4)
    [with_tools] = model.generate([CONVERSATION[:1]], params, tools=TOOLS)
    assert with_tools.text == "" and with_tools.tool_calls == (ToolCall("call_0", "find_order", {"order_id": 7}),)
    [without] = model.generate([CONVERSATION[:1]], params)
    assert without.text == written and without.tool_calls == ()
