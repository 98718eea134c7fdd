"""Library warnings and logs go to the run's log.txt, not the terminal (userloop.logs.library_log)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings

from userloop.logs import LOG_FILE, library_log


def test_warnings_and_library_logs_go_to_the_file_not_the_terminal(tmp_path, capfd):
    library = logging.getLogger("a_library")  # like transformers: its own console handler, no propagation
    try:
        with library_log(tmp_path / "run") as path:
            console = logging.StreamHandler(sys.stderr)  # installed inside the block, as on a late import
            library.addHandler(console)
            library.propagate = False
            library.warning("a library's own warning")
            warnings.warn("a deprecated argument", FutureWarning, stacklevel=1)
            logging.getLogger("another_library.module").warning("a warning through the root logger")
        assert capfd.readouterr().err == ""
        logged = path.read_text()
        for message in ("a library's own warning", "FutureWarning: a deprecated argument",
                        "a warning through the root logger"):
            assert message in logged, (message, logged)
        library.warning("after the block")  # the library's handler is back on the terminal
        assert "after the block" in capfd.readouterr().err
        assert "after the block" not in path.read_text()
    finally:
        library.handlers.clear()
        library.propagate = True


def test_a_run_without_library_messages_writes_no_log(tmp_path):
    with library_log(tmp_path / "run") as path:
        pass
    assert not path.exists() and not (tmp_path / "run").exists()


# A command whose library call warns the way transformers does: transformers imported inside the command (it
# installs its console handler then), one warning through its logger and one Python FutureWarning.
WARNING_COMMAND = """
import sys, warnings
import userloop.simulate.runs as runs
simulate = runs.simulate

def simulate_with_library_warnings(*args, **kwargs):
    from transformers.utils import logging
    logging.get_logger("transformers.generation").warning("a transformers warning")
    warnings.warn("a deprecated transformers argument", FutureWarning, stacklevel=1)
    return simulate(*args, **kwargs)

runs.simulate = simulate_with_library_warnings
from userloop.cli import main
sys.argv = ["userloop", *sys.argv[1:]]
main()
"""


def test_a_command_writes_library_warnings_to_its_log_not_to_stderr(tmp_path):
    (tmp_path / "user.json").write_text(json.dumps({"*": "<|endconversation|>"}))
    (tmp_path / "assistant.json").write_text(json.dumps({"*": "Here is a poem."}))
    scenarios = tmp_path / "scenarios.jsonl"
    scenarios.write_text(json.dumps({"id": "o1", "kind": "open", "intent": "You want a poem."}) + "\n")
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", WARNING_COMMAND, "simulate", "--user", f"scripted:{tmp_path / 'user.json'}",
         "--assistant", f"scripted:{tmp_path / 'assistant.json'}", "--scenarios", str(scenarios), "--out", str(run)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "transformers" not in result.stderr, result.stderr
    logged = (run / LOG_FILE).read_text()
    assert "a transformers warning" in logged and "FutureWarning: a deprecated transformers argument" in logged
    assert (run / "summary.json").is_file()
