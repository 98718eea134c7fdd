"""Errors a user can cause. The CLI prints them as one line (never a traceback) and exits 2."""

from pathlib import Path
from typing import Any


class UserError(Exception):
    """A problem with the user's input or configuration, explained in one line."""


def missing_dependency(package: str, extra: str) -> UserError:
    """The one-line hint for an optional dependency that is not installed."""
    return UserError(f"this needs the '{package}' package: pip install 'userloop[{extra}]'")


def read_json_file(path: str | Path, what: str) -> Any:
    """The JSON value in a file the user named; a missing file, a folder or invalid JSON is one line
    naming ``what`` the file is (e.g. "history file")."""
    import orjson

    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{what} is a folder: {path}") from None
    except orjson.JSONDecodeError as err:
        raise UserError(f"{what} {path} is not valid JSON: {err}") from None
