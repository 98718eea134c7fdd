"""GenerationParams validation, conversation checks, the registry's spec strings and its errors."""

from __future__ import annotations

import asyncio
import sys

import pytest

from userloop.conversation import Message
from userloop.errors import UserError
from userloop.models import GenerationParams, load_model
from userloop.models.base import chat_messages, cut_at_stop
from userloop.models.mock import MockModel
from userloop.models.registry import PROVIDERS, parse_spec


# --------------------------------------------------------------------------- GenerationParams
def test_params_defaults_and_normalisation():
    params = GenerationParams(stop=["\n", "User:"], banned_tokens="I", logit_bias={5: -100, "3": 2})
    assert params.stop == ("\n", "User:")
    assert params.banned_tokens == ("I",)
    assert params.logit_bias == ((3, 2.0), (5, -100.0))
    assert params.temperature is None and params.top_p is None and params.n == 1
    assert hash(params) == hash(GenerationParams(stop=("\n", "User:"), banned_tokens=("I",), logit_bias={3: 2, 5: -100}))


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"n": 0}, "n must"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": "7"}, "seed"),
    ({"stop": [""]}, "stop"),
    ({"stop": [3]}, "stop"),
    ({"banned_first_tokens": [None]}, "banned_first_tokens"),
    ({"logit_bias": {"a": 1}}, "logit_bias"),
    ({"logit_bias": {1: 101}}, "logit_bias"),
    ({"logit_bias": {-1: 1}}, "logit_bias"),
])
def test_params_validation(fields, fragment):
    with pytest.raises(UserError, match=fragment):
        GenerationParams(**fields)


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("a STOP b END c", ("END", "STOP")) == ("a ", True)
    assert cut_at_stop("nothing here", ("END",)) == ("nothing here", False)


# --------------------------------------------------------------------------- conversations
def test_chat_messages_accepts_messages_and_dicts():
    assert chat_messages([Message("system", "be brief"), {"role": "user", "content": "hi", "name": "x"}]) == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


@pytest.mark.parametrize("conversation", [[], "hello", [{"role": "user"}], [{"role": "", "content": "x"}],
                                          [{"role": "user", "content": 3}], [("user", "hi")], {"role": "user"}])
def test_chat_messages_rejects(conversation):
    with pytest.raises(UserError):
        chat_messages(conversation)


# --------------------------------------------------------------------------- registry
def test_parse_spec():
    assert parse_spec("hf:org/model") == ("hf", "org/model")
    assert parse_spec("openai:gpt@http://h:1/v1") == ("openai", "gpt@http://h:1/v1")


@pytest.mark.parametrize("spec", ["gpt-4o", "foo:bar", "HF:x", "", "/tmp/model"])
def test_unknown_prefix_lists_the_known_ones(spec):
    with pytest.raises(UserError) as err:
        parse_spec(spec)
    message = str(err.value)
    assert all(f"{prefix}:" in message for prefix in PROVIDERS) and "\n" not in message


def test_empty_target():
    with pytest.raises(UserError, match="names no model"):
        load_model("hf:  ")


def test_unknown_option(write_json):
    with pytest.raises(UserError, match="no option 'device'"):
        load_model(f"scripted:{write_json(['x'])}", device="cpu")


def test_vllm_missing_gives_one_install_line():
    if "vllm" in sys.modules or _installed("vllm"):
        pytest.skip("vllm is installed here")
    with pytest.raises(UserError) as err:
        load_model("vllm:some/model")
    message = str(err.value)
    assert "pip install 'userloop[vllm]'" in message and "openai:" in message and "\n" not in message


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_providers_are_imported_lazily():
    import subprocess

    code = ("import sys, userloop.models as m; print(','.join(x for x in "
            "('torch', 'transformers', 'openai', 'fastapi', 'uvicorn', 'userloop.models.hf') if x in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_missing_dependency_hint(monkeypatch):
    """A provider whose library is missing names the package and the extra to install."""
    import importlib

    for name in ("userloop.models.openai_compatible", "openai"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    with pytest.raises(UserError, match=r"'openai' package: pip install 'userloop\[openai\]'"):
        importlib.import_module("userloop.models.openai_compatible")
    monkeypatch.delitem(sys.modules, "userloop.models.openai_compatible", raising=False)


# --------------------------------------------------------------------------- the base class
def echo_model() -> MockModel:
    return MockModel("echo", replies=lambda messages, **settings: messages[-1]["content"])


def test_generate_wraps_agenerate_and_releases():
    model = echo_model()
    [completion] = model.generate([[{"role": "user", "content": "hi"}]])
    assert completion.text == "hi" and completion.finish_reason == "stop" and model.closed == 1
    assert model.generate([]) == []


def test_generate_inside_a_loop_is_refused():
    async def main():
        with pytest.raises(RuntimeError, match="agenerate"):
            echo_model().generate([[{"role": "user", "content": "hi"}]])

    asyncio.run(main())


def test_unsupported_params_are_rejected_not_ignored():
    with pytest.raises(UserError, match="cannot enforce banned_tokens"):
        echo_model().generate([[{"role": "user", "content": "hi"}]], GenerationParams(banned_tokens=["I"]))
    with pytest.raises(UserError, match="cannot enforce logit_bias"):
        echo_model().generate([[{"role": "user", "content": "hi"}]], GenerationParams(logit_bias={1: 1}))


def test_async_context_manager_closes():
    model = echo_model()

    async def main():
        async with model as entered:
            assert entered is model

    asyncio.run(main())
    assert model.closed == 1
