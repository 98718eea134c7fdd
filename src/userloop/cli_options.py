"""Command-line options generated from config dataclasses, and ``--config FILE.yaml`` for every long command.

A command's config is a dataclass whose fields carry their default and ``metadata={"help": ...}`` (see
:mod:`userloop.config`). :func:`from_config` turns the fields into the command's typer options (type, default,
help; ``--x/--no-x`` for a bool that is on by default, a flag for one that is off; repeatable for a tuple) and
hands the command the validated config; :class:`Flag` says where the command line differs from the field (a short
flag, another name, a path type). So a default or a help text is written once, in the config.

The fields are read from the config module's source (:func:`config_fields`), not by importing it: typer builds
every command's options on each run, and importing the modules behind them (numpy, asyncio, the testbed...)
would make ``userloop --help`` twice as slow. A test checks that what is read equals the dataclass.

``--config FILE.yaml`` (:func:`with_config_file`) sets any option of the command from a YAML mapping (keys are
the options' names with ``_``); flags given on the command line win, and the types are checked as the flags'.
:func:`command` registers a command with all of this, one-line errors and, for commands that load models,
``--timeout``/``--retries`` (:func:`calls_models`).
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer

from userloop.cli_errors import friendly_errors
from userloop.errors import UserError
from userloop.models.base import REQUEST_RETRIES, REQUEST_TIMEOUT_S

_NO_DEFAULT = inspect.Parameter.empty
_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "Path": Path, "None": None, "tuple": tuple, "list": list}


class ConfigField(NamedTuple):
    """A config dataclass field as its module's source declares it."""

    name: str
    annotation: str
    default: Any
    help: str


@functools.cache
def config_fields(config: str) -> dict[str, ConfigField]:
    """The fields of the config dataclass ``"module:Class"`` with a literal default and a help text, read from the
    module's source: ``name: TYPE = option(DEFAULT, "help")`` or ``field(default=DEFAULT, metadata={"help": ...})``."""
    module_name, _, class_name = config.partition(":")
    source = Path(__file__).parent.joinpath(*module_name.split(".")[1:]).with_suffix(".py")
    # Only the class is parsed (up to the next line that starts in column 0): a whole module takes ~10x longer.
    [block] = re.findall(rf"^class {class_name}\b.*?(?=^\S|\Z)", source.read_text(), re.MULTILINE | re.DOTALL)
    [cls] = ast.parse(block).body
    found = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Call)):
            continue
        call, keywords = node.value, {kw.arg: kw.value for kw in node.value.keywords}
        if getattr(call.func, "id", None) == "option":
            default, help_text = call.args[0], call.args[1] if len(call.args) > 1 else keywords["help"]
        elif "metadata" in keywords and "default" in keywords:
            default, help_text = keywords["default"], ast.literal_eval(keywords["metadata"])["help"]
        else:
            continue
        try:
            default = ast.literal_eval(default)
        except ValueError:  # a named constant: not a command-line option
            continue
        found[node.target.id] = ConfigField(node.target.id, ast.unparse(node.annotation), default,
                                            help_text if isinstance(help_text, str) else ast.literal_eval(help_text))
    return found


def config_help(config: str, name: str) -> str:
    """The help text of field ``name`` of the config dataclass ``"module:Class"``."""
    return config_fields(config)[name].help


@dataclass(frozen=True)
class Flag:
    """Where a field's command-line option differs from the field: ``decls`` (``"--out", "-o"`` or
    ``"--drop-toxic/--keep-toxic"``), the command-line ``type`` and ``default``, ``help``, ``required`` (no
    default on the command line; ``--config`` may still give it), ``to_field`` (the option's value -> the field's)."""

    decls: tuple[str, ...] = ()
    type: Any = None
    default: Any = _NO_DEFAULT
    help: str | None = None
    required: bool = False
    to_field: Callable[[Any], Any] | None = None


def _option_type(annotation: str) -> Any:
    """The typer type of a field annotation: tuples become repeatable options (lists)."""
    if annotation.startswith("tuple["):
        item = annotation.removeprefix("tuple[").split(",")[0].strip()
        return list[_TYPES[item]] | None
    return eval(annotation, {"__builtins__": {}}, _TYPES)  # annotations of our own config classes


def _field_parameter(field: ConfigField, flag: Flag) -> inspect.Parameter:
    option_type = flag.type or _option_type(field.annotation)
    default = flag.default if flag.default is not _NO_DEFAULT else field.default
    default = None if default == () else default  # an empty repeatable option
    if flag.required:
        default = _NO_DEFAULT
    decls = flag.decls
    if not decls and option_type is bool:
        dashed = "--" + field.name.replace("_", "-")
        decls = (f"{dashed}/--no-{field.name.replace('_', '-')}",) if default else (dashed,)
    annotation = Annotated[option_type, typer.Option(*decls, help=flag.help or field.help)]
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _read_config_file(ctx: typer.Context, value: Path | None) -> None:
    """``--config``'s callback (eager: before the other options): the file's values become the defaults of the
    command's options, so a flag on the command line overrides them."""
    from userloop.config import read_config_file

    if value is None:
        return
    try:
        values = read_config_file(str(value))
        names = {param.name for param in ctx.command.params if not param.is_eager}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"--config {value}: unknown option{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(unknown)} ('{ctx.command_path} --help' lists them; write - as _)")
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    ctx.default_map = {**(ctx.default_map or {}), **values}


