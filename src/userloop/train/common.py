"""What the trainers share (``train user-lm``/``assistant``, ``train reward``, ``train dpo``): the result type,
loading a pretrained model, the training arguments they set alike, bf16 choice, library quieting, step
progress, the loss curve rows, and the CPU LM head that scores only labelled positions."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from userloop.errors import UserError


@dataclass
class TrainResult:
    """What a trainer returns: the output folder and the report it wrote there."""

    out: Path
    report: dict


class TrainerSettings(Protocol):
    """The config fields every trainer has (:func:`trainer_arguments` reads them)."""

    seed: int
    batch_size: int
    epochs: float
    max_steps: int
    warmup: float
    logging_steps: int
    bf16: str


def trainer_arguments(config: TrainerSettings, out: str | Path, learning_rate: float) -> dict[str, Any]:
    """The transformers ``TrainingArguments`` every trainer sets the same way: output folder, seed, learning
    rate with warmup and cosine decay, no weight decay, batch size, length (epochs or steps), logging, bf16
    (:func:`use_bf16`), the CPU when there is no GPU, and no reporting, tqdm or data-loader workers."""
    import torch

    return {"output_dir": str(out), "seed": config.seed, "learning_rate": learning_rate,
            "per_device_train_batch_size": config.batch_size, "num_train_epochs": config.epochs,
            "max_steps": config.max_steps, "warmup_steps": config.warmup, "lr_scheduler_type": "cosine",
            "weight_decay": 0.0, "logging_steps": config.logging_steps, "bf16": use_bf16(config.bf16),
            "use_cpu": not torch.cuda.is_available(), "report_to": "none", "disable_tqdm": True,
            "dataloader_num_workers": 0}


def load_pretrained(source: str | Path, dtype: str = "auto"):
    """``(tokenizer, model)`` of a local folder or Hub id (``owner/name``) with stock transformers; the
    weights in ``dtype`` (``auto``: as stored).

    A name that is neither an existing folder nor a Hub id is refused at once (no Hub look-up, which
    offline would retry for a minute); a load failure is a :class:`UserError` of one line.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_libraries()  # transformers' "Loading weights" bar would print to the terminal
    source = str(source)
    if not Path(source).expanduser().is_dir() and not re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        raise UserError(f"no such model folder: {source} (give a folder or a Hub id such as owner/name)")
    source = str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source
    try:
        return AutoTokenizer.from_pretrained(source), AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UserError(f"cannot load {source!r} with transformers: {(lines or [type(err).__name__])[0][:300]}") from None


def curve_rows(log_history: list[dict]) -> list[dict]:
    """One row per logged step: ``step``, ``epoch`` and ``loss`` (training) or ``eval_loss`` (validation)."""
    return [{"step": entry["step"], "epoch": entry.get("epoch"), **{k: entry[k] for k in ("loss", "eval_loss") if k in entry}}
            for entry in log_history if "loss" in entry or "eval_loss" in entry]


