"""Regression tests from an adversarial pass on part 2: pairs, personas and data the commands have not seen."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import Conversation, Message, write_parquet
from userloop.data.personas import read_personas
from userloop.errors import UserError
from userloop.rlhi.dpo import DPOTrainConfig, read_pairs
from userloop.rlhi.policy import write_policy_data
from userloop.rlhi.reward_model import RewardTrainConfig
from userloop.rlhi.user_rewards import user_requests

runner = CliRunner()
ANSWER = [{"role": "assistant", "content": "an answer"}]


def pair(**changes) -> dict:
    return {"prompt": [{"role": "user", "content": "a question?"}], "chosen": ANSWER, "rejected": ANSWER,
            "user_id": "u1", "persona": None, **changes}


def test_text_pairs_are_one_clear_error(tmp_path):
    path = tmp_path / "standard.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "q?", "chosen": "a", "rejected": "b"}]), path)
    with pytest.raises(UserError, match="conversational format"):
        read_pairs(path)


def test_malformed_pairs_are_left_out_and_counted(tmp_path):
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist([pair(), pair(prompt=None), pair(chosen=[]), pair()]), path)
    counts: Counter = Counter()
    assert len(read_pairs(path, counts)) == 2
    assert counts["pairs_skipped_malformed"] == 2


def test_train_dpo_on_text_pairs_prints_one_line(tmp_path):
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    path = tmp_path / "standard.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "q?", "chosen": "a", "rejected": "b"}]), path)
    result = runner.invoke(app, ["train", "dpo", "--policy", str(policy), "--pairs", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.output


def test_policy_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(UserError, match="not a model folder"):
        DPOTrainConfig(policy=str(tmp_path), pairs="pairs.parquet").validate()


def test_reward_out_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        RewardTrainConfig(pairs="pairs.parquet", out=str(tmp_path / "taken")).validate()


def test_anonymous_conversations_still_give_requests():
    conversations = [Conversation([Message("user", "How do I boil an egg?"), Message("assistant", "Boil it.")], id="c1")]
    counts: Counter = Counter()
    requests = user_requests(conversations, [], {}, counts)
    assert [(r.user_id, r.persona) for r in requests] == [("", None)]
    assert counts["conversations_without_user_id"] == 1


def test_personas_file_blank_lines_and_null_personas(tmp_path):
    path = tmp_path / "personas.jsonl"
    path.write_text(json.dumps({"user_id": "u1", "persona": "Likes lists."}) + "\n\n"
                    + json.dumps({"user_id": "u2", "persona": None}) + "\n")
    assert read_personas(path) == {"u1": "Likes lists."}
    path.write_text("not json\n")
    with pytest.raises(UserError, match=":1: not a persona record"):
        read_personas(path)


@pytest.mark.parametrize("records", [[], [{"user_id": "someone-else", "persona": "Likes lists."}]])
def test_policy_data_refuses_personas_of_other_users(tmp_path, records):
    data = tmp_path / "prepared"
    data.mkdir()
    write_parquet([Conversation([Message("user", "Hi"), Message("assistant", "Hello")], id="c1", user_id="u1")],
                  data / "train.parquet")
    (data / "report.json").write_text("{}")
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(UserError, match="no persona in it|none of its 1 users"):
        write_policy_data(data, personas, tmp_path / "out")
    assert not (tmp_path / "out").exists()
