"""The ``userloop`` command line: data synthetic / prepare / stats, errors, and import weight."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from userloop import __version__
from userloop.cli import app
from userloop.conversation import read_parquet
from userloop.data.synthetic import write_wildchat
from userloop.data.users import SPLIT_NAMES

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def assert_user_error(result, *fragments: str) -> str:
    """Exit status 2, exactly one line on stderr, starting with 'error:', and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def synthetic_file(tmp_path) -> Path:
    return write_wildchat(tmp_path / "synthetic.jsonl", 300, seed=2)


@pytest.fixture
def bad_line_file(tmp_path) -> Path:
    path = tmp_path / "with_bad_line.jsonl"
    path.write_bytes(b'{"messages": [{"role": "user", "content": "hello there"}], "id": "a"}\n'
                     b"{this is not json\n"
                     b'{"messages": [{"role": "user", "content": "bye now"}], "id": "b"}\n')
    return path


# --------------------------------------------------------------------------- synthetic
def test_data_synthetic(tmp_path):
    out = tmp_path / "syn.jsonl"  # in an existing folder: a missing one is an error (tests/test_cli_errors.py)
    result = ok("data", "synthetic", "--out", out, "--n", 40, "--seed", 7)
    assert "40" in result.stdout and str(out) in result.stdout
    lines = out.read_bytes().splitlines()
    assert len(lines) == 40
    assert all("conversation" in orjson.loads(line) for line in lines)
    # deterministic: the same as the library function with the same seed
    assert out.read_bytes() == write_wildchat(tmp_path / "lib.jsonl", 40, seed=7).read_bytes()


def test_data_synthetic_gzip(tmp_path):
    out = tmp_path / "syn.jsonl.gz"
    ok("data", "synthetic", "-o", out, "--n", 5)
    import gzip

    assert len(gzip.decompress(out.read_bytes()).splitlines()) == 5


def test_data_synthetic_rejects_zero(tmp_path):
    assert_user_error(invoke("data", "synthetic", "-o", tmp_path / "x.jsonl", "--n", 0), "--n")
    assert not (tmp_path / "x.jsonl").exists()


# --------------------------------------------------------------------------- prepare
def test_data_prepare_synthetic(tmp_path, synthetic_file):
    out = tmp_path / "prepared"
    result = ok("data", "prepare", synthetic_file, "--out", out)
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["lines"]["lines_read"] == 300
    assert report["conversations"]["read"] == 300
    assert report["conversations"]["dropped"]["language"] > 0  # English by default
    assert report["config"]["language"] == "English"
    rows = {s: list(read_parquet(out / f"{s}.parquet")) for s in SPLIT_NAMES}
    assert sum(map(len, rows.values())) == report["conversations"]["kept"] > 0
    for name in SPLIT_NAMES:
        assert len(rows[name]) == report["splits"][name]["conversations"]
    assert "300 conversations" in result.stdout
    assert "dropped:" in result.stdout and "kept:" in result.stdout and str(out) in result.stdout


def test_data_prepare_flags_reach_the_config(tmp_path, synthetic_file):
    out = tmp_path / "prepared"
    ok("data", "prepare", synthetic_file, "-o", out, "--language", "any", "--keep-toxic", "--drop-redacted",
       "--no-near-dedupe", "--no-exact-dedupe", "--splits", "80/10/10", "--seed", 3, "--user-identity", "user",
       "--min-user-turns", 2, "--max-user-turns", 5, "--max-turn-chars", 2000, "--format", "wildchat")
    report = orjson.loads((out / "report.json").read_bytes())
    config = report["config"]
    assert config["language"] in (None, "any")
    assert (config["drop_toxic"], config["drop_redacted"], config["near_dedupe"], config["exact_dedupe"]) == (
        False, True, False, False)
    assert (config["splits"], config["seed"], config["user_identity"]) == ("80/10/10", 3, "user")
    assert (config["min_user_turns"], config["max_user_turns"], config["max_turn_chars"]) == (2, 5, 2000)
    dropped = report["conversations"]["dropped"]
    assert dropped["language"] == dropped["toxic"] == dropped["near_duplicate"] == dropped["exact_duplicate"] == 0
    assert dropped["redacted"] > 0 and dropped["too_few_user_turns"] > 0
    assert report["near_dedupe"] is None


