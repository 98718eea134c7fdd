"""Fixtures for the model tests: a tiny chat checkpoint, `userloop serve` on 127.0.0.1, a faulty server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from model_helpers import END_CONVERSATION, FaultServer, Served, uvicorn_server


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A tiny random Llama chat checkpoint (Llama-3-style template) with <|endconversation|> added."""
    from userloop.models.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model", extra_special_tokens=[END_CONVERSATION])


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """The tiny checkpoint loaded once through the hf provider (shared: reset counters before counting)."""
    from userloop.models import load_model

    return load_model(f"hf:{tiny_model_path}")


@pytest.fixture(scope="session")
def served_tiny(tiny_model_path) -> Iterator[Served]:
    """``userloop serve``'s app for the tiny model (its own model instance) as 'tiny', key 'test-key'."""
    from userloop.models import load_model
    from userloop.models.serve import build_app

    model = load_model(f"hf:{tiny_model_path}")
    with uvicorn_server(build_app(model, "tiny", api_key="test-key")) as url:
        yield Served(url, model)


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    yield server
    server.stop()


@pytest.fixture
def write_json(tmp_path) -> Callable[[object], Path]:
    def write(data: object, name: str = "script.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return path

    return write