def write_curve_rows(rows: list[dict], out: Path) -> None:
    """``loss_curve.jsonl`` in ``out``: the rows of :func:`curve_rows`, one JSON object a line."""
    with open(out / "loss_curve.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def validate_bf16(setting: str) -> None:
    if setting not in ("auto", "true", "false"):
        raise UserError(f"bf16 must be auto, true or false, got {setting!r}")


def use_bf16(setting: str) -> bool:
    """Whether to train in bfloat16 mixed precision: ``true``/``false``, or ``auto``: on a GPU that supports
    bf16, and on a CPU whose instruction set has bf16 matrix products (:func:`cpu_has_native_bf16`).

    Without them bf16 autocast is slower than float32 on a CPU, not faster: oneDNN emulates it (AVX512
    without AVX512-BF16: matrix products 4-5x slower, a training update of the demo's models about 2x; AVX2
    only: about 10x; benchmarks/README.md)."""
    import torch

    if setting != "auto":
        return setting == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 dot products in hardware (the ``avx512_bf16`` or ``amx_bf16`` flag;
    False where ``cpuinfo`` cannot be read)."""
    try:
        flags = {flag for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")
                 for flag in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@contextlib.contextmanager
def large_allocations_mapped(threshold_bytes: int = 1 << 20) -> Iterator[None]:
    """While a training runs, on glibc, give every allocation of ``threshold_bytes`` or more its own memory
    mapping, which goes back to the system as soon as it is freed.

    glibc otherwise raises this threshold to the largest block freed so far (up to 32 MiB), so that after the
    first batch the activations, logits and gradients of a batch (1-130 MiB each for the demo's models) come
    from its heap and stay resident, fragmented, once freed: a training of the demo's models held about 750 MiB
    more between updates and peaked about 170 MiB higher (benchmarks/README.md). What is computed is unchanged.
    On exit the thresholds become what glibc's own reach (mmap 32 MiB, trim 64 MiB; glibc adjusts them no more
    once set): generation in the same process afterwards (``rlhi loop``'s evaluation) took 1.7-2.1x as long
    with the 1 MiB threshold (benchmarks/README.md). Elsewhere (macOS, musl) this does nothing."""
    mallopt = _glibc_mallopt()
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, threshold_bytes)
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def _glibc_mallopt():
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return None


_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD = -3, -1  # glibc's mallopt parameter numbers (malloc.h)


def release_freed_memory() -> None:
    """Give back to the system what the process has freed: collect reference cycles (trainers, models and their
    datasets hold each other in cycles, so they outlive their use until a full collection); on glibc, return the
    allocator's free heap pages (``malloc_trim``); and return the free blocks Arrow's memory pool keeps for reuse
    (mimalloc or jemalloc hold them otherwise: about 100 MiB after ``data prepare`` reads and writes the testbed).
    Called before a training's updates and between the demo's stages, so that what an earlier step freed does
    not add to the next one's peak."""
    import gc
    import sys

    gc.collect()
    return_free_heap()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def return_free_heap() -> None:
    """On glibc, return the free pages inside the allocator's heaps to the system (``malloc_trim``): blocks under
    the mapping threshold freed between live ones. The trainers call it after every update: the demo's
    assistant training otherwise crept up by about 50 MiB in 30 updates (13 MiB with it; 76 and 78 s).
    Elsewhere this does nothing."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass


def in_memory_dataset(columns: dict[str, Any]):
    """A ``datasets.Dataset`` of ``columns`` (name -> a ``pyarrow`` array), fingerprinted by a hash of the
    columns' Arrow buffers read in place.

    ``Dataset.from_dict`` fingerprints a table built in memory by pickling the whole of it: a second copy of
    the data at once, which was the peak of the user LM trainer's set-up (profiled on the demo's data,
    benchmarks/README.md). The hash of the buffers is as deterministic."""
    import hashlib

    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    table = pa.table(columns)
    digest = hashlib.blake2b(str(table.schema).encode(), digest_size=16)
    for column in table.columns:
        for chunk in column.chunks:
            digest.update(str(chunk.offset).encode())
            for buffer in chunk.buffers():
                if buffer is not None:
                    digest.update(memoryview(buffer))
    return Dataset(InMemoryTable(table), fingerprint=digest.hexdigest())


def quiet_libraries() -> None:
    """No progress bars from datasets and transformers (loading weights, mapping, saving): the commands report
    their own progress. Their warnings stay on: the commands send them to the run's log file
    (:func:`userloop.logs.library_log`)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def end_process_group() -> None:
    """Destroy torch.distributed's process group if a launcher made one (``accelerate launch``): left to the
    interpreter's exit, gloo's threads can abort a rank that has finished ("terminate called without an active
    exception"), failing a run that trained and saved."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def step_progress(on_progress: Callable[[int, int], None] | None):
    """Quiet the libraries' own progress bars and logs (progress is reported through ``on_progress(update,
    total)`` instead) and return the ``TrainerCallback`` that calls it after every update, having returned the
    update's freed heap pages (:func:`return_free_heap`); the trainer it is given to should drop transformers'
    ``PrinterCallback``."""
    from transformers import TrainerCallback

    quiet_libraries()

    class StepProgress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            return_free_heap()
            if on_progress is not None:
                on_progress(state.global_step, state.max_steps)

    return StepProgress()


# Config fields that make TRL's fused LM head transform the logits (scale, soft cap) or add a router loss:
# models with any of them keep TRL's own head.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def score_labelled_positions(trainer) -> None:
    """Where TRL has no Triton kernel for its fused LM head (a CPU), compute what its trainers ask of that head
    from the model's own LM head applied to the labelled positions only.

    ``SFTTrainer`` and ``DPOTrainer`` call ``model(..., labels=..., fused_lm_head=True)`` for per-token
    log-probabilities, entropy, mean logit and top-1 flags. Without Triton TRL scores every position, padding
    and prompt included, in float32 tiles folded by a dozen elementwise passes: about 30% of an update of the
    demo's models (profiled). Here the LM head runs on the positions with a label, one ``log_softmax``: the
    same loss and gradients (up to float rounding; tests/test_train.common.py compares them with TRL's), the
    metrics without gradient (neither loss uses them). A right-padded batch (every row's tokens, then its
    padding) goes through the model without its attention mask: causal attention never reaches the padding
    after a row's tokens, so their outputs are the same, and without an (L x L) mask the attention takes the
    kernel that never materialises one (on the demo's longest batches 80 MiB less at the peak of a layer's
    backward pass, and faster). Applied to the trained model and the reference model."""
    if trainer.args.device.type in ("cuda", "xpu"):
        return
    models = [trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model,  # peft
              getattr(trainer, "ref_model", None)]
    for model in models:
        if model is None:
            continue
        text_config = model.config.get_text_config()
        if any(getattr(text_config, name, None) is not None for name in _LOGIT_TRANSFORMS) or getattr(
                text_config, "output_router_logits", False):
            continue
        _labelled_positions_head(model, trainer.accelerator.autocast)


_ENTROPY_ROWS = _BACKWARD_ROWS = 1024


@functools.cache
def _target_log_probs_function():
    """The autograd function ``(logits, targets) -> (log-probability of each row's target, log_softmax of the
    rows)`` (the second without gradient). Its backward pass is the one autograd derives from ``log_softmax``
    and ``gather`` (the same kernel on the same numbers: equal gradients), done in blocks of rows, each written
    over its saved log-probabilities: it holds no (positions x vocabulary) tensor besides them, where autograd's
    holds two more (about 100 MiB each for the assistant's longest batch of the demo). A second backward pass
    through the same graph (``retain_graph``) is refused by autograd, as the saved tensor was changed."""
    import torch

    class TargetLogProbs(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, targets):
            log_probs = logits.log_softmax(-1)
            ctx.save_for_backward(log_probs, targets)
            ctx.mark_non_differentiable(log_probs)
            return log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), log_probs

        @staticmethod
        def backward(ctx, grad_target, _):
            log_probs, targets = ctx.saved_tensors
            grad = log_probs  # written over block by block, each block read before it is replaced
            for start in range(0, len(log_probs), _BACKWARD_ROWS):
                rows = slice(start, start + _BACKWARD_ROWS)
                picked = torch.zeros_like(log_probs[rows]).scatter_add_(-1, targets[rows].unsqueeze(-1),
                                                                       grad_target[rows].unsqueeze(-1))
                grad[rows] = torch._log_softmax_backward_data(picked, log_probs[rows], -1, log_probs.dtype)
            return grad, None

    return TargetLogProbs


def _right_padded(attention_mask) -> bool:
    """Whether a 2-D attention mask is each row's ones followed by its zeros (padding only on the right)."""
    return attention_mask is not None and attention_mask.dim() == 2 and bool(
        (attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def _labelled_positions_head(model, autocast) -> None:
    import types

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    previous = model.forward

    @functools.wraps(type(model).forward)  # generate() checks its keyword arguments against this signature
    def forward(self, *args, fused_lm_head=False, labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or kwargs.get("shift_labels") is not None:
            return previous(*args, fused_lm_head=fused_lm_head, labels=labels, num_items_in_batch=num_items_in_batch,
                            **kwargs)
        targets = labels[:, 1:]
        mask = targets != -100
        if _right_padded(kwargs.get("attention_mask")):
            kwargs["attention_mask"] = None  # see score_labelled_positions
        with autocast():
            hidden = self.base_model(*args, **{**kwargs, "use_cache": False}).last_hidden_state[:, :-1]
            logits = self.get_output_embeddings()(hidden[mask]).float()
        target_log_probs, log_probs = _target_log_probs_function().apply(logits, targets[mask])
        per_token = {"log_probs": target_log_probs}
        with torch.no_grad():  # entropy by blocks of rows: no two more (positions x vocabulary) tensors at once
            entropy = torch.cat([-(rows.exp() * rows).sum(-1) for rows in log_probs.split(_ENTROPY_ROWS)])
            per_token |= {"entropy": entropy, "mean_logits": logits.mean(-1),
                          "is_top1": logits.argmax(-1) == targets[mask]}
        full = {name: values.new_zeros(mask.shape).masked_scatter(mask, values) for name, values in per_token.items()}
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-full["log_probs"].sum() / count, label_mask=mask, **full)

    model.forward = types.MethodType(forward, model)
