"""The realism block of a run (metrics.run_realism): checked by hand on a scripted run, in summary.json and on the
terminal, against a tiny prepared folder of real conversations."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import Conversation, Message, write_parquet
from userloop.metrics.fidelity import ks_statistic, wasserstein
from userloop.metrics.run_realism import distribution, realism_line, run_realism, simulate_with_realism
from userloop.simulate.runs import SimulationConfig, compare_runs, read_records, simulate

SCENARIOS = [
    {"id": "o1", "kind": "open", "intent": "(o1) You want a haiku."},
    {"id": "o2", "kind": "open", "intent": "(o2) You want to grow tomatoes."},
    {"id": "o3", "kind": "open", "intent": "(o3) You want a book to read.", "max_user_turns": 2},
]
# The user ends o1 after two turns and o2 after three (the guardrails ban ending in the first two turns);
# o3 reaches its cap of two turns.
USER_SCRIPT = {
    "(o1)": "a haiku about autumn leaves", "ALPHA": "make it rhyme now", "BRAVO": "<|endconversation|>",
    "(o2)": "a tip about tomatoes", "CHARLIE": "what about sunlight", "DELTA": "and the soil type",
    "ECHO": "<|endconversation|>",
    "(o3)": "a mystery novel", "FOXTROT": "something shorter please",
}
ASSISTANT_SCRIPT = {
    "haiku about autumn": "ALPHA leaves drift down.", "make it rhyme": "BRAVO leaves fall, all.",
    "tip about tomatoes": "CHARLIE water them daily.", "what about sunlight": "DELTA six hours of sun.",
    "soil type": "ECHO loamy soil works.",
    "mystery novel": "FOXTROT try Rebecca.", "something shorter": "GOLF try a short story.",
}
# Words per user turn: o1 5, 4; o2 4, 3, 4; o3 3, 3.
TURN_WORDS = [5, 4, 4, 3, 4, 3, 3]


@pytest.fixture
def run_files(tmp_path) -> dict:
    (tmp_path / "user.json").write_text(json.dumps(USER_SCRIPT))
    (tmp_path / "assistant.json").write_text(json.dumps(ASSISTANT_SCRIPT))
    (tmp_path / "scenarios.jsonl").write_text("".join(json.dumps(row) + "\n" for row in SCENARIOS))
    return {"user": f"scripted:{tmp_path / 'user.json'}", "assistant": f"scripted:{tmp_path / 'assistant.json'}",
            "scenarios": str(tmp_path / "scenarios.jsonl")}


@pytest.fixture
def prepared(tmp_path) -> Path:
    """A prepared folder whose test split has three real conversations: ended after two turns (4 and 3 words),
    ended after one (7 words), and one left on an unanswered user turn (2 words)."""
    folder = tmp_path / "prepared"
    folder.mkdir()
    real = [
        Conversation([Message("user", "a haiku about autumn"), Message("assistant", "x"),
                      Message("user", "make it shorter"), Message("assistant", "y")], id="r1", intent="a haiku"),
        Conversation([Message("user", "tell me a joke about cats today"), Message("assistant", "z")], id="r2",
                     intent="a joke about cats"),
        Conversation([Message("user", "a question")], id="r3", intent="ask a question"),
    ]
    write_parquet(real, folder / "test.parquet")
    write_parquet(real[:1], folder / "train.parquet")
    (folder / "report.json").write_text("{}")
    return folder


def test_the_realism_of_a_scripted_run_is_what_a_hand_count_gives(run_files, tmp_path):
    result = simulate_with_realism(SimulationConfig(**run_files), tmp_path / "run")
    records, _ = read_records(tmp_path / "run" / "conversations.jsonl")
    assert {r.scenario_id: (r.end_reason, r.n_user_turns) for r in records} == {
        "o1": ("user_ended", 2), "o2": ("user_ended", 3), "o3": ("max_turns", 2)}
    realism = result.summary["realism"]
    assert realism == json.loads((tmp_path / "run" / "summary.json").read_text())["realism"]
    # first turns {a haiku about autumn leaves}, {a tip about tomatoes}, {a mystery novel}: Jaccard 2/7, 1/7, 1/6
    assert realism["first_turns"] == 3
    assert realism["first_turn_diversity"] == pytest.approx(100 * (1 - (2 / 7 + 1 / 7 + 1 / 6) / 3))
    # content words found in the intent: haiku of 3, tomatoes of 2, none of 2
    assert realism["intent_decomposition"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 0) / 3)
    assert realism["user_turn_words"] == pytest.approx(
        {"mean": 26 / 7, "p10": 3.0, "p25": 3.0, "p50": 4.0, "p75": 4.0, "p90": 4.4, "max": 5.0})
    assert realism["user_turns"]["mean"] == pytest.approx(7 / 3) and realism["user_turns"]["max"] == 3
    assert realism["termination"]["user_ended"] == pytest.approx(2 / 3)
    assert realism["termination"]["end_turn"]["mean"] == pytest.approx(2.5)
    assert realism["end_reasons"]["user_ended"] == pytest.approx(2 / 3)
    assert realism["end_reasons"]["max_turns"] == pytest.approx(1 / 3) and realism["end_reasons"]["error"] == 0
    assert realism["failed_left_out"] == 0 and realism["conversations"] == 3 and "human" not in realism
    assert "Realism of the simulated users" in (tmp_path / "run" / "summary.md").read_text()
    assert run_realism(records) == realism


def test_real_users_of_a_prepared_test_split_are_the_reference(run_files, prepared, tmp_path):
    config = SimulationConfig(**run_files, data=str(prepared))
    realism = simulate_with_realism(config, tmp_path / "run").summary["realism"]
    human = realism["human"]
    assert human["data"] == str(prepared) and human["split"] == "test" and human["conversations"] == 3
    assert human["user_turn_words"]["mean"] == pytest.approx(4.0)   # 4, 3, 7, 2
    assert human["user_turns"]["mean"] == pytest.approx(4 / 3)
    assert human["termination"]["user_ended"] == pytest.approx(2 / 3)   # r3 stops on a user turn
    assert human["termination"]["end_turn"]["mean"] == pytest.approx(1.5)
    assert realism["distances"]["user_turn_words"] == {
        "wasserstein": pytest.approx(wasserstein(TURN_WORDS, [4, 3, 7, 2])),
        "ks": pytest.approx(ks_statistic(TURN_WORDS, [4, 3, 7, 2]))}
    assert realism["distances"]["end_turn"]["wasserstein"] == pytest.approx(wasserstein([2, 3], [2, 1]))
    line = realism_line(realism)
    assert line.startswith("realism: first-turn diversity 80.2") and "; real users (test split):" in line


def test_simulate_shows_realism_in_json_and_on_the_terminal_and_runs_compare_lists_it(run_files, prepared, tmp_path):
    args = ["simulate", "--user", run_files["user"], "--assistant", run_files["assistant"],
            "--scenarios", run_files["scenarios"], "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, "--json", "--data", str(prepared)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["realism"]["first_turn_diversity"] == pytest.approx(100 * (1 - 25 / 126))
    assert summary["realism"]["human"]["conversations"] == 3
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0
    assert "realism: first-turn diversity 80.2, decomposition 27.8, user ended 67%" in plain.stdout
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "data" not in run["config"]   # the reference changes the summary, not the run: a resume accepts it
    compared = compare_runs(tmp_path / "run", tmp_path / "run")
    assert "| realism | first_turn_diversity | 80.16 | 80.16 | same |" in compared


def test_a_single_turn_run_has_no_realism_block_and_failed_conversations_are_left_out(run_files, tmp_path):
    single = simulate_with_realism(SimulationConfig(assistant=run_files["assistant"], scenarios=run_files["scenarios"],
                                                    user=None), tmp_path / "single")
    assert single.summary["realism"] is None
    records, _ = read_records(simulate(SimulationConfig(**run_files), tmp_path / "run").out / "conversations.jsonl")
    records[0].end_reason, records[0].error = "error", "assistant model: down"
    realism = run_realism(records)
    assert realism["failed_left_out"] == 1 and realism["conversations"] == 2
    assert realism["end_reasons"]["error"] == pytest.approx(1 / 3)


def test_distribution_interpolates_between_order_statistics():
    assert distribution([1, 2, 3, 4, 5]) == {"mean": 3.0, "p10": 1.4, "p25": 2.0, "p50": 3.0, "p75": 4.0, "p90": 4.6,
                                             "max": 5.0}
    assert distribution([7]) == {"mean": 7.0, "p10": 7.0, "p25": 7.0, "p50": 7.0, "p75": 7.0, "p90": 7.0, "max": 7.0}
    assert distribution([]) is None


def test_the_report_and_the_viewer_show_realism_beside_success(run_files, prepared, tmp_path):
    from userloop.report.html import realism_table
    from userloop.report.viewer_index import load_index

    simulate_with_realism(SimulationConfig(**run_files, data=str(prepared)), tmp_path / "runs" / "new")
    simulate(SimulationConfig(**run_files), tmp_path / "runs" / "old")   # a summary without a realism block
    html = realism_table({"new": tmp_path / "runs" / "new", "old": tmp_path / "runs" / "old"})
    assert "Realism of the simulated users" in html and "real users (test split)" in html
    assert html.count("<td class=num>80.16</td>") == 2   # the old run's block is computed from its records
    sources = {s["label"]: s for s in load_index([tmp_path / "runs"]).overview()["sources"]}
    assert sources["simulated: new"]["headline"].startswith("realism: first-turn diversity 80.2")
    assert sources["simulated: old"]["headline"] is None
