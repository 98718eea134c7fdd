"""How the ``userloop`` commands fail and stop: one ``error: ...`` line for anything a user can cause (exit 2),
Ctrl-C and SIGTERM as exits 130 and 143 after the same clean-up."""

from __future__ import annotations

import functools
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from userloop.errors import UserError

_sigterm_received = False  # set by on_sigterm: the KeyboardInterrupt that follows came from SIGTERM


def on_sigterm(signum, frame) -> None:
    """SIGTERM (``kill``) stops a command as Ctrl-C does, through the handler SIGINT has at that moment
    (inside a simulation asyncio's, which cancels the conversations in flight; else Python's, which raises
    KeyboardInterrupt): the same clean-up and summary follow, and the exit status is 143, not 130."""
    global _sigterm_received
    _sigterm_received = True
    on_sigint = signal.getsignal(signal.SIGINT)
    if not callable(on_sigint):  # SIGINT ignored or left to the system: stop here
        raise KeyboardInterrupt
    on_sigint(signal.SIGINT, frame)


def stopped() -> tuple[str, int]:
    """How a stopped command says so, and its exit status: 128 + the signal's number."""
    return ("terminated", 128 + signal.SIGTERM) if _sigterm_received else ("interrupted", 128 + signal.SIGINT)


@contextmanager
def _usage_errors_as_one_line():
    """A usage error (a bad option value such as ``--n abc``, a missing option, an unknown option) as one
    ``error: ...`` line and exit 2, like every other error a user can cause, instead of click's usage box."""
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError, as the click inside typer defines it
    try:
        yield
    except usage_error as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # a group run without a command: its help is shown
            raise
        command = err.ctx.command_path if err.ctx is not None else "userloop"
        typer.echo(f"error: {err.format_message().rstrip('.')} ('{command} --help' lists the options)", err=True)
        raise typer.Exit(2) from None


class OneLineUsageErrors(typer.core.TyperGroup):
    """The ``userloop`` group: usage errors of it and of every subcommand are one line (see above)."""

    def make_context(self, *args, **kwargs):
        with _usage_errors_as_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


def friendly_errors(command):
    """Turn user-caused errors into one line on stderr (exit 2), Ctrl-C into exit 130 and SIGTERM into 143.

    File-system errors on paths the user gave (an --out that is a file, no permission, disk full) are
    user-caused too: one line naming the path."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            typer.echo(f"error: {where}{err.strerror or err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            word, status = stopped()
            typer.echo(word, err=True)
            raise typer.Exit(status) from None

    return wrapper


@contextmanager
def resumable(out: Path) -> Iterator[None]:
    """A run stopped by Ctrl-C or SIGTERM says where its finished conversations are and exits 130/143."""
    try:
        yield
    except KeyboardInterrupt:
        word, status = stopped()
        typer.echo(f"{word}: finished conversations are saved in {out}; run the same command again to resume", err=True)
        raise typer.Exit(status) from None

