"""What the training commands share: config fields with help, one parser for YAML and flags, bf16.

Every trainer (``train user-lm``/``assistant``, ``train reward``, ``train dpo``) is one dataclass whose
fields carry ``metadata={"help": ...}`` (as TRL's configs do) and a ``validate()`` method; :func:`parse_config`
reads it from ``--config FILE.yaml`` and ``--FIELD VALUE`` flags (flags win) with TRL's ``TrlParser``, and
turns every mistake into one :class:`~userloop.errors.UserError` line instead of argparse's usage dump.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from userloop.errors import UserError

Config = TypeVar("Config")


@dataclass
class TrainResult:
    """What a trainer returns: the output folder and the report it wrote there."""

    out: Path
    report: dict


def option(default: Any, help: str) -> Any:
    """A config field with its help text (shown by ``--help``)."""
    return field(default=default, metadata={"help": help})


def require_at_least_one(config: Any, names: Sequence[str]) -> None:
    """Raise :class:`UserError` for the first of the fields ``names`` of ``config`` that is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(config, name)}")


def parse_config(config_class: type[Config], args: Sequence[str], prog: str, description: str,
                 defaults: Mapping[str, Any] | None = None) -> Config:
    """``config_class`` from command-line ``args``: ``--config FILE.yaml`` sets values, other flags override
    them, ``defaults`` replace the class's own defaults; the result is validated."""
    import yaml
    from trl import TrlParser

    args = list(args)
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args):
            raise UserError("--config needs a YAML file")
        if not Path(args[index + 1]).is_file():
            raise UserError(f"--config {args[index + 1]}: no such file")
    parser = TrlParser(config_class, prog=prog, description=description)
    if defaults:
        parser.set_defaults(**defaults)

    def one_line_error(message: str):  # argparse would print its usage and exit: a bad value is one line here
        raise UserError(message)

    parser.error = one_line_error
    try:
        [config] = parser.parse_args_and_config(args)
    except ValueError as err:  # unknown YAML keys, a YAML file that is not a mapping
        raise UserError(str(err)) from None
    except yaml.YAMLError as err:
        raise UserError(f"--config {args[args.index('--config') + 1]}: not valid YAML: "
                        f"{' '.join(str(err).split())[:300]}") from None
    config.validate()
    return config


def validate_bf16(setting: str) -> None:
    if setting not in ("auto", "true", "false"):
        raise UserError(f"bf16 must be auto, true or false, got {setting!r}")


def use_bf16(setting: str) -> bool:
    """Whether to train in bfloat16 mixed precision: ``auto`` is on when the GPU or the CPU supports it
    (CUDA bf16, AVX512-BF16 or AMX), else ``true``/``false``."""
    import torch

    if setting != "auto":
        return setting == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def quiet_libraries() -> None:
    """No progress bars or info logs from datasets and transformers (loading weights, mapping, saving): the
    commands report their own progress."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


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
