"""DPO, SFT on chosen answers and online iterative DPO (userloop.rlhi.dpo) on tiny models."""

import hashlib
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.rlhi.conditioning import persona_line
from userloop.rlhi.dpo import DPOTrainConfig, parse_config, preference_rows, read_pairs, sft_rows, train_dpo
from userloop.train.common import use_bf16

PERSONA = "An expert who likes brief, structured, formal answers."
PAIRS = [
    {"prompt": [{"role": "user", "content": "List three primes."}],
     "chosen": [{"role": "assistant", "content": "- 2\n- 3\n- 5"}],
     "rejected": [{"role": "assistant", "content": "Sure! Two, three and five are primes, and there are many more."}],
     "user_id": "u1", "persona": PERSONA, "feedback": "use bullet points", "conversation_id": "c1"},
    {"prompt": [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Write a poem about the sea."}],
     "chosen": [{"role": "assistant", "content": "The sea is blue."}],
     "rejected": [{"role": "assistant", "content": "Hey, here is a long poem about the sea and the sky!"}],
     "user_id": "u2", "persona": None, "feedback": "too long", "conversation_id": "c2"},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from userloop.models.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "policy", hidden_size=32, layers=2)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(PAIRS * 4), path)
    return path


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def digest(folder):
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_pairs_become_persona_conditioned_preference_rows():
    rows = preference_rows(PAIRS, persona=True)
    assert rows[0] == {"prompt": [{"role": "system", "content": persona_line(PERSONA)},
                                  {"role": "user", "content": "List three primes."}],
                       "chosen": [{"role": "assistant", "content": "- 2\n- 3\n- 5"}],
                       "rejected": [{"role": "assistant", "content": PAIRS[0]["rejected"][0]["content"]}]}
    assert rows[1]["prompt"] == PAIRS[1]["prompt"]        # no persona: the prompt as it was
    agnostic = preference_rows(PAIRS, persona=False)
    assert agnostic[0]["prompt"] == PAIRS[0]["prompt"]
    assert [r["chosen"] for r in agnostic] == [r["chosen"] for r in rows]
    assert sft_rows(PAIRS, persona=True)[0] == {"prompt": rows[0]["prompt"], "completion": rows[0]["chosen"]}
    assert PAIRS[0]["prompt"] == [{"role": "user", "content": "List three primes."}]   # inputs untouched


def test_existing_system_message_keeps_its_text_after_the_persona():
    pair = {**PAIRS[1], "persona": PERSONA}
    [row] = preference_rows([pair], persona=True)
    assert row["prompt"][0] == {"role": "system", "content": f"{persona_line(PERSONA)}\n\nYou are a helpful assistant."}
    assert len(row["prompt"]) == 2


def test_dpo_steps_move_the_policy_not_the_reference(tiny, pairs_file, tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(tiny, ref)
    before_policy, before_ref = digest(tiny), digest(ref)
    result = train_dpo(DPOTrainConfig(policy=str(tiny), ref=str(ref), pairs=str(pairs_file), out=str(tmp_path / "out"),
                                      max_steps=2, batch_size=4, warmup=0, learning_rate=1e-2, logging_steps=1))
    out = result.out
    assert digest(tiny) == before_policy and digest(ref) == before_ref
    start, trained = weights(tiny), weights(out)
    assert any(not trained[name].equal(start[name]) for name in start)
    report = json.loads((out / "dpo_report.json").read_text())
    assert report["steps"] == 2 and report["pairs"] == 8 and report["pairs_with_persona"] == 4
    assert report["ref"] == str(ref) and "reward_accuracy_last" in report and "reward_margin_mean" in report
    assert report["bf16"] is use_bf16("auto")
    assert (out / "tokenizer_config.json").is_file() and (out / "train_config.yaml").is_file()
    curve = [json.loads(line) for line in (out / "loss_curve.jsonl").read_text().splitlines()]
    assert [row["step"] for row in curve] == [1, 2] and all(row["loss"] > 0 for row in curve)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).chat_template     # the trained policy keeps its chat template


def test_an_sft_term_adds_the_chosen_answers_negative_log_likelihood(tiny, pairs_file, tmp_path):
    """RPO (Pang et al. 2024): the DPO loss plus sft_weight x the mean NLL of the chosen answers' tokens. At the
    first update the policy is its reference, so the DPO term is log 2 and the rest is the weighted NLL."""
    import math

    losses = {}
    for weight in (0.0, 1.0, 2.0):
        result = train_dpo(DPOTrainConfig(policy=str(tiny), pairs=str(pairs_file), out=str(tmp_path / f"rpo{weight}"),
                                          max_steps=1, batch_size=8, warmup=0, learning_rate=1e-2, logging_steps=1,
                                          sft_weight=weight))
        losses[weight] = result.report["loss_last"]
    assert losses[0.0] == pytest.approx(math.log(2), abs=1e-3)
    nll = losses[1.0] - losses[0.0]
    assert nll > 0.5 and losses[2.0] - losses[0.0] == pytest.approx(2 * nll, rel=1e-3)