_CONFIG_FILE_OPTION = inspect.Parameter(
    "config_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Path | None, typer.Option(
        "--config", is_eager=True, callback=_read_config_file,
        help="YAML file of option values (keys: option names with _ for -); flags on the command line override it")])


def with_config_file(command):
    """Give a command ``--config FILE.yaml``: the file sets its options, flags override them."""

    @functools.wraps(command)
    def wrapper(*args, config_file: Path | None = None, **kwargs):
        return command(*args, **kwargs)

    signature = inspect.signature(command, eval_str=True)
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), _CONFIG_FILE_OPTION])
    return wrapper


def from_config(config: str, *, fields: Sequence[str] | None = None, first: Sequence[str] = (), **flags: Flag):
    """Options from the fields of the config dataclass ``"module:Class"`` (``fields``: which, in this order;
    default all), plus ``--config FILE.yaml``.

    The command's own parameters declared before its ``config`` parameter come first, then the fields, then its
    other parameters; ``first`` names options (the command's or fields) to put before all of these. With a
    ``config`` parameter the command gets the validated dataclass, else the fields' values as keyword arguments."""
    chosen = [config_fields(config)[name] for name in (fields or config_fields(config))]
    unknown = set(flags) - {field.name for field in chosen}
    if unknown:
        raise TypeError(f"flags for fields {sorted(unknown)} that are not options of {config}")

    def decorate(command):
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = [p.name for p in own]
        takes_config = "config" in names
        before = own[:names.index("config")] if takes_config else []
        after = [p for p in own[len(before):] if p.name != "config"]
        generated = [_field_parameter(field, flags.get(field.name, Flag())) for field in chosen]
        ordered = before + generated + after
        leading = [p for name in first for p in ordered if p.name == name]
        parameters = leading + [p for p in ordered if p not in leading] + [_CONFIG_FILE_OPTION]

        @functools.wraps(command)
        def wrapper(*, config_file: Path | None = None, **kwargs):
            values = {}
            for field in chosen:
                value, to_field = kwargs.pop(field.name), flags.get(field.name, Flag()).to_field
                if to_field is None and field.annotation.startswith("tuple["):
                    to_field = _as_tuple
                values[field.name] = to_field(value) if to_field else value
            if not takes_config:
                return command(**kwargs, **values)
            return command(**kwargs, config=build_config(config, values))

        wrapper.__signature__ = inspect.Signature(parameters)
        return wrapper

    return decorate


def _as_tuple(values: list | None) -> tuple:
    return tuple(values or ())


def build_config(config: str, values: dict[str, Any]) -> Any:
    """The config dataclass ``"module:Class"`` with ``values``, validated (by its ``validate()``, or on creation)."""
    import importlib

    module_name, _, class_name = config.partition(":")
    built = getattr(importlib.import_module(module_name), class_name)(**values)
    if hasattr(built, "validate"):
        built.validate()
    return built


def as_text(value: Any) -> Any:
    """A path option's value for a field that holds text."""
    return None if value is None else str(value)


_REQUEST_LIMIT_OPTIONS = (
    inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[float | None, typer.Option(
        "--timeout", help="seconds a request to a model server (openai: specs) may take before it counts as failed "
                          f"(default: $USERLOOP_TIMEOUT, else {REQUEST_TIMEOUT_S:g})")]),
    inspect.Parameter("retries", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[int | None, typer.Option(
        "--retries", help="how often a failed request to a model server (timeout, lost connection, HTTP 408/429/5xx) "
                          f"is retried, with backoff (default: $USERLOOP_RETRIES, else {REQUEST_RETRIES})")]),
)


def calls_models(command):
    """Give a command that loads models ``--timeout`` and ``--retries``: the request limits of every model
    that calls a server which the command loads (:func:`userloop.models.registry.request_limits`)."""

    @functools.wraps(command)
    def wrapper(*args, timeout: float | None = None, retries: int | None = None, **kwargs):
        from userloop.models.base import checked_retries, checked_timeout
        from userloop.models.registry import request_limits

        with request_limits(timeout=None if timeout is None else checked_timeout(timeout, "--timeout"),
                            max_retries=None if retries is None else checked_retries(retries, "--retries")):
            return command(*args, **kwargs)

    signature = inspect.signature(command, eval_str=True)
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *_REQUEST_LIMIT_OPTIONS])
    return wrapper


def command(group: typer.Typer, name: str, config: str | None = None, *, models: bool = False,
            config_file: bool = False, **options: Any):
    """Register the decorated function as command ``name`` of ``group``: errors a user can cause as one line
    (:func:`friendly_errors`), ``--timeout``/``--retries`` when it loads ``models`` (:func:`calls_models`), its
    options from the dataclass ``config`` (:func:`from_config` with ``options``) or, with ``config_file``, only
    ``--config`` (:func:`with_config_file`)."""

    def decorate(function):
        wrapped = from_config(config, **options)(function) if config else function
        wrapped = with_config_file(wrapped) if config_file else wrapped
        group.command(name)(friendly_errors(calls_models(wrapped) if models else wrapped))
        return function

    return decorate


def default_data(prepared: bool) -> Path:
    """What a command given no ``--data`` reads: the built-in testbed (generated into the cache on first use), with
    a note on stderr."""
    from userloop.testbed.default import default_data as testbed

    path = testbed(prepared=prepared)
    typer.echo(f"no data given: using the built-in testbed at {path}", err=True)
    return path


def print_version(value: bool) -> None:
    """``--version``'s callback (eager): print the version and stop."""
    from userloop.version import __version__

    if value:
        typer.echo(f"userloop {__version__}")
        raise typer.Exit()
