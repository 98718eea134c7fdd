import orjson
from typer.testing import CliRunner

from userloop.cli import app
from userloop.testbed import read_truth

runner = CliRunner()


def test_generate_writes_conversations_truth_and_summary(tmp_path):
    out = tmp_path / "tb"
    result = runner.invoke(app, ["testbed", "generate", "--users", "30", "--seed", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 30 users" in result.output
    users, conversations = read_truth(out)
    assert len(users) == 30
    lines = (out / "conversations.jsonl").read_bytes().splitlines()
    assert len(lines) == len(conversations) == orjson.loads((out / "summary.json").read_bytes())["conversations"]


def test_generate_rejects_zero_users_in_one_line(tmp_path):
    result = runner.invoke(app, ["testbed", "generate", "--users", "0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: the number of users must be at least 1"]


def test_data_commands_default_to_the_testbed(tmp_path, monkeypatch):
    monkeypatch.setattr("userloop.testbed.default.DEFAULT_USERS", 40)
    monkeypatch.setenv("USERLOOP_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["data", "stats", "--json"])
    assert result.exit_code == 0, result.output
    assert "using the built-in testbed" in result.output
    prepared = next((tmp_path / "cache").glob("testbed-*/prepared"))
    assert (prepared / "report.json").is_file() and (prepared / "train.parquet").is_file()
    result = runner.invoke(app, ["data", "prepare", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert "0 bad lines" in result.output


def test_prepare_reads_a_testbed_folder_as_its_conversations(tmp_path):
    out = tmp_path / "tb"
    assert runner.invoke(app, ["testbed", "generate", "--users", "25", "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["data", "prepare", str(tmp_path), "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    n = len((out / "conversations.jsonl").read_bytes().splitlines())
    assert f"read {n:,} lines: {n:,} conversations, 0 bad lines" in result.output
