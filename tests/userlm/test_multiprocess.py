"""Data-parallel training in two CPU processes (accelerate launch, torch DDP over gloo) against one process.

Two processes with batch B each must train what one process with batch 2B trains: the same updates in the same
order (the length-grouped batches are formed over the global batch), the same loss curve and final weights up
to float rounding, and only rank 0 writes into the output folder. Tiny models, a few updates: about a minute.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from userloop.rlhi.dpo import parse_config as parse_dpo_config
from userloop.rlhi.dpo import train_dpo
from userloop.userlm.train import parse_config, train_user_lm

REPO = Path(__file__).resolve().parents[2]
CPU_DDP = REPO / "configs" / "accelerate" / "cpu_ddp.yaml"
TINY = ["--hidden_size", "32", "--layers", "1", "--vocab_size", "400", "--max_length", "512", "--max_steps", "4",
        "--logging_steps", "1", "--eval_steps", "0", "--save_steps", "0", "--bf16", "false"]
# Runs the userloop CLI and records, per rank, every file the process opens for writing (or renames, removes,
# creates) inside the output folder: Python's audit hooks see them all (safetensors writes in Rust: unseen).
RECORD_WRITES = """
import os, sys
out, log = os.path.realpath(sys.argv.pop(1)), sys.argv.pop(1)
record = open(f"{log}-{os.environ.get('RANK', '0')}.txt", "a", buffering=1)

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        paths = [args[0]] if writing else []
    else:
        paths = [args[0], args[1]] if event in ("os.rename", "os.remove", "os.mkdir") and len(args) > 1 else []
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)).startswith(out):
            record.write(f"{event} {os.fsdecode(path)}\\n")

sys.addaudithook(hook)
from userloop.cli import app
app(prog_name="userloop")
"""


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """A function that runs ``userloop ARGS`` in two processes and returns the paths each rank wrote."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    script = tmp_path_factory.mktemp("launch") / "record_writes.py"
    script.write_text(RECORD_WRITES)
    accelerate = Path(sys.executable).parent / "accelerate"

    def launch(out: Path, *args: str) -> dict[str, list[str]]:
        log = out.parent / f"{out.name}-writes"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run([str(accelerate), "launch", "--config_file", str(CPU_DDP), "--num_processes", "2",
                                 str(script), str(out), str(log), *args],
                                capture_output=True, text=True, timeout=600, env=env, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return {rank: Path(f"{log}-{rank}.txt").read_text().splitlines() if Path(f"{log}-{rank}.txt").exists() else []
                for rank in ("0", "1")}

    return launch


def curve(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "loss_curve.jsonl").read_text().splitlines()]


def assert_same_training(one: Path, two: Path) -> None:
    """Same logged training losses per update (float rounding apart) and the same final weights."""
    from safetensors.torch import load_file

    train_one, train_two = ([row for row in curve(folder) if "loss" in row] for folder in (one, two))
    assert [row["step"] for row in train_one] == [row["step"] for row in train_two] and train_one
    assert [row["loss"] for row in train_two] == pytest.approx([row["loss"] for row in train_one], rel=1e-5)
    weights_one, weights_two = (load_file(str(folder / "model.safetensors")) for folder in (one, two))
    assert weights_one.keys() == weights_two.keys()
    for name, weight in weights_one.items():
        assert (weights_two[name] - weight).abs().max().item() < 1e-5, name


def assert_only_rank_0_wrote(writes: dict[str, list[str]]) -> None:
    assert writes["0"], "the audit hook saw no write of rank 0: the check itself is broken"
    assert writes["1"] == [], f"rank 1 wrote into the output folder: {writes['1'][:5]}"


def test_two_processes_train_the_user_lm_as_one_with_the_global_batch(launcher, prepared_testbed, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train_user_lm(parse_config(["--data", str(prepared_testbed), "--out", str(one), "--batch_size", "4", *TINY]))
    writes = launcher(two, "train", "user-lm", "--data", str(prepared_testbed), "--out", str(two), "--batch_size", "2", *TINY)
    assert_same_training(one, two)
    assert_only_rank_0_wrote(writes)
    assert sorted(path.name for path in two.iterdir()) == sorted(path.name for path in one.iterdir())
    report_one, report_two = (json.loads((folder / "train_report.json").read_text()) for folder in (one, two))
    assert report_two["steps"] == report_one["steps"] == 4 and report_two["epochs"] == pytest.approx(report_one["epochs"])
    # The validation loss is the mean of per-batch means, and each process evaluates its own batches of B rows
    # instead of 2B: close, not equal.
    assert report_two["validation_loss"] == pytest.approx(report_one["validation_loss"], rel=2e-3)


def test_two_processes_train_dpo_as_one_with_the_global_batch(launcher, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from userloop.models.tiny import build_tiny_chat_model

    policy = build_tiny_chat_model(tmp_path / "policy", hidden_size=32, layers=2)
    pairs = [{"prompt": [{"role": "user", "content": f"Question {i}: list {i + 2} primes."}],
              "chosen": [{"role": "assistant", "content": "- 2\n- 3\n- 5" + "\n- 7" * (i % 3)}],
              "rejected": [{"role": "assistant", "content": f"Sure! Here are some primes, {i} of them, and more."}],
              "persona": "Likes brief, structured answers." if i % 2 else None} for i in range(16)]
    pq.write_table(pa.Table.from_pylist(pairs), tmp_path / "pairs.parquet")
    common = ["--policy", str(policy), "--pairs", str(tmp_path / "pairs.parquet"), "--max_steps", "3",
              "--logging_steps", "1", "--warmup", "0", "--bf16", "false"]
    one, two = tmp_path / "one", tmp_path / "two"
    train_dpo(parse_dpo_config([*common, "--out", str(one), "--batch_size", "4"]))
    writes = launcher(two, "train", "dpo", *common, "--out", str(two), "--batch_size", "2")
    assert_same_training(one, two)
    assert_only_rank_0_wrote(writes)
    assert sorted(path.name for path in two.iterdir()) == sorted(path.name for path in one.iterdir())
    report_one, report_two = (json.loads((folder / "dpo_report.json").read_text()) for folder in (one, two))
    assert report_two["steps"] == report_one["steps"] == 3
    assert report_two["train_loss"] == pytest.approx(report_one["train_loss"], rel=1e-4)
