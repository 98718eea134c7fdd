"""Training a user LM: the config parser, from scratch and LoRA runs, resuming, accelerate configs, the CLI."""

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import Conversation
from userloop.errors import UserError
from userloop.train.common import use_bf16
from userloop.userlm.train import UserLMTrainConfig, parse_config, train_user_lm, use_detailed_intents

REPO = Path(__file__).resolve().parents[2]
TINY = ["--hidden_size", "32", "--layers", "1", "--vocab_size", "400", "--batch_size", "4", "--max_length", "512",
        "--logging_steps", "1", "--eval_steps", "2", "--save_steps", "2"]


def test_every_config_field_has_help():
    assert all(f.metadata.get("help") for f in fields(UserLMTrainConfig))


def test_yaml_sets_values_and_flags_override_them(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("scheme: per_turn\nlearning_rate: 0.01\nmax_steps: 7\n")
    config = parse_config(["--config", str(config_file), "--max_steps", "3"])
    assert (config.scheme, config.learning_rate, config.max_steps) == ("per_turn", 0.01, 3)
    assert parse_config([]).peak_learning_rate == 2e-3
    assert parse_config(["--init", "some/model", "--lora", "true"]).peak_learning_rate == 2e-4


@pytest.mark.parametrize("args", [["--scheme", "zigzag"], ["--lora", "true"], ["--hidden_size", "30"],
                                  ["--max_steps", "0"], ["--config", "missing.yaml"]])
def test_bad_configs_are_user_errors(args):
    with pytest.raises(UserError):
        parse_config(args)


@pytest.mark.parametrize(("args", "fragment"), [(["--detailed_intents", "1.5"], r"share in \[0, 1\]"),
                                                (["--detailed_intents", "0.5", "--role", "assistant"], "role user")])
def test_bad_detailed_intent_shares_are_user_errors(args, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_config(args)


def test_detailed_intents_replace_the_drawn_share_and_count_the_rest(testbed_conversations):
    convs = [Conversation.from_dict(c.to_dict()) for c in testbed_conversations]
    convs[0].extra.pop("detailed_intent")
    counts = use_detailed_intents(convs, 0.5, seed=1)
    detailed = [c for c in convs if c.intent == c.extra.get("detailed_intent")]
    assert counts["used"] == len(detailed) and 0.3 < counts["used"] / len(convs) < 0.7
    assert all(c.intent.startswith("You are a user chatting") for c in convs)
    again = [Conversation.from_dict(c.to_dict()) for c in reversed(testbed_conversations)]
    again[-1].extra.pop("detailed_intent")
    assert use_detailed_intents(again, 0.5, seed=1) == counts  # drawn by id, whatever the order
    assert {c.id for c in again if c.intent == c.extra.get("detailed_intent")} == {c.id for c in detailed}
    assert use_detailed_intents([Conversation.from_dict(c.to_dict()) for c in convs], 0.0, seed=1)["used"] == 0


def test_unknown_yaml_keys_are_user_errors(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("learning_rat: 0.01\n")
    with pytest.raises(UserError, match="learning_rat"):
        parse_config(["--config", str(config_file)])


@pytest.fixture(scope="module")
def scratch_run(prepared_testbed, tmp_path_factory):
    """Two updates from scratch through the CLI, with a checkpoint after the second."""
    out = tmp_path_factory.mktemp("train") / "user-lm"
    result = CliRunner().invoke(app, ["train", "user-lm", "--data", str(prepared_testbed), "--out", str(out),
                                      "--max_steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_scratch_training_writes_a_loadable_user_lm(scratch_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, output = scratch_run
    assert "validation loss" in output and "unigram baseline" in output
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == 2 and report["flip"]["train"]["used"] > 100
    assert report["unigram_baseline"] > 0 and report["validation_loss"] > 0
    assert report["bf16"] is use_bf16("auto")  # the precision "auto" resolved to on this machine, recorded
    curve = [json.loads(line) for line in (out / "loss_curve.jsonl").read_text().splitlines()]
    assert [row["step"] for row in curve if "loss" in row] == [1, 2]
    assert (out / "loss_curve.png").stat().st_size > 0 and (out / "train_config.yaml").is_file()
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generation_config.do_sample and model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|eot_id|>")
    text = tokenizer.apply_chat_template([{"role": "system", "content": "intent"}], tokenize=False)
    assert text.endswith("<|start_header_id|>user<|end_header_id|>\n")


def test_resume_continues_the_step_count(scratch_run, prepared_testbed):
    from transformers import AutoModelForCausalLM

    out, _ = scratch_run
    config = parse_config(["--data", str(prepared_testbed), "--out", str(out), "--max_steps", "4", "--resume", "true", *TINY])
    messages = []
    result = train_user_lm(config, on_message=messages.append)
    assert any("resuming from" in m and "checkpoint-2" in m for m in messages)
    assert result.report["steps"] == 4 and result.report["resumed_from"].endswith("checkpoint-2")
    curve = [json.loads(line) for line in (out / "loss_curve.jsonl").read_text().splitlines()]
    assert [row["step"] for row in curve if "loss" in row] == [1, 2, 3, 4]
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0


def test_resume_without_a_checkpoint_is_a_user_error(tmp_path, prepared_testbed):
    config = parse_config(["--data", str(prepared_testbed), "--out", str(tmp_path / "empty"), "--resume", "true"])
    with pytest.raises(UserError, match="no checkpoint"):
        train_user_lm(config)


def test_lora_fine_tuning_of_a_pretrained_user_lm(userlm_path, prepared_testbed, tmp_path):
    from transformers import AutoModelForCausalLM

    config = parse_config(["--data", str(prepared_testbed), "--out", str(tmp_path / "lora"), "--init", str(userlm_path),
                           "--lora", "true", "--lora_r", "4", "--scheme", "per_turn", "--max_steps", "2",
                           "--batch_size", "4", "--max_length", "512", "--eval_steps", "0", "--save_steps", "0"])
    result = train_user_lm(config)
    assert result.report["steps"] == 2 and result.report["scheme"] == "per_turn"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    assert not any("lora" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize(("name", "distributed_type"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_accelerate_configs_are_valid(name, distributed_type):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(REPO / "configs" / "accelerate" / f"{name}.yaml")
    assert config.distributed_type.value == distributed_type and config.num_processes >= 2
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    if name == "deepspeed_zero3":
        assert config.deepspeed_config["zero_stage"] == 3


def test_the_small_preset_parses():
    config = parse_config(["--config", str(REPO / "configs" / "preset-small-user-lm.yaml")])
    assert (config.hidden_size, config.layers, config.max_steps, config.detailed_intents) == (256, 4, 1400, 0.5)


def test_the_small_assistant_preset_parses():
    config = parse_config(["--config", str(REPO / "configs" / "preset-small-assistant.yaml")], role="assistant")
    assert (config.role, config.hidden_size, config.layers, config.max_steps, config.data) == (
        "assistant", 256, 4, 900, "runs/policy-data")


def test_example_train_config_parses():
    config = parse_config(["--config", str(REPO / "configs" / "train_user_lm.yaml")])
    assert (config.max_length, config.learning_rate, config.init) == (2048, 2e-5, "meta-llama/Meta-Llama-3-8B")


def test_python_dash_m_userloop_cli_runs_the_app():
    result = subprocess.run([sys.executable, "-m", "userloop.cli", "train", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "user-lm" in result.stdout


def test_train_command_help_lists_the_fields():
    result = CliRunner().invoke(app, ["train", "user-lm", "--help"])
    assert result.exit_code == 0 and "--max_length" in result.output and "--lora_r" in result.output


def test_train_command_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(app, ["train", "user-lm", "--data", str(tmp_path), "--scheme", "zigzag"])
    assert result.exit_code == 2 and result.output.strip().splitlines() == ["error: scheme must be one of packed, per_turn, got 'zigzag'"]
    result = CliRunner().invoke(app, ["train", "user-lm", "--data", str(tmp_path), "--max_steps", "1"])
    assert result.exit_code == 2 and "not a prepared folder" in result.output


def test_full_fine_tuning_adds_the_missing_userlm_tokens(prepared_testbed, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from userloop.models.tiny import build_tiny_chat_model

    base = build_tiny_chat_model(tmp_path / "base", hidden_size=32, layers=1)  # a chat model without <|endconversation|>
    AutoModelForCausalLM.from_pretrained(base).to(torch.bfloat16).save_pretrained(base)  # stored in bf16, as Llama 3
    config = parse_config(["--data", str(prepared_testbed), "--out", str(tmp_path / "ft"), "--init", str(base),
                           "--max_steps", "1", "--warmup", "0", "--batch_size", "2", "--max_length", "512", "--eval_steps", "0",
                           "--save_steps", "0"])
    result = train_user_lm(config)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ft")
    before, after = (AutoModelForCausalLM.from_pretrained(path).model.layers[0].mlp.down_proj.weight
                     for path in (base, tmp_path / "ft"))
    assert after.dtype == torch.float32  # float32 master weights: a 2e-5 step is not rounded away in bf16
    assert (after.float() != before.float()).float().mean() > 0.9
    assert result.report["steps"] == 1 and result.report["init"] == str(base)
    assert tokenizer.convert_tokens_to_ids("<|endconversation|>") == len(tokenizer) - 1
    assert tokenizer.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False).endswith("user<|end_header_id|>\n")


@pytest.mark.parametrize(("yaml_text", "flags", "fragment"), [
    ("lr: [1, 2\n", [], "not valid YAML"),
    ("max_steps: ten\n", [], "invalid int value: 'ten'"),
    (None, ["--lora", "maybe"], "argument --lora"),
    (None, ["--init", "no_such_folder", "--max_steps", "1"], "no such model folder: no_such_folder"),
])
def test_bad_yaml_values_and_paths_are_one_line(tmp_path, prepared_testbed, yaml_text, flags, fragment):
    args = ["train", "user-lm", "--data", str(prepared_testbed), "--out", str(tmp_path / "out"), *flags]
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        args += ["--config", str(tmp_path / "c.yaml")]
    result = CliRunner().invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output


def test_an_empty_validation_split_is_named(tmp_path, testbed_conversations):
    from userloop.conversation import write_parquet

    data = tmp_path / "tiny"
    data.mkdir()
    (data / "report.json").write_text("{}")
    write_parquet(testbed_conversations[:3], data / "train.parquet")
    write_parquet([], data / "validation.parquet")
    config = parse_config(["--data", str(data), "--out", str(tmp_path / "out"), "--vocab_size", "300", "--hidden_size", "32"])
    with pytest.raises(UserError, match="the validation split has no conversations"):
        train_user_lm(config)


def test_train_assistant_trains_the_same_model_on_assistant_turns(prepared_testbed, tmp_path):
    """``train assistant``: same trainer, loss on assistant turns, a template that prompts the assistant."""
    from transformers import AutoTokenizer

    from userloop.models import load_model

    out = tmp_path / "assistant"
    result = CliRunner().invoke(app, ["train", "assistant", "--data", str(prepared_testbed), "--out", str(out),
                                      "--max_steps", "1", "--save_steps", "0", *TINY[:-2]])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "train_report.json").read_text())
    assert report["role"] == "assistant" and report["flip"]["train"]["skipped_without_intent"] == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n")
    [completion] = load_model(f"hf:{out}").generate([[{"role": "user", "content": "hi"}]])
    assert isinstance(completion.text, str)
    assert parse_config([], role="assistant").out == "assistant"
    with pytest.raises(UserError, match="role"):
        parse_config(["--role", "critic"])
    with pytest.raises(UserError, match="train user-lm"):
        parse_config(["--role", "user"], role="assistant")



def test_bf16_autocast_trains_to_the_float32_losses(prepared_testbed, tmp_path):
    """bf16 mixed precision (float32 master weights) follows the float32 loss curve: every logged training and
    validation loss within 1% (measured on this tiny model: within 0.01% after 12 updates at lr 1e-2)."""
    curves = {}
    for bf16 in ("true", "false"):
        config = parse_config(["--data", str(prepared_testbed), "--out", str(tmp_path / bf16), "--bf16", bf16,
                               "--max_steps", "12", "--learning_rate", "0.01", "--eval_steps", "12", "--save_steps", "0",
                               *TINY[:10], "--logging_steps", "4"])
        train_user_lm(config)
        curves[bf16] = [json.loads(line) for line in (tmp_path / bf16 / "loss_curve.jsonl").read_text().splitlines()]
    assert [sorted(row) for row in curves["true"]] == [sorted(row) for row in curves["false"]]
    first, last = curves["false"][0]["loss"], curves["false"][-2]["loss"]
    assert last < first - 0.5  # the losses compared are those of a model that learns
    for bf16_row, float32_row in zip(curves["true"], curves["false"], strict=True):
        key = "loss" if "loss" in float32_row else "eval_loss"
        assert bf16_row[key] == pytest.approx(float32_row[key], rel=0.01)


def test_gradient_checkpointing_gives_the_same_weights_and_losses(prepared_testbed, tmp_path):
    """Recomputing the activations in the backward pass (the demo's setting, for memory) changes neither the
    trained weights (byte for byte) nor any logged loss."""
    import hashlib

    runs = {}
    for checkpointing in ("true", "false"):
        out = tmp_path / checkpointing
        train_user_lm(parse_config(["--data", str(prepared_testbed), "--out", str(out), "--max_steps", "3",
                                    "--gradient_checkpointing", checkpointing, *TINY[:-4], "--eval_steps", "3",
                                    "--save_steps", "0"]))
        runs[checkpointing] = (hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(),
                               (out / "loss_curve.jsonl").read_text())
    assert runs["true"] == runs["false"]


def test_the_trainer_rows_are_what_trl_would_prepare(prepared_testbed):
    """The rows handed to the trainer (built on Arrow arrays, TRL's preparation skipped) equal those TRL's
    ``SFTTrainer`` builds from ids and completion masks: the id on a target token, -100 elsewhere."""
    from userloop.userlm.flip import Sample
    from userloop.userlm.train import _dataset

    samples = [Sample([5, 6, 7, 8], [0, 1, 1, 0]), Sample([9, 10], [1, 1]), Sample([3], [1])]
    rows = _dataset(samples).to_list()
    assert rows == [{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, -100]},
                    {"input_ids": [9, 10], "labels": [9, 10]}, {"input_ids": [3], "labels": [3]}]


def test_in_memory_datasets_are_fingerprinted_by_their_content():
    import pyarrow as pa

    from userloop.train.common import in_memory_dataset

    def fingerprint(ids):
        return in_memory_dataset({"input_ids": pa.array(ids, pa.list_(pa.int32()))})._fingerprint

    assert fingerprint([[1, 2], [3]]) == fingerprint([[1, 2], [3]])
    assert len({fingerprint([[1, 2], [3]]), fingerprint([[1, 2], [4]]), fingerprint([[1], [2, 3]])}) == 3


def test_micro_batches_with_accumulation_train_the_same_updates(prepared_testbed, tmp_path):
    """The demo's memory setting: 8 rows an update as 2 passes of 4 whose gradients add up: the same losses and
    weights as one pass of 8, up to float32 rounding (bf16 off: on a CPU with bf16 instructions "auto" turns
    autocast on, and its rounding differs between the two batchings)."""
    import torch
    from safetensors.torch import load_file

    losses, weights = {}, {}
    for batch, accumulation in ((8, 1), (4, 2)):
        out = tmp_path / f"{batch}x{accumulation}"
        train_user_lm(parse_config(["--data", str(prepared_testbed), "--out", str(out), "--max_steps", "3",
                                    *TINY[:6], "--max_length", "512", "--logging_steps", "1", "--eval_steps", "0",
                                    "--save_steps", "0", "--batch_size", str(batch),
                                    "--gradient_accumulation_steps", str(accumulation), "--bf16", "false"]))
        losses[batch] = [json.loads(line)["loss"] for line in (out / "loss_curve.jsonl").read_text().splitlines()
                         if "loss" in json.loads(line)]
        weights[batch] = load_file(out / "model.safetensors")
    assert len(losses[8]) == 3 and losses[8] == pytest.approx(losses[4], rel=1e-5)
    assert all(torch.allclose(weights[8][name], weights[4][name], atol=1e-5) for name in weights[8])
