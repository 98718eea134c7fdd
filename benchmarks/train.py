"""Training throughput: `train user-lm` and `train dpo` steps against a bare PyTorch loop (issue 23, item 2).

    python benchmarks/train.py [--steps 14] [--skip 2] [--repeats 1] [--dtypes fp32 bf16] [--workloads user-lm dpo]

Both sides of every ratio run in this one process, on the same model (same initial weights), the same
batches in the same order, the same optimizer (fused AdamW), learning-rate schedule and gradient clipping,
in the same dtype (fp32, or bf16 autocast):

  trainer: the trainer the command builds (``userloop.userlm.train`` with the demo's settings: from scratch,
           BPE vocabulary 2,048, hidden 128, 2 layers, batch 8, max length 2,048, logging every 5 updates, on
           the built-in testbed; ``userloop.rlhi.dpo.build_trainer`` for DPO, batch 8), timed from the end of
           update ``--skip`` to the end of the last one (collation, callbacks and logging included);
  bare:    a plain loop over the batches that trainer's own dataloader yields: forward, loss, backward,
           clip, optimizer and scheduler step.

DPO uses a policy of the demo's assistant size (untrained weights: speed does not depend on them) and pairs
made from testbed conversations (the first user turn with a persona line as the prompt, its assistant reply as
chosen, another conversation's as rejected). Tokens are the non-padding tokens of the batches (chosen and
rejected both count for DPO), per wall-clock second and per CPU second of the process. The matmul peak is the
best square ``torch.mm`` product (1,024 and 2,048) in the run's dtype, measured just before and just after each
trainer/bare pair (the better of the two: other work on the machine changes what the cores give); model FLOP/s
count 6 x padded tokens x matmul parameters (the LM head included) plus the attention products (the reference
model's forward too, for DPO). The losses of the first logged updates are printed for both sides: equal
losses show that the two loops train the same thing. Repeats alternate fp32 and bf16; the summary gives
medians of the per-run ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, seconds: float = 0.5) -> float:
    """GFLOP/s of the best square matrix product (1,024 and 2,048) in ``dtype``."""
    best = 0.0
    for size in (1024, 2048):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.mm(a, b)
        for _ in range(2):
            started, count = time.perf_counter(), 0
            while time.perf_counter() - started < seconds:
                torch.mm(a, b)
                count += 1
            best = max(best, 2 * size ** 3 * count / (time.perf_counter() - started) / 1e9)
    return best


def matmul_parameters(model) -> int:
    """Parameters that take part in matrix products per token: every linear layer and the LM head."""
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))


def attention_flops(model, batch) -> float:
    """Forward + backward FLOPs of QK^T and AV on a padded batch (3 x 4 x batch x length^2 x hidden per layer)."""
    rows, length = batch["input_ids"].shape
    return 12 * model.config.num_hidden_layers * rows * length ** 2 * model.config.hidden_size


def step_flops(model, batch, with_reference: bool) -> float:
    """Model FLOPs of one update: 6 x padded tokens x matmul parameters plus attention; a frozen reference
    model (DPO) adds its forward (a third of that)."""
    tokens = batch["input_ids"].numel()
    flops = 6 * tokens * matmul_parameters(model) + attention_flops(model, batch)
    return flops * (4 / 3 if with_reference else 1)


def now() -> tuple[float, float]:
    """Wall-clock and CPU time of this process (all its threads)."""
    return time.perf_counter(), time.process_time()


class StepClock:
    """``on_progress`` for the trainers: the times at the end of every update."""

    def __init__(self):
        self.times: list[tuple[float, float]] = []

    def __call__(self, step: int, total: int) -> None:
        self.times.append(now())


def timed_span(times: list[tuple[float, float]], tokens: list[int], flops: list[float], skip: int) -> dict:
    """Tokens/s and model GFLOP/s from the end of update ``skip`` to the end of the last one, per wall-clock
    second and per CPU second of the process (the CPU figure moves less when other work shares the cores)."""
    seconds = times[-1][0] - times[skip - 1][0]
    cpu_seconds = times[-1][1] - times[skip - 1][1]
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "tokens_per_s": sum(tokens[skip:]) / seconds,
            "tokens_per_cpu_s": sum(tokens[skip:]) / cpu_seconds, "gflops": sum(flops[skip:]) / seconds / 1e9}


def bare_loop(model, batches, loss_fn, trainer, dtype: torch.dtype) -> tuple[list[tuple[float, float]], list[float]]:
    """The plain loop: returns the end time of every update and every update's loss."""
    from transformers import get_cosine_schedule_with_warmup

    args = trainer.args
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate,
                                  weight_decay=args.weight_decay, fused=True)
    schedule = get_cosine_schedule_with_warmup(optimizer, args.get_warmup_steps(len(batches)), len(batches))
    model.train()
    times, losses = [], []
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else nullcontext():
            loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(now())
    return times, losses


