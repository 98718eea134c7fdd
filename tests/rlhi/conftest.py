from pathlib import Path

import pytest

from userloop.rlhi import followup_classifier
from userloop.testbed import generate

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def trained_classifier():
    """The offline classifier trained as the default one, on a small population (seed 11, kept apart from
    the held-out ones) plus the hand-made development set."""
    from userloop.rlhi.followup_classifier import read_handmade, train

    return train(generate(200, seed=11), read_handmade())


@pytest.fixture(scope="session")
def held_out():
    return generate(60, seed=3)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A small testbed (40 users), prepared (splits by user), with its truth beside the raw conversations."""
    from userloop.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("testbed")
    generate(40, seed=3).write(root / "raw")
    prepare([str(root / "raw" / "conversations.jsonl")], root / "prepared", PrepareConfig())
    return root / "prepared"


@pytest.fixture
def small_classifier(monkeypatch, trained_classifier):
    """Make the pipeline use the small classifier instead of training (or reading) the cached default one,
    and a small training population where one is generated (the dev-set cross-validation of ``rlhi evaluate``)."""

    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained_classifier)
    monkeypatch.setattr(followup_classifier, "TRAIN_USERS", 40)
    return trained_classifier


@pytest.fixture(scope="session")
def oasst_dir(shared_data) -> Path:
    return shared_data / "oasst"