def test_data_prepare_oasst(tmp_path, shared_data):
    src = shared_data / "oasst" / "en_100_tree.jsonl"
    out = tmp_path / "oasst"
    result = ok("data", "prepare", src, "-o", out, "--language", "en")
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["formats"] == {str(src): "oasst"}
    assert report["lines"]["records_parsed"] == 100 and report["lines"]["bad_lines"] == 0
    assert report["conversations"]["dropped"]["synthetic"] > 0
    assert report["conversations"]["kept"] > 0
    kept = [c for s in SPLIT_NAMES for c in read_parquet(out / f"{s}.parquet")]
    assert len(kept) == report["conversations"]["kept"]
    assert all(c.source == "oasst" and c.language == "English" for c in kept)
    assert "kept:" in result.stdout


def test_data_prepare_reports_bad_lines(tmp_path, bad_line_file):
    out = tmp_path / "out"
    result = ok("data", "prepare", bad_line_file, "-o", out, "--language", "any")
    assert "1 bad lines" in result.stdout and "bad_lines.jsonl" in result.stdout
    bad = [orjson.loads(line) for line in (out / "bad_lines.jsonl").read_bytes().splitlines()]
    assert [(b["file"], b["line"]) for b in bad] == [(str(bad_line_file), 2)]


# --------------------------------------------------------------------------- stats
def test_data_stats_json_on_input(synthetic_file):
    result = ok("data", "stats", synthetic_file, "--json")
    summary = orjson.loads(result.stdout)
    assert list(summary) == ["all"]
    s = summary["all"]
    assert s["conversations"] == 300 and s["lines_read"] == 300 and s["bad_lines"] == 0
    assert s["sources"] == {"wildchat": 300}
    assert 0 < s["users"] <= 300
    assert sum(s["languages"].values()) == 300
    assert s["user_turns_per_conversation"]["max"] >= s["user_turns_per_conversation"]["median"] >= 1


def test_data_stats_counts_bad_lines(bad_line_file):
    summary = orjson.loads(ok("data", "stats", bad_line_file, "--json").stdout)
    assert summary["all"]["conversations"] == 2
    assert summary["all"]["bad_lines"] == 1 and summary["all"]["lines_read"] == 3


def test_data_stats_on_prepared_folder(tmp_path, synthetic_file, wide_cli):
    out = tmp_path / "prepared"
    ok("data", "prepare", synthetic_file, "-o", out, "--language", "any", "--splits", "60/20/20")
    report = orjson.loads((out / "report.json").read_bytes())
    summary = orjson.loads(ok("data", "stats", out, "--json").stdout)
    assert list(summary) == list(SPLIT_NAMES)
    for name in SPLIT_NAMES:
        assert summary[name]["conversations"] == report["splits"][name]["conversations"]
        assert summary[name]["users"] == report["splits"][name]["users"]
        assert summary[name]["bad_lines"] == 0
    table = wide_cli.invoke(app, ["data", "stats", str(out)]).stdout
    for name in SPLIT_NAMES:
        assert f"{name}: {report['splits'][name]['conversations']:,} conversations" in table


def test_data_stats_table(synthetic_file, wide_cli):
    result = wide_cli.invoke(app, ["data", "stats", str(synthetic_file)])
    assert result.exit_code == 0 and "all: 300 conversations" in result.stdout
    assert "user turns per conversation" in result.stdout


def test_data_stats_several_inputs(tmp_path, synthetic_file, bad_line_file):
    summary = orjson.loads(ok("data", "stats", synthetic_file, bad_line_file, "--json").stdout)
    assert summary["all"]["conversations"] == 302