def first_logged_losses(trainer, count: int = 2) -> list[float]:
    return [round(entry["loss"], 4) for entry in trainer.state.log_history if "loss" in entry][:count]


def window_means(losses: list[float], window: int, count: int = 2) -> list[float]:
    return [round(statistics.fmean(losses[i * window:(i + 1) * window]), 4) for i in range(min(count, len(losses) // window))]


# ------------------------------------------------------------------------------------------ user LM
class UserLMWorkload:
    """The demo's user LM: tokenizer, initial model and flipped samples, built once."""

    name = "train user-lm"

    def __init__(self, steps: int, out: Path):
        from userloop.userlm import train as user_lm
        from userloop.userlm.flip import flip

        self.module, self.steps, self.out = user_lm, steps, out
        config = self.config("false")
        train, validation, _ = user_lm._read_data(config)
        self.tokenizer, self.model, self.added = user_lm._tokenizer_and_model(config, train, None)
        self.train, _ = flip(train, self.tokenizer, config.scheme, config.max_length, role=config.role)
        self.validation, _ = flip(validation, self.tokenizer, "packed", config.max_length, role=config.role)
        self.logging_steps = config.logging_steps

    def config(self, bf16: str):
        return self.module.UserLMTrainConfig(out=str(self.out / "user-lm"), max_steps=self.steps, eval_steps=0,
                                             save_steps=0, logging_steps=5, bf16=bf16)

    def trainer(self, bf16: str, on_progress=None):
        return self.module._trainer(self.config(bf16), copy.deepcopy(self.model), self.tokenizer, self.train,
                                    self.validation, self.added, on_progress)

    @staticmethod
    def loss(model, batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def bare_model(self):
        return copy.deepcopy(self.model)


# ------------------------------------------------------------------------------------------ DPO
class DPOWorkload:
    """DPO of a demo-sized assistant on pairs made from testbed conversations."""

    name = "train dpo"

    def __init__(self, steps: int, out: Path):
        from userloop.rlhi import dpo
        from userloop.userlm import train as user_lm
        from userloop.userlm.template import save_tokenizer

        self.module, self.steps, self.out = dpo, steps, out
        config = user_lm.UserLMTrainConfig(role="assistant")
        train, _, _ = user_lm._read_data(config)
        tokenizer, model, _ = user_lm._tokenizer_and_model(config, train, None)
        self.policy = out / "policy"
        model.save_pretrained(self.policy)
        save_tokenizer(tokenizer, self.policy)
        firsts = [(conv, conv.messages[0].content, conv.messages[1].content) for conv in train
                  if len(conv.messages) >= 2 and conv.messages[1].role == "assistant"]
        self.pairs = [{"prompt": [{"role": "user", "content": request}], "persona": conv.intent or "",
                       "chosen": [{"role": "assistant", "content": answer}],
                       "rejected": [{"role": "assistant", "content": firsts[(i + 1) % len(firsts)][2]}]}
                      for i, (conv, request, answer) in enumerate(firsts[:8 * steps])]
        self.logging_steps = 5

    def config(self, bf16: str):
        return self.module.DPOTrainConfig(policy=str(self.policy), pairs="unused", out=str(self.out / "dpo"),
                                          max_steps=self.steps, logging_steps=5, bf16=bf16)

    def trainer(self, bf16: str, on_progress=None):
        return self.module.build_trainer(self.config(bf16), self.pairs, str(self.policy), str(self.policy),
                                         self.out / "dpo", on_progress)

    def bare_model(self):
        from userloop.train.common import load_pretrained

        self.reference = load_pretrained(self.policy, dtype="float32")[1].eval().requires_grad_(False)
        return load_pretrained(self.policy, dtype="float32")[1]

    def loss(self, model, batch):
        """DPO's sigmoid loss (beta 0.1) on sequence log-probabilities summed over the completion tokens."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        labels = batch["input_ids"][:, 1:]
        mask = batch["completion_mask"][:, 1:].bool()

        def sequence_logps(logits):
            logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            return (logps * mask).sum(-1)

        policy = sequence_logps(model(**inputs).logits)
        with torch.no_grad():
            reference = sequence_logps(self.reference(**inputs).logits)
        chosen, rejected = (policy - reference).chunk(2)
        return -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected)).mean()


# ------------------------------------------------------------------------------------------ runs
def measure(workload, dtype_name: str, skip: int) -> dict:
    """One trainer run and one bare run on the same batches; returns both sides' figures."""
    bf16 = "true" if dtype_name == "bf16" else "false"
    from transformers import set_seed

    clock = StepClock()
    trainer = workload.trainer(bf16, clock)
    set_seed(trainer.args.seed)  # the sampler draws from the global generator: the same draws for train()
    batches = [batch for _, batch in zip(range(workload.steps), trainer.get_train_dataloader(), strict=False)]
    tokens = [int(batch["attention_mask"].sum()) for batch in batches]
    flops = [step_flops(trainer.model, batch, with_reference=workload.name == "train dpo") for batch in batches]
    set_seed(trainer.args.seed)
    trainer.train()
    result = {"trainer": timed_span(clock.times, tokens, flops, skip), "trainer_losses": first_logged_losses(trainer)}
    model = workload.bare_model()
    times, losses = bare_loop(model, batches, workload.loss, trainer, DTYPES[dtype_name])
    result["bare"] = timed_span(times, tokens, flops, skip)
    result["bare_losses"] = window_means(losses, workload.logging_steps)
    result["batch"] = {"rows": statistics.fmean(b["input_ids"].shape[0] for b in batches),
                       "padded_length": statistics.fmean(b["input_ids"].shape[1] for b in batches),
                       "tokens": statistics.fmean(tokens)}
    return result


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = sorted(set(subprocess.run(["grep", "-o", r"avx512_bf16\|amx_bf16\|avx512f\|avx2", "/proc/cpuinfo"],
                                      capture_output=True, text=True, check=False).stdout.split()))
    return (f"{model}, {os.cpu_count()} cores ({', '.join(flags)}), Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per workload and dtype, medians over the repeats of figures taken within one run: trainer / bare, per
    wall-clock and per CPU second, each side's share of the matmul peak, and (bf16 rows) the trainer's speed
    relative to the fp32 run of the same repeat."""
    by_key = {(row["workload"], row["dtype"], row["repeat"]): row for row in rows}
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["workload"], row["dtype"]), []).append(row)
    summary = []
    for (workload, dtype), runs in groups.items():
        ratios = [r["trainer"]["tokens_per_s"] / r["bare"]["tokens_per_s"] for r in runs]
        fp32 = [by_key.get((workload, "fp32", r["repeat"])) for r in runs]
        summary.append({
            "workload": workload, "dtype": dtype, "runs": len(runs), "batch": runs[0]["batch"],
            "ratio": statistics.median(ratios), "ratios": [round(r, 2) for r in ratios],
            "cpu_ratio": statistics.median(r["trainer"]["tokens_per_cpu_s"] / r["bare"]["tokens_per_cpu_s"] for r in runs),
            "trainer_peak_share": statistics.median(r["trainer"]["gflops"] / r["peak_gflops"] for r in runs),
            "bare_peak_share": statistics.median(r["bare"]["gflops"] / r["peak_gflops"] for r in runs),
            "vs_fp32": statistics.median(r["trainer"]["tokens_per_s"] / f["trainer"]["tokens_per_s"]
                                         for r, f in zip(runs, fp32, strict=True)) if all(fp32) else None,
        })
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=14, help="updates per run")
    parser.add_argument("--skip", type=int, default=2, help="first updates left out of the timing (warm-up)")
    parser.add_argument("--repeats", type=int, default=1, help="trainer/bare pairs per workload and dtype")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--workloads", nargs="+", choices=["user-lm", "dpo"], default=["user-lm", "dpo"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from userloop.train.common import large_allocations_mapped, quiet_libraries, use_bf16

    quiet_libraries()
    started = datetime.now()
    print(f"{started:%Y-%m-%d %H:%M}, {machine()}, load average {os.getloadavg()[0]:.2f}; "
          f"bf16 auto here: {'on' if use_bf16('auto') else 'off'}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, large_allocations_mapped():   # both sides as the trainers run
        for name in args.workloads:
            workload = (UserLMWorkload if name == "user-lm" else DPOWorkload)(args.steps, Path(tmp))
            for repeat in range(args.repeats):
                for dtype_name in args.dtypes:
                    load_before, peak_before = os.getloadavg()[0], matmul_peak(DTYPES[dtype_name])
                    result = measure(workload, dtype_name, args.skip)
                    peak = max(peak_before, matmul_peak(DTYPES[dtype_name]))  # what the cores gave around this run
                    row = {"workload": workload.name, "dtype": dtype_name, "repeat": repeat, **result,
                           "peak_gflops": peak, "load": [load_before, os.getloadavg()[0]]}
                    rows.append(row)
                    trainer, bare = row["trainer"], row["bare"]
                    print(f"{workload.name} {dtype_name}: trainer {trainer['tokens_per_s']:,.0f} tokens/s "
                          f"({trainer['tokens_per_cpu_s']:,.0f} per CPU-s), bare {bare['tokens_per_s']:,.0f} "
                          f"({bare['tokens_per_cpu_s']:,.0f} per CPU-s): trainer/bare "
                          f"{trainer['tokens_per_s'] / bare['tokens_per_s']:.2f}x "
                          f"({trainer['tokens_per_cpu_s'] / bare['tokens_per_cpu_s']:.2f}x per CPU-s); losses "
                          f"trainer {row['trainer_losses']} bare {row['bare_losses']}; matmul peak {peak:.1f} GFLOP/s; "
                          f"load {row['load'][0]:.1f}-{row['load'][1]:.1f}", flush=True)
    summary = summary_rows(rows)
    print(f"\nfinished {datetime.now():%H:%M}, load average {os.getloadavg()[0]:.2f}\n")
    print("| run | workload | dtype | trainer tokens/s | bare tokens/s | trainer / bare | trainer / bare per CPU-s "
          "| matmul peak GFLOP/s | trainer GFLOP/s (% of peak) | bare GFLOP/s (% of peak) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        trainer, bare, peak = row["trainer"], row["bare"], row["peak_gflops"]
        print(f"| {row['repeat'] + 1} | {row['workload']} | {row['dtype']} | {trainer['tokens_per_s']:,.0f} | "
              f"{bare['tokens_per_s']:,.0f} | {trainer['tokens_per_s'] / bare['tokens_per_s']:.2f}x | "
              f"{trainer['tokens_per_cpu_s'] / bare['tokens_per_cpu_s']:.2f}x | {peak:.1f} | "
              f"{trainer['gflops']:.1f} ({trainer['gflops'] / peak:.0%}) | {bare['gflops']:.1f} ({bare['gflops'] / peak:.0%}) "
              f"| {row['load'][0]:.1f}-{row['load'][1]:.1f} |")
    print(f"\nMedians over {args.repeats} run(s):\n")
    print("| workload | dtype | batch: rows x padded length, tokens | trainer / bare (each run) | per CPU-s "
          "| trainer, bare: % of matmul peak | trainer speed vs fp32 | logged losses, trainer / bare |")
    print("|---|---|---|---|---|---|---|---|")
    for row in summary:
        batch = row["batch"]
        losses = next((r["trainer_losses"], r["bare_losses"]) for r in rows
                      if (r["workload"], r["dtype"]) == (row["workload"], row["dtype"]))
        print(f"| {row['workload']} | {row['dtype']} | {batch['rows']:.0f} x {batch['padded_length']:.0f}, "
              f"{batch['tokens']:,.0f} | {row['ratio']:.2f}x ({', '.join(f'{r:.2f}' for r in row['ratios'])}) | "
              f"{row['cpu_ratio']:.2f}x | {row['trainer_peak_share']:.0%}, {row['bare_peak_share']:.0%} | "
              f"{'' if row['vs_fp32'] is None else format(row['vs_fp32'], '.2f') + 'x'} | {losses[0]} / {losses[1]} |")
    if args.json:
        args.json.write_text(json.dumps({"started": started.isoformat(), "machine": machine(),
                                         "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
