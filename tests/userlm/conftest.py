"""Fixtures for the user-LM tests: a tiny UserLM-8b look-alike and a small prepared testbed."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def userlm_path(tmp_path_factory) -> Path:
    """A tiny random checkpoint laid out like microsoft/UserLM-8b."""
    from userloop.userlm.template import build_userlm_lookalike

    return build_userlm_lookalike(tmp_path_factory.mktemp("userlm") / "model")


@pytest.fixture(scope="session")
def userlm_tokenizer(userlm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(userlm_path)


@pytest.fixture(scope="session")
def prepared_testbed(tmp_path_factory) -> Path:
    """A prepared folder (train/validation/test Parquet) of a 60-user testbed population."""
    from userloop.data.prepare import PrepareConfig, prepare
    from userloop.testbed import generate

    root = tmp_path_factory.mktemp("testbed")
    raw = generate(60, seed=3).write(root / "raw")
    prepare([str(raw / "conversations.jsonl")], root / "prepared", PrepareConfig())
    return root / "prepared"


@pytest.fixture(scope="session")
def testbed_conversations(prepared_testbed):
    from userloop.conversation import read_parquet

    return list(read_parquet(prepared_testbed / "train.parquet"))