def test_data_stats_shared_oasst(shared_data):
    summary = orjson.loads(ok("data", "stats", shared_data / "oasst" / "en_100_tree.jsonl", "--json").stdout)
    assert summary["all"]["sources"] == {"oasst": summary["all"]["conversations"]}
    assert summary["all"]["conversations"] >= 100  # every root-to-leaf thread is a conversation


# --------------------------------------------------------------------------- user errors
def test_prepare_missing_input(tmp_path):
    missing = tmp_path / "missing.jsonl"
    assert_user_error(invoke("data", "prepare", missing, "-o", tmp_path / "out"), str(missing))
    assert not (tmp_path / "out").exists()  # reported before any work


def test_missing_relative_path_is_not_taken_for_a_dataset_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # 'sub/missing.jsonl' looks like owner/name but is a file path
    assert_user_error(invoke("data", "stats", "sub/missing.jsonl"), "sub/missing.jsonl", "no such file")
    assert_user_error(invoke("data", "prepare", "sub/missing.parquet", "-o", "out"), "no such file")


def test_stats_missing_input(tmp_path):
    assert_user_error(invoke("data", "stats", tmp_path / "missing.jsonl"), "missing.jsonl")


@pytest.mark.parametrize(("options", "fragment"), [
    (["--splits", "90/5"], "--splits"),
    (["--splits", "a/b/c"], "--splits"),
    (["--format", "csv"], "--format"),
    (["--near-dup-threshold", "0"], "--near-dup-threshold"),
    (["--user-identity", "ip"], "--user-identity"),
    (["--min-user-turns", "5", "--max-user-turns", "2"], "--max-user-turns"),
])
def test_prepare_bad_options(tmp_path, synthetic_file, options, fragment):
    assert_user_error(invoke("data", "prepare", synthetic_file, "-o", tmp_path / "out", *options), fragment)
    assert not (tmp_path / "out").exists()


def test_stats_bad_format(synthetic_file):
    assert_user_error(invoke("data", "stats", synthetic_file, "--format", "csv"), "csv")


def test_prepare_strict_bad_line(tmp_path, bad_line_file):
    line = assert_user_error(invoke("data", "prepare", bad_line_file, "-o", tmp_path / "out", "--strict"),
                             "--strict")
    assert f"{bad_line_file}:2" in line


def test_prepare_requires_out(synthetic_file):
    result = invoke("data", "prepare", synthetic_file)
    assert result.exit_code == 2  # click's usage error
    assert "Traceback" not in result.output


def test_version():
    result = ok("--version")
    assert result.stdout.strip() == f"userloop {__version__}"


def test_help_lists_commands(wide_cli):
    result = wide_cli.invoke(app, ["data", "--help"])
    for command in ("prepare", "stats", "synthetic"):
        assert command in result.stdout
    result = wide_cli.invoke(app, ["data", "prepare", "--help"])
    assert result.exit_code == 0
    for flag in ("--language", "--keep-toxic", "--no-near-dedupe", "--splits", "--strict", "--user-identity"):
        assert flag in result.stdout


# --------------------------------------------------------------------------- process level
HEAVY = ("torch", "transformers", "trl", "datasets", "pyarrow", "pandas")


