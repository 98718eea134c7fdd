import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

# A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so would the
# commands the Ctrl-C tests start: take Python's usual handler back (a child execs with the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def wide_cli() -> CliRunner:
    """A CliRunner whose rich output (tables, --help) is laid out 500 columns wide, so a test that reads it
    does not depend on the terminal's width or the length of a temp path. Only for tests of that layout:
    every other test asserts on --json output, result files or the plain lines typer.echo writes."""
    return CliRunner(env={"COLUMNS": "500"})


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder (``../shared/data`` beside the repository root)."""
    assert SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA} (expected ../shared/data beside the repo)"
    return SHARED_DATA
