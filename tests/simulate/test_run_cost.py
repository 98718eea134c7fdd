"""Token sums per conversation and per run, the price table (--prices), and run.json's reproducibility fields."""

import hashlib
import json

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.simulate.runs import SimulationConfig, read_records, simulate
from userloop.version import package_versions


def _config(scripted, **fields) -> SimulationConfig:
    return SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=scripted["scenarios"],
                            **fields)


def _args(scripted, out) -> list[str]:
    return ["simulate", "--user", scripted["user"], "--assistant", scripted["assistant"],
            "--scenarios", scripted["scenarios"], "--out", str(out)]


def test_tokens_add_up_over_the_turns_of_a_conversation_and_over_the_run(scripted, tmp_path):
    """tau-bench once overwrote the user's count each turn instead of adding it: every turn must count."""
    summary = simulate(_config(scripted, n=2), tmp_path / "run").summary
    records, _ = read_records(tmp_path / "run" / "conversations.jsonl")
    for record in records:
        # a closing user turn with no text is not a message, but its tokens count
        closed = record.end_reason == "user_ended" and not any(m.ended for m in record.messages)
        for role in ("user", "assistant"):
            turns = [m.tokens for m in record.messages if m.role == role and m.tokens is not None]
            for part in ("prompt", "completion"):
                in_turns = sum(getattr(t, part) for t in turns)
                if role == "user" and closed:
                    assert getattr(record.tokens[role], part) > in_turns
                else:
                    assert getattr(record.tokens[role], part) == in_turns
    several = [r for r in records if r.n_user_turns >= 2]
    assert several and all(
        r.tokens["user"].completion > max(m.tokens.completion for m in r.messages if m.role == "user") for r in several)
    for role in ("user", "assistant"):
        for part in ("prompt", "completion"):
            total = sum(getattr(r.tokens[role], part) for r in records)
            assert summary["overall"]["tokens"][role][part] == total > 0
            assert sum(group["tokens"][role][part] for group in summary["by_kind"].values()) == total


def test_a_price_table_turns_the_tokens_into_cost_per_role_and_run(scripted, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text(f"'{scripted['user']}': {{prompt: 2, completion: 10}}\n"
                      f"'{scripted['assistant']}': {{prompt: 0.5, completion: 1.5}}\n"
                      "openai:unused: {prompt: 1, completion: 1}\n")
    result = CliRunner().invoke(app, [*_args(scripted, tmp_path / "run"), "--prices", str(prices), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    tokens, cost = summary["overall"]["tokens"], summary["cost"]
    user = (tokens["user"]["prompt"] * 2 + tokens["user"]["completion"] * 10) / 1e6
    assistant = (tokens["assistant"]["prompt"] * 0.5 + tokens["assistant"]["completion"] * 1.5) / 1e6
    assert cost["by_role"]["user"] == {"model": scripted["user"],
                                       "prompt": pytest.approx(tokens["user"]["prompt"] * 2 / 1e6),
                                       "completion": pytest.approx(tokens["user"]["completion"] * 10 / 1e6),
                                       "total": pytest.approx(user)}
    assert cost["by_role"]["assistant"]["total"] == pytest.approx(assistant)
    assert cost["total"] == pytest.approx(user + assistant) and cost["total"] > 0
    assert cost["per_conversation"] == pytest.approx((user + assistant) / summary["conversations"])
    assert cost["prices"] == str(prices)
    assert summary == json.loads((tmp_path / "run" / "summary.json").read_text())
    # the same table as JSON, given on a resume: the summary gets the cost, run.json does not change
    run_file = (tmp_path / "run" / "run.json").read_text()
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps({scripted["user"]: {"prompt": 2, "completion": 10},
                                   scripted["assistant"]: {"prompt": 0.5, "completion": 1.5}}))
    plain = CliRunner().invoke(app, [*_args(scripted, tmp_path / "run"), "--prices", str(as_json)])
    assert plain.exit_code == 0 and f"total {user + assistant:.4g}" in plain.stdout
    assert "tokens (prompt/completion): user " in plain.stdout
    assert (tmp_path / "run" / "run.json").read_text() == run_file and "prices" not in json.loads(run_file)["config"]


@pytest.mark.parametrize(("content", "message"), [
    ("{not: [valid", "not valid YAML or JSON"),
    ("- a list", "expected a mapping of model specs to prices"),
    ("USER: {prompt: 1}", "must be {prompt: NUMBER, completion: NUMBER}"),
    ("USER: {prompt: -1, completion: 2}", "must be {prompt: NUMBER, completion: NUMBER}"),
    ("USER: {prompt: cheap, completion: 2}", "must be {prompt: NUMBER, completion: NUMBER}"),
    ("USER: {prompt: 1, completion: 2}", "has no price for the assistant model"),
    (None, "--prices file"),
])
def test_a_bad_price_table_is_one_error_line_before_anything_runs(scripted, tmp_path, content, message):
    prices = tmp_path / "prices.yaml"
    if content is not None:
        prices.write_text(content.replace("USER", f"'{scripted['user']}'"))
    result = CliRunner().invoke(app, [*_args(scripted, tmp_path / "run"), "--prices", str(prices)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "run" / "run.json").exists()
    with pytest.raises(UserError, match="--prices"):
        _config(scripted, prices=str(prices)).validate()


def test_run_json_records_models_versions_seeds_and_the_task_set_hash(scripted, tmp_path):
    simulate(_config(scripted, seed=7), tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    repro = run["reproducibility"]
    user_file = scripted["user"].removeprefix("scripted:")
    assert repro["models"]["user"] == {"spec": scripted["user"], "path": str(tmp_path / "user.json")} and user_file
    assert repro["models"]["assistant"]["spec"] == scripted["assistant"]
    assert repro["models"]["classifier"] == {"spec": "rules:classifier", "path": None}
    assert repro["versions"] == package_versions()
    assert set(repro["versions"]) == {"userloop", "python", "torch", "transformers"}
    assert repro["seeds"]["run"] == 7 and run["config"]["seed"] == 7
    with open(scripted["scenarios"], "rb") as file:
        assert run["scenarios_sha256"] == hashlib.sha256(file.read()).hexdigest()


def test_run_folders_written_before_the_reproducibility_fields_resume(scripted, tmp_path):
    """Versions and model paths are records, not identity: an older run.json, or one from other versions, resumes."""
    simulate(_config(scripted), tmp_path / "run", max_conversations=2)
    run_file = tmp_path / "run" / "run.json"
    run = json.loads(run_file.read_text())
    del run["reproducibility"]
    assert "max_tool_calls_per_turn" not in run["config"]   # options added later are recorded away from their default
    assert "guardrails" not in run["config"]
    run_file.write_text(json.dumps(run))
    resumed = simulate(_config(scripted), tmp_path / "run")
    assert (resumed.resumed, resumed.finished_now) == (2, 2)
    assert "reproducibility" not in json.loads(run_file.read_text())   # kept as the run wrote it
    run["reproducibility"] = {"versions": {"userloop": "0.0.1", "torch": "1.0"}}
    run_file.write_text(json.dumps(run))
    again = simulate(_config(scripted), tmp_path / "run")
    assert (again.resumed, again.finished_now) == (4, 0)
    with pytest.raises(UserError, match="max_tool_calls_per_turn: absent in run.json, 2 now"):
        simulate(_config(scripted, max_tool_calls_per_turn=2), tmp_path / "run")
    with pytest.raises(UserError, match="guardrails: absent in run.json, 'off' now"):
        simulate(_config(scripted, guardrails="off"), tmp_path / "run")