def test_import_cli_stays_light():
    code = f"import sys, userloop.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_help_imports_none_of_the_modules_behind_the_commands():
    """typer builds every command's options for --help; their help texts come from the config classes'
    source, not from importing the modules (which bring numpy, asyncio, the testbed...)."""
    behind = (*HEAVY, "numpy", "userloop.data.prepare", "userloop.simulate.runs", "userloop.rlhi.loop",
              "userloop.metrics.persona_fidelity", "userloop.testbed")
    code = ("import io, sys, contextlib\nfrom userloop.cli import app\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    app(['--help'])\n"
            f"print(','.join(m for m in {behind!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_options_read_from_the_source_are_the_config_fields():
    """The CLI reads each config's fields (default, help, type) from the module's source: they must be the
    dataclass's own."""
    import importlib
    import re
    from dataclasses import MISSING, fields

    import userloop.cli
    from userloop.cli_options import config_fields

    configs = set(re.findall(r'"(userloop[\w.]+:\w+Config)"', Path(userloop.cli.__file__).read_text()))
    assert len(configs) >= 9, configs
    for config in configs:
        module, _, name = config.partition(":")
        read = config_fields(config)
        for field in fields(getattr(importlib.import_module(module), name)):
            if field.name not in read:
                assert field.default is MISSING or not isinstance(field.default, (str, int, float, bool, type(None))), field
                continue
            assert read[field.name].help == field.metadata["help"], (config, field.name)
            assert read[field.name].default == field.default, (config, field.name)
            assert read[field.name].annotation == field.type, (config, field.name)


def test_help_as_module():
    result = subprocess.run([sys.executable, "-m", "userloop.cli", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "data" in result.stdout


def test_console_script():
    script = Path(sys.executable).parent / "userloop"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "data" in result.stdout
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == f"userloop {__version__}"


def test_dataset_id_needs_the_hf_prefix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a mistyped local folder is never looked up on the Hub
    assert_user_error(invoke("data", "stats", "owner/name"), "owner/name", "hf:owner/name")


def test_an_out_path_that_is_a_file_is_one_line(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("")
    result = runner.invoke(app, ["testbed", "generate", "--users", "3", "--out", str(a_file)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {a_file}: File exists"


# --------------------------------------------------------------------------- --config FILE.yaml
def test_config_file_sets_options_and_flags_override_it(tmp_path, synthetic_file):
    config_file = tmp_path / "prepare.yaml"
    config_file.write_text(f"out: {tmp_path / 'from-file'}\nsplits: 80/10/10\nseed: 3\nmin_user_turns: 2\n"
                           f"drop_toxic: false\ninputs: [{synthetic_file}]\n")
    ok("data", "prepare", "--config", config_file, "--seed", 5, "-o", tmp_path / "prepared")
    config = orjson.loads((tmp_path / "prepared" / "report.json").read_bytes())["config"]
    assert (config["splits"], config["seed"], config["min_user_turns"], config["drop_toxic"]) == ("80/10/10", 5, 2, False)
    assert not (tmp_path / "from-file").exists()


def test_config_file_gives_a_required_option(tmp_path):
    """Required options (--policy, --user) may come from the file: the config is built from it and checked."""
    (tmp_path / "loop.yaml").write_text("policy: hf:no_such_policy_folder\nuser: scripted:no_such_user.json\n")
    result = invoke("rlhi", "loop", "--config", tmp_path / "loop.yaml", "--out", tmp_path / "out")
    assert_user_error(result, "--policy hf:no_such_policy_folder")


@pytest.mark.parametrize(("text", "fragments"), [
    (None, ["--config file not found"]),
    ("seed: [1, 2\n", ["not valid YAML"]),
    ("- seed\n", ["not a mapping"]),
    ("sead: 3\n", ["unknown option sead", "'root data prepare --help'"]),
    ("seed: three\n", ["Invalid value for '--seed'"]),
])
def test_config_file_mistakes_are_one_line(tmp_path, synthetic_file, text, fragments):
    config_file = tmp_path / "prepare.yaml"
    if text is not None:
        config_file.write_text(text)
    assert_user_error(invoke("data", "prepare", synthetic_file, "-o", tmp_path / "out", "--config", config_file), *fragments)


def test_every_long_running_command_takes_a_config_file(wide_cli):
    for command in (["data", "prepare"], ["intents"], ["personas"], ["rlhi", "build"], ["rlhi", "rewards"], ["rlhi", "loop"],
                    ["eval-personal"], ["eval-ppl"], ["simulate"], ["evaluate-assistant"], ["eval-sim"],
                    ["eval-persona-sim"], ["demo"], ["serve"]):
        result = wide_cli.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "--config" in result.stdout, command
