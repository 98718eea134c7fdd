"""Mistakes on the command line are one ``error:`` line and exit 2: bad option values, missing options, output
files in folders that do not exist, user files that are not UTF-8 (issue 24)."""

import json

import pytest
from typer.testing import CliRunner

from userloop.cli import app

runner = CliRunner()


def one_error_line(result) -> str:
    """Exit 2; stderr is one line starting 'error:' (no usage box, no traceback); nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "╭" not in result.output and result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(("args", "fragments"), [
    (["simulate", "--n", "abc"], ["Invalid value for '--n'", "'root simulate --help' lists the options"]),
    (["simulate", "--assistant", "scripted:a.json", "--scenarios", "s.jsonl", "--out", "run"],
     ["Missing option '--user'"]),
    (["data", "prepare", "in.jsonl"], ["Missing option '--out'"]),
    (["data", "synthetic", "--out", "x.jsonl", "--n", "many"], ["Invalid value for '--n'"]),
    (["data", "prepare", "--no-such-flag"], ["No such option: --no-such-flag", "'root data prepare --help'"]),
    (["no-such-command"], ["No such command 'no-such-command'", "'root --help'"]),
])
def test_usage_errors_are_one_line(args, fragments):
    line = one_error_line(runner.invoke(app, args))
    for fragment in fragments:
        assert fragment in line, line


def test_help_and_version_still_work(wide_cli):
    result = wide_cli.invoke(app, ["--help"])
    assert result.exit_code == 0 and "simulate" in result.stdout and result.stderr == ""
    result = wide_cli.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0 and "--scenarios" in result.stdout
    assert runner.invoke(app, ["--version"]).exit_code == 0


def test_an_out_file_in_a_missing_folder_is_an_error_not_a_new_folder(tmp_path):
    missing = tmp_path / "no-such-folder"
    for args in (["data", "synthetic", "--n", "5", "--out", str(missing / "log.jsonl")],
                 ["scenarios", "build", "--source", str(tmp_path / "any.jsonl"), "--out", str(missing / "s.jsonl")],
                 ["personas", "--data", str(tmp_path / "anything.jsonl"), "--out", str(missing / "personas.jsonl")]):
        line = one_error_line(runner.invoke(app, args))
        assert f"--out {missing}" in line and f"mkdir -p {missing}" in line, line
    assert not missing.exists()
    written = runner.invoke(app, ["data", "synthetic", "--n", "5", "--out", str(tmp_path / "log.jsonl")])
    assert written.exit_code == 0 and (tmp_path / "log.jsonl").is_file()


def test_user_files_that_are_not_utf8_are_one_line(tmp_path):
    latin1 = "caf\u00e9".encode("latin-1")
    script = tmp_path / "script.json"
    script.write_bytes(b'["' + latin1 + b'"]')
    history = tmp_path / "history.json"
    history.write_bytes(b'[{"role": "user", "content": "' + latin1 + b'"}, {"role": "assistant", "content": "ok"}]')
    (tmp_path / "user.json").write_text(json.dumps(["a user turn of several words"]))
    cases = [
        (["user-turn", "--user", f"scripted:{script}", "--intent", "You want a recipe."],
         f"scripted model file {script}"),
        (["user-turn", "--user", f"scripted:{tmp_path / 'user.json'}", "--intent", "You want a recipe.",
          "--history", str(history)], f"history file {history}"),
    ]
    for args, fragment in cases:
        line = one_error_line(runner.invoke(app, args))
        assert f"{fragment} is not UTF-8 text" in line, line
