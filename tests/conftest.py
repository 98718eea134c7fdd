from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder (``../shared/data`` beside the repository root)."""
    assert SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA} (expected ../shared/data beside the repo)"
    return SHARED_DATA
