"""evaluate-assistant: the same problems in one fully specified turn vs revealed by a simulated user."""

import json

from typer.testing import CliRunner

from userloop.cli import app
from userloop.simulate.assistant_eval import PAPER_REFERENCE, evaluate_assistant


def test_scores_in_both_settings_and_the_drop(scripted, tmp_path):
    report = evaluate_assistant(scripted["assistant"], scripted["user"], scripted["scenarios"], tmp_path / "eval", n=2)
    math = report["scores"]["math"]
    assert (math["single_turn"]["solved"], math["single_turn"]["scored"]) == (4, 4)  # both problems, fully specified
    assert (math["multi_turn"]["solved"], math["multi_turn"]["scored"]) == (2, 4)  # m2's assistant never gets it
    assert math["drop_points"] == 50.0 and report["scores"]["overall"]["drop_points"] == 50.0
    assert "open" not in report["scores"]  # no checker, no score
    assert report["simulation_statistics"]["conversations"] == 6 and "intent_coverage" in report["simulation_statistics"]
    assert report["paper_reference"] == PAPER_REFERENCE
    for setting in ("single_turn", "multi_turn"):
        assert json.loads((tmp_path / "eval" / setting / "summary.json").read_text())["setting"] == setting
    assert json.loads((tmp_path / "eval" / "report.json").read_text()) == report
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "| math | 100.0% [51.0%, 100.0%] (4/4) | 50.0% [15.0%, 85.0%] (2/4) | +50.0 |" in markdown
    assert "74.6% solved with a prompted GPT-4o user, 57.4% with UserLM-8b" in markdown


def test_cli_evaluate_assistant(scripted, tmp_path):
    result = CliRunner().invoke(app, ["evaluate-assistant", "--assistant", scripted["assistant"], "--user", scripted["user"],
                                      "--scenarios", scripted["scenarios"], "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "| overall | 100.0%" in result.stdout and "intent_coverage" in result.stdout
    assert (tmp_path / "eval" / "multi_turn" / "conversations.jsonl").exists()
