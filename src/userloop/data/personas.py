"""``personas.jsonl``: one record per user, ``user_id`` and ``persona`` (text or null), as ``rlhi build`` and
``userloop personas`` write it; read by the trainers, the RLHI loop and metrics, UserEval and the report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from userloop.errors import UserError
from userloop.files import read_user_lines


def persona_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of ``personas.jsonl``, each checked: ``user_id`` text or a number, ``persona`` text or null.
    Blank lines are passed over; a line that is no persona record is a one-line :class:`UserError` naming
    ``file:line``."""
    for number, line in read_user_lines(path, "personas file"):
        try:
            row = orjson.loads(line)
            user_id, persona = row["user_id"], row["persona"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: not a persona record (user_id, persona)") from None
        if not isinstance(user_id, str | int) or not isinstance(persona, str | None):
            raise UserError(f"{path}:{number}: user_id must be text and persona text or null")
        yield row


def read_personas(path: Path) -> dict[str, str]:
    """``personas.jsonl`` as persona text by user id (:func:`persona_records`); a record whose persona is
    null or empty gives its user no persona (left out)."""
    return {str(row["user_id"]): row["persona"] for row in persona_records(path)
            if row["persona"] and row["persona"].strip()}
