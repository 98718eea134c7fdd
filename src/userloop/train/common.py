"""What the trainers share (``train user-lm``/``assistant``, ``train reward``, ``train dpo``): the result type,
bf16 choice, library quieting, step progress, and the CPU LM head that scores only labelled positions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from userloop.errors import UserError


@dataclass
class TrainResult:
    """What a trainer returns: the output folder and the report it wrote there."""

    out: Path
    report: dict


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


def quiet_libraries() -> None:
    """No progress bars from datasets and transformers (loading weights, mapping, saving): the commands report
    their own progress. Their warnings stay on: the commands send them to the run's log file
    (:func:`userloop.logs.library_log`)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def step_progress(on_progress: Callable[[int, int], None] | None):
    """Quiet the libraries' own progress bars and logs (progress is reported through ``on_progress(update,
    total)`` instead) and return the ``TrainerCallback`` that calls it after every update; the trainer it
    is given to should drop transformers' ``PrinterCallback``."""
    from transformers import TrainerCallback

    quiet_libraries()

    class StepProgress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
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
    metrics without gradient (neither loss uses them). Applied to the trained model and the reference model."""
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


def _labelled_positions_head(model, autocast) -> None:
    import functools
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
        with autocast():
            hidden = self.base_model(*args, **{**kwargs, "use_cache": False}).last_hidden_state[:, :-1]
            logits = self.get_output_embeddings()(hidden[mask]).float()
        log_probs = logits.log_softmax(-1)
        per_token = {"log_probs": log_probs.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)}
        with torch.no_grad():
            per_token |= {"entropy": -(log_probs.exp() * log_probs).sum(-1), "mean_logits": logits.mean(-1),
                          "is_top1": logits.argmax(-1) == targets[mask]}
        full = {name: values.new_zeros(mask.shape).masked_scatter(mask, values) for name, values in per_token.items()}
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-full["log_probs"].sum() / count, label_mask=mask, **full)

    model.forward = types.MethodType(forward, model)
