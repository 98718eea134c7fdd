import pytest

from userloop.testbed import generate


@pytest.fixture(scope="session")
def population():
    """A small population shared by the testbed tests (deterministic: seed 7)."""
    return generate(400, seed=7)
