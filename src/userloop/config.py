"""Config dataclasses shared by every command: fields with help, one parser for YAML and flags.

Every command's config is one dataclass whose fields carry ``metadata={"help": ...}`` (as TRL's configs do)
and a ``validate()`` method; :func:`parse_config` reads it from ``--config FILE.yaml`` and ``--FIELD VALUE``
flags (flags win) with TRL's ``TrlParser``, and turns every mistake into one
:class:`~userloop.errors.UserError` line instead of argparse's usage dump.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any, TypeVar

from userloop.errors import UserError
from userloop.files import read_user_text

Config = TypeVar("Config")


def option(default: Any, help: str) -> Any:
    """A config field with its help text (shown by ``--help``)."""
    return field(default=default, metadata={"help": help})


def avoid_termination_turns(text: str) -> int | None:
    """``--avoid-termination-turns`` (``serve``, ``user-turn``): a number of user turns, or ``always`` (None)."""
    if text.strip().lower() == "always":
        return None
    if text.strip().isdigit():
        return int(text)
    raise UserError(f"--avoid-termination-turns must be a number or 'always', got {text!r}")


def require_at_least_one(config: Any, names: Sequence[str]) -> None:
    """Raise :class:`UserError` for the first of the fields ``names`` of ``config`` that is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(config, name)}")


def parse_config(config_class: type[Config], args: Sequence[str], prog: str, description: str,
                 defaults: Mapping[str, Any] | None = None) -> Config:
    """``config_class`` from command-line ``args``: ``--config FILE.yaml`` sets values, other flags override
    them, ``defaults`` replace the class's own defaults; the result is validated."""
    from trl import TrlParser

    args = list(args)
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args):
            raise UserError("--config needs a YAML file")
        read_config_file(args[index + 1])  # missing, unreadable, not UTF-8, not YAML, not a mapping: one line here
    parser = TrlParser(config_class, prog=prog, description=description)
    if defaults:
        parser.set_defaults(**defaults)

    def one_line_error(message: str):  # argparse would print its usage and exit: a bad value is one line here
        raise UserError(message)

    parser.error = one_line_error
    try:
        [config] = parser.parse_args_and_config(args)
    except ValueError as err:  # unknown YAML keys
        raise UserError(str(err)) from None
    config.validate()
    return config


def read_config_file(path: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` given as ``--config``; every way it can be wrong is one
    :class:`UserError` line."""
    import yaml

    text = read_user_text(path, "--config file")  # missing, unreadable or not UTF-8
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"--config {path}: not valid YAML: {' '.join(str(err).split())[:300]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
        raise UserError(f"--config {path}: not a mapping of option names to values")
    return values