def test_sft_on_chosen_answers(tiny, pairs_file, tmp_path):
    result = train_dpo(DPOTrainConfig(policy=str(tiny), pairs=str(pairs_file), out=str(tmp_path / "sft"), method="sft",
                                      max_steps=2, batch_size=4, warmup=0, learning_rate=1e-2, logging_steps=1))
    start, trained = weights(tiny), weights(result.out)
    assert any(not trained[name].equal(start[name]) for name in start)
    assert result.report["method"] == "sft" and result.report["steps"] == 2 and result.report["train_loss"] > 0


def test_one_online_round_with_the_testbed_scorer(tiny, prepared, small_classifier, tmp_path):
    config = DPOTrainConfig(policy=str(tiny), online=True, rounds=1, n=4, requests=6, data=str(prepared), out=str(tmp_path / "online"),
                            max_new_tokens=12, max_steps=1, batch_size=2, warmup=0, learning_rate=1e-2)
    result = train_dpo(config)
    report = result.report
    first, final = report["rounds"]
    assert first["round"] == 1 and final["round"] == "final"
    assert first["requests"] == 6 and first["samples"] == 24
    assert first["pairs"] + first["skipped_all_tied"] == 6 and first["pairs"] > 0
    assert 0 <= first["mean_score"] <= 1 and first["steps"] == 1
    assert report["mean_score_before"] == first["mean_score"] and report["mean_score_after"] == final["mean_score"]
    assert final["policy"] == str(result.out / "round-1")
    assert (result.out / "round-1" / "model.safetensors").is_file() and (result.out / "model.safetensors").is_file()
    assert report["scorer"] == "testbed" and report["requests"]["requests_without_feedback"] > 6


def test_config_errors_are_one_line(tiny, pairs_file, tmp_path):
    with pytest.raises(UserError, match="--pairs is required"):
        parse_config(["--policy", str(tiny)])
    with pytest.raises(UserError, match="method must be one of"):
        parse_config(["--policy", str(tiny), "--pairs", str(pairs_file), "--method", "ppo"])
    with pytest.raises(UserError, match="not both"):
        parse_config(["--policy", str(tiny), "--pairs", str(pairs_file), "--online"])
    with pytest.raises(UserError, match="no such model folder"):
        parse_config(["--policy", str(tmp_path / "nope"), "--pairs", str(pairs_file)])
    with pytest.raises(UserError, match="sft_weight must be 0"):
        parse_config(["--policy", str(tiny), "--pairs", str(pairs_file), "--sft-weight", "-1"])
    with pytest.raises(UserError, match="method sft takes no sft_weight"):
        parse_config(["--policy", str(tiny), "--pairs", str(pairs_file), "--method", "sft", "--sft-weight", "1"])
    config = parse_config(["--policy", str(tiny), "--pairs", str(pairs_file), "--no-persona", "--max-steps", "3"])
    assert config.persona is False and config.max_steps == 3
    with pytest.raises(UserError, match="no such file or folder"):
        read_pairs(tmp_path / "missing.parquet")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist([]).append_column("prompt", pa.array([], pa.string())), empty)
    with pytest.raises(UserError, match="no pairs"):
        read_pairs(empty)


def test_cli_errors(tiny, tmp_path):
    runner = CliRunner()
    for args, message in ((["--policy", str(tiny), "--pairs", str(tmp_path / "none.parquet")], "no such file or folder"),
                          (["--policy", str(tiny), "--pairs", "x", "--bogus", "1"], "--bogus"),
                          (["--pairs", "x"], "--policy is required")):
        result = runner.invoke(app, ["train", "dpo", *args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0]


def test_gradient_checkpointing_gives_the_same_policy(tiny, pairs_file, tmp_path):
    """DPO with the activations recomputed in the backward pass (the demo's setting) trains the same weights,
    byte for byte, and logs the same losses."""
    runs = {}
    for checkpointing in (True, False):
        out = tmp_path / str(checkpointing)
        train_dpo(DPOTrainConfig(policy=str(tiny), pairs=str(pairs_file), out=str(out), max_steps=2, batch_size=4,
                                 warmup=0, learning_rate=1e-2, logging_steps=1, gradient_checkpointing=checkpointing))
        runs[checkpointing] = (digest(out), (out / "loss_curve.jsonl").read_text())
    assert runs[True] == runs[False]
