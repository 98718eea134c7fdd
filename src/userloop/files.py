"""Files the user names, read with one-line errors; files a later run reads back, written atomically.

Every file a user names (a scenario file, a scripted model file, ``--history``, a personas or labels file,
probes, ``--config``) is read through :func:`read_user_bytes` (or :func:`read_user_text`,
:func:`read_user_lines`, :func:`read_user_json`, :func:`open_user_file` for a file read as a stream): a
missing file, a folder, no permission, a broken ``.gz`` or bytes that are not UTF-8 are one
:class:`~userloop.errors.UserError` line naming the file and what to do, never a traceback.

Every file a later run reads back to decide what is done (``run.json``, ``summary.json``, manifests, a
stage's report) is written with :func:`write_atomic`: into a new file in the same folder, flushed to the
disk, then renamed over the old one, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import gzip
import os
import secrets
import zlib
from pathlib import Path
from typing import IO, Any

from userloop.errors import UserError


def _unreadable(path: str | Path, what: str, err: OSError) -> UserError:
    """The one line for an :class:`OSError` raised reading the file ``path`` that the user named as ``what``."""
    if isinstance(err, FileNotFoundError):
        return UserError(f"{what} not found: {path}")
    if isinstance(err, IsADirectoryError):
        return UserError(f"{what} is a folder: {path} (give a file)")
    if isinstance(err, PermissionError):
        return UserError(f"{what} {path} cannot be read: permission denied (make it readable, e.g. chmod u+r)")
    return UserError(f"{what} {path} cannot be read: {err.strerror or err}")


def open_user_file(path: str | Path, what: str) -> IO[bytes]:
    """``path`` opened for reading bytes (decompressed when it ends in ``.gz``); a file that cannot be opened
    is one :class:`UserError` line, as in :func:`read_user_bytes`.

    Errors that come while reading the stream (a ``.gz`` cut short) are the caller's to report."""
    try:
        return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")
    except OSError as err:
        raise _unreadable(path, what, err) from None


def read_user_bytes(path: str | Path, what: str) -> bytes:
    """The bytes of the file ``path`` (decompressed when it ends in ``.gz``) that the user named as ``what``
    (e.g. "scenario file"); anything that keeps it from being read is one :class:`UserError` line."""
    try:
        with open_user_file(path, what) as file:
            return file.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise UserError(f"{what} {path} is not a readable gzip file ({err}): give the file uncompressed") from None
    except OSError as err:
        raise _unreadable(path, what, err) from None


def read_user_text(path: str | Path, what: str) -> str:
    """The text of a UTF-8 file the user named (a byte-order mark is dropped); bytes that are not UTF-8
    (a Latin-1 file) are one line naming where, and how to convert the file."""
    data = read_user_bytes(path, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{what} {path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}): save it as "
                        f"UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > fixed && mv fixed {path}") from None


def read_user_lines(path: str | Path, what: str) -> list[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file the user named (JSON lines), numbered from 1. Lines end at
    newlines only: a JSON string may hold other line separators (U+2028) as they are."""
    lines = read_user_text(path, what).split("\n")
    return [(number, line.rstrip("\r")) for number, line in enumerate(lines, start=1) if line.strip()]


def read_user_json(path: str | Path, what: str) -> Any:
    """The JSON value in a file the user named; an unreadable file or invalid JSON is one line naming
    ``what`` the file is (e.g. "history file")."""
    import orjson

    try:
        return orjson.loads(read_user_text(path, what))
    except orjson.JSONDecodeError as err:
        raise UserError(f"{what} {path} is not valid JSON: {err}") from None


def write_atomic(path: str | Path, content: bytes | str) -> Path:
    """Write ``content`` (text as UTF-8) to ``path`` so that a crash leaves the old file or the new one:
    into a new file beside it, flushed to the disk, then renamed over ``path``. Returns ``path``."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 less the umask
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry for a renamed file to the disk (where the system allows opening folders)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def check_output_file(path: str | Path, example: str, option: str = "--out") -> Path:
    """``path`` as a file to write: its folder must exist (a mistyped folder is not created silently) and
    ``path`` must not be a folder (``example`` is a file name to suggest); else one :class:`UserError`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name (e.g. {path / example})")
    folder = path.parent
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise UserError(f"{option} {path}: the folder {folder} {what}; create it first (mkdir -p {folder}) "
                        "or give a file in an existing folder")
    return path
