"""userloop.files: every way a user-named file can fail to be read is one line; state files are written atomically."""

import builtins
import gzip
import json
import os
import stat

import pytest

import userloop.files
from userloop.errors import UserError
from userloop.files import (
    check_output_file,
    read_user_bytes,
    read_user_json,
    read_user_lines,
    read_user_text,
    write_atomic,
)


def deny_reading(monkeypatch, path) -> None:
    """Reading ``path`` raises PermissionError, as for a file without read permission (chmod has no effect
    on root, which the test machine may be)."""
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_folder_and_unreadable_files_are_one_line_naming_the_file(tmp_path, monkeypatch):
    with pytest.raises(UserError) as missing:
        read_user_bytes(tmp_path / "nope.jsonl", "scenario file")
    assert one_line(missing) == f"scenario file not found: {tmp_path / 'nope.jsonl'}"
    with pytest.raises(UserError) as folder:
        read_user_text(tmp_path, "history file")
    assert one_line(folder).startswith(f"history file is a folder: {tmp_path}")
    locked = tmp_path / "locked.json"
    locked.write_text("{}")
    deny_reading(monkeypatch, locked)
    with pytest.raises(UserError) as denied:
        read_user_json(locked, "scripted model file")
    assert str(locked) in one_line(denied) and "permission denied" in one_line(denied) and "chmod" in one_line(denied)


def test_a_latin1_file_is_one_line_saying_where_and_how_to_convert(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"id": "a"}\n{"id": "caf\u00e9"}\n'.encode("latin-1"))
    for read in (read_user_bytes, read_user_text, read_user_lines, read_user_json):
        if read is read_user_bytes:
            assert read(path, "scenario file") == path.read_bytes()
            continue
        with pytest.raises(UserError) as err:
            read(path, "scenario file")
        assert one_line(err).startswith(f"scenario file {path} is not UTF-8 text (byte 0xe9 on line 2)")
        assert "iconv" in one_line(err)


def test_text_lines_json_and_gzip(tmp_path):
    path = tmp_path / "rows.jsonl"
    # a byte-order mark, CRLF, blank lines, U+2028 inside a string
    path.write_bytes('\ufeff{"a": 1}\r\n\n  \n{"b": "x\u2028y"}\n'.encode())
    assert read_user_lines(path, "file") == [(1, '{"a": 1}'), (4, '{"b": "x\u2028y"}')]
    assert [json.loads(line) for _, line in read_user_lines(path, "file")] == [{"a": 1}, {"b": "x\u2028y"}]
    packed = tmp_path / "rows.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"a": 1}\n'))
    assert read_user_lines(packed, "file") == [(1, '{"a": 1}')]
    packed.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:30])
    with pytest.raises(UserError, match="is not a readable gzip file"):
        read_user_bytes(packed, "file")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UserError, match=r"^history file .*bad.json is not valid JSON"):
        read_user_json(bad, "history file")


def test_write_atomic_replaces_the_whole_file_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    write_atomic(path, b'{"old": true}')
    assert path.read_bytes() == b'{"old": true}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # the usual permissions, not a temp file's 0600

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(userloop.files.os, "fsync", crash)  # the disk fills up while the new content is written
    with pytest.raises(OSError):
        write_atomic(path, b'{"new": true, "longer": "content"}')
    assert path.read_bytes() == b'{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no partial file left behind
    monkeypatch.undo()
    write_atomic(path, "{\"new\": \"caf\u00e9\"}")
    assert json.loads(path.read_text(encoding="utf-8")) == {"new": "caf\u00e9"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_check_output_file(tmp_path):
    assert check_output_file(tmp_path / "p.jsonl", "personas.jsonl") == tmp_path / "p.jsonl"
    with pytest.raises(UserError, match=r"--out .* is a folder; give a file name \(e.g. .*personas.jsonl\)"):
        check_output_file(tmp_path, "personas.jsonl")
    with pytest.raises(UserError, match=r"the folder .*missing does not exist; create it first \(mkdir -p"):
        check_output_file(tmp_path / "missing" / "p.jsonl", "personas.jsonl")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"the folder .*a_file is a file"):
        check_output_file(tmp_path / "a_file" / "p.jsonl", "personas.jsonl")
    assert not (tmp_path / "missing").exists()
