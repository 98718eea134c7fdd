"""``userloop rlhi anchors`` (userloop.rlhi.task_answers): checked anchors made offline for ``train dpo --anchors``."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.rlhi import task_answers
from userloop.rlhi.anchors import read_anchors
from userloop.rlhi.task_answers import AnchorsConfig, make_anchors, report_path


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from userloop.models.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("anchors-policy") / "policy", hidden_size=32, layers=2)


def config(policy, prepared, **changes) -> AnchorsConfig:
    return AnchorsConfig(**({"policy": str(policy), "data": str(prepared), "tasks": 10, "max_new_tokens": 8,
                             "min_conversations": 1} | changes))


def test_anchors_are_the_passing_answers_to_train_split_tasks_with_the_users_persona(policy, prepared, tmp_path,
                                                                                      monkeypatch, small_classifier):
    """A stand-in check passes every task but math's (the tiny policy passes none): those answers are the
    anchors, each with its user's derived persona, from train-split users only; the report counts them."""
    from userloop.rlhi.build import read_split_conversations

    monkeypatch.setattr(task_answers, "passes", lambda task, answer: task["family"] != "math")
    out = tmp_path / "anchors.jsonl"
    report = make_anchors(config(policy, prepared), out)
    anchors = read_anchors(out)
    assert report == json.loads(report_path(out).read_text())
    math = report["by_family"].get("math", [0, 0])[1]
    assert report["tried"] == 10 and report["passed"] == len(anchors) == 10 - math
    assert sum(tried for _, tried in report["by_family"].values()) == 10
    assert all(a["family"] != "math" and a["persona"] and a["prompt"][0]["role"] == "user" for a in anchors)
    train_users = {c.user_id for c in read_split_conversations(prepared, "train")}
    test_users = {c.user_id for c in read_split_conversations(prepared, "test")}
    assert {a["user_id"] for a in anchors} <= train_users and not {a["user_id"] for a in anchors} & test_users
    again = make_anchors(config(policy, prepared), tmp_path / "again.jsonl")             # seeded: the same draw
    assert read_anchors(tmp_path / "again.jsonl") == anchors and again["by_family"] == report["by_family"]
    other = make_anchors(config(policy, prepared, seed=1), tmp_path / "other.jsonl")
    assert {a["conversation_id"] for a in read_anchors(tmp_path / "other.jsonl")} != {a["conversation_id"] for a in anchors}
    assert other["tried"] == 10


def test_without_the_persona_every_train_user_may_be_drawn(policy, prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(task_answers, "passes", lambda task, answer: True)
    report = make_anchors(config(policy, prepared, persona=False, tasks=10_000), tmp_path / "anchors.jsonl")
    anchors = read_anchors(tmp_path / "anchors.jsonl")
    assert report["personas"] is None and report["tried"] == report["pool"] == len(anchors)
    assert all(a["persona"] is None for a in anchors)


def test_anchors_train_a_dpo_policy(policy, prepared, tmp_path, monkeypatch):
    """The file is what ``train dpo --anchors`` reads: its report gives the anchors' NLL."""
    from userloop.rlhi.dpo import DPOTrainConfig, train_dpo

    monkeypatch.setattr(task_answers, "passes", lambda task, answer: True)
    make_anchors(config(policy, prepared, persona=False, tasks=4), tmp_path / "anchors.jsonl")
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": [{"role": "user", "content": "List three primes."}],
                                          "chosen": [{"role": "assistant", "content": "- 2\n- 3\n- 5"}],
                                          "rejected": [{"role": "assistant", "content": "Two, three and five."}]}] * 4), pairs)
    report = train_dpo(DPOTrainConfig(policy=str(policy), pairs=str(pairs), out=str(tmp_path / "dpo"), persona=False,
                                      anchors=str(tmp_path / "anchors.jsonl"), max_steps=1, batch_size=2,
                                      logging_steps=1)).report
    assert report["anchors"] == 4 and report["anchor_nll_last"] > 0


def test_command_writes_the_anchors_and_counts_them(policy, prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(task_answers, "passes", lambda task, answer: task["family"] != "math")
    out = tmp_path / "runs" / "anchors.jsonl"
    result = CliRunner().invoke(app, ["rlhi", "anchors", "--policy", f"hf:{policy}", "--data", str(prepared),
                                      "--tasks", "6", "--max-new-tokens", "4", "--no-persona", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path(out).read_text())
    assert report["tried"] == 6 and report["passed"] == len(read_anchors(out))


def one_line_error(result, fragment: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (result.exit_code, result.output)
    assert fragment in lines[0] and "Traceback" not in result.output


def test_command_errors_are_one_line(policy, prepared, tmp_path, monkeypatch):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, ["rlhi", "anchors", "--policy", str(policy), "--data", str(prepared), "--tasks", "4",
                                   "--max-new-tokens", "4", "--no-persona", *args])

    monkeypatch.setattr(task_answers, "passes", lambda task, answer: False)
    result = run("--out", str(tmp_path / "none.jsonl"))
    one_line_error(result, "none of the policy's 4 answers passed")
    assert not (tmp_path / "none.jsonl").exists()
    result = run("--out", str(tmp_path))
    one_line_error(result, "is a folder")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "conversations.jsonl").write_text("")
    result = runner.invoke(app, ["rlhi", "anchors", "--policy", str(policy), "--data", str(raw), "--out",
                                 str(tmp_path / "a.jsonl")])
    one_line_error(result, "not the testbed")
    result = runner.invoke(app, ["rlhi", "anchors", "--policy", str(tmp_path / "missing"), "--out", str(tmp_path / "a.jsonl")])
    one_line_error(result, "no such model folder")
    result = runner.invoke(app, ["rlhi", "anchors", "--policy", str(raw), "--out", str(tmp_path / "a.jsonl")])
    one_line_error(result, "not a model folder (no config.json)")
    result = runner.invoke(app, ["rlhi", "anchors", "--policy", str(policy), "--data", str(tmp_path / "nowhere"),
                                 "--out", str(tmp_path / "a.jsonl")])
    one_line_error(result, "no such folder")
    broken = tmp_path / "personas.jsonl"
    broken.write_text('{"user_id": 1}\n')
    result = runner.invoke(app, ["rlhi", "anchors", "--policy", str(policy), "--data", str(prepared), "--personas",
                                 str(broken), "--out", str(tmp_path / "a.jsonl")])
    one_line_error(result, "not a persona record")
    with pytest.raises(UserError, match="tasks"):
        make_anchors(config(policy, prepared, tasks=0), tmp_path / "a.jsonl")
