"""The inspect_ai integration: a tiny inspect eval with a userloop user runs end to end offline (inspect's mock
model under test, a scripted user LM), and inspect_ai stays out of ``import userloop``."""

from __future__ import annotations

import json
import subprocess
import sys

from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.log import read_eval_log
from inspect_ai.model import (
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageTool,
    ChatMessageUser,
    ModelOutput,
    ModelUsage,
    get_model,
)
from inspect_ai.tool import ToolCall

from userloop.integrations.inspect import simulated_user, user_view

END = "<|endconversation|>"
INTENT = "You are a user chatting with an assistant language model to plan a weekend trip."
# The user LM, keyed by a substring of the last message: the intent opens, the assistant's replies follow.
USER_SCRIPT = {"plan a weekend trip": "can you help me plan a weekend trip",
               "Reply 1": "somewhere with mountains and lakes", "Reply 2": END,
               "Your persona: a busy parent": "what can we cook tonight quickly", "*": "tell me more about that option"}


def mock_assistant():
    """inspect's mock model as the model under test: 'Reply N: ...' for its N-th reply; it records what it saw."""
    seen = []

    def reply(messages, tools, tool_choice, config):
        seen.append([(m.role, m.text) for m in messages])
        count = sum(1 for m in messages if m.role == "user")
        output = ModelOutput.from_content(model="mockllm", content=f"Reply {count}: here is an idea.")
        output.usage = ModelUsage(input_tokens=5, output_tokens=5, total_tokens=10)  # no tokenizer download
        return output

    return get_model("mockllm/model", custom_outputs=reply), seen


def test_an_inspect_eval_with_a_userloop_user_runs_offline(tmp_path):
    script = tmp_path / "user.json"
    script.write_text(json.dumps(USER_SCRIPT))
    samples = [Sample(id="trip", input=INTENT),
               Sample(id="recipe", input="(not sent to the model under test)",
                      metadata={"intent": "You are a user chatting with an assistant language model to find a recipe.",
                                "persona": "a busy parent"})]
    ending = Task(name="ending", dataset=samples, solver=simulated_user(f"scripted:{script}", max_turns=6))
    capped = Task(name="capped", dataset=samples[:1], solver=simulated_user(f"scripted:{script}", max_turns=1))
    limited = Task(name="limited", dataset=samples[:1], solver=simulated_user(f"scripted:{script}"), message_limit=3)
    model, seen = mock_assistant()
    logs = eval([ending, capped, limited], model=model, log_dir=str(tmp_path / "logs"), display="none")
    assert [log.status for log in logs] == ["success"] * 3
    ending_log, capped_log, limited_log = (read_eval_log(log.location) for log in logs)  # what the log files hold

    trip, recipe = sorted(ending_log.samples, key=lambda s: s.id != "trip")
    assert [(m.role, m.text) for m in trip.messages] == [
        ("user", "can you help me plan a weekend trip"), ("assistant", "Reply 1: here is an idea."),
        ("user", "somewhere with mountains and lakes"), ("assistant", "Reply 2: here is an idea.")]
    assert trip.metadata["userloop"] == {"end_reason": "user_ended", "user_turns": 2, "user": f"scripted:{script}",
                                         "end_events": []}
    assert all(m.metadata["userloop"] == {"events": [], "ended": False} for m in trip.messages if m.role == "user")
    assert recipe.messages[0].text == "what can we cook tonight quickly"  # the persona reached the user LM
    assert recipe.metadata["userloop"]["end_reason"] == "user_ended" and recipe.metadata["persona"] == "a busy parent"
    info = [e.data for e in trip.events if e.event == "info" and e.source == "userloop"]
    assert info == [trip.metadata["userloop"]]
    assert all("(not sent" not in text for conversation in seen for _, text in conversation)

    [capped_sample] = capped_log.samples
    assert capped_sample.metadata["userloop"]["end_reason"] == "max_turns"
    assert [m.role for m in capped_sample.messages] == ["user", "assistant"]
    [limited_sample] = limited_log.samples
    assert limited_sample.metadata["userloop"]["end_reason"] == "limit"  # inspect's message limit stopped it


def test_the_user_sees_text_turns_only():
    messages = [ChatMessageSystem(content="You are a travel agent."), ChatMessageUser(content="plan a trip"),
                ChatMessageAssistant(content="", tool_calls=[ToolCall(id="1", function="search", arguments={})]),
                ChatMessageTool(content="{}", tool_call_id="1"), ChatMessageAssistant(content="Where to?")]
    assert user_view(messages) == [{"role": "user", "content": "plan a trip"},
                                   {"role": "assistant", "content": "Where to?"}]


def test_inspect_ai_is_imported_only_by_the_integration():
    code = ("import sys, userloop, userloop.cli, userloop.userlm.simulator; assert 'inspect_ai' not in sys.modules\n"
            "sys.modules['inspect_ai'] = None\n"
            "try:\n    import userloop.integrations.inspect\n"
            "except Exception as err:\n    print(type(err).__name__, err)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "UserError this needs the 'inspect-ai' package: pip install 'userloop[inspect]'"
