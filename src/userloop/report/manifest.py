"""The demo folder's ``manifest.json``: its name, version and path keys, and :func:`read_manifest`.

``userloop.demo`` writes it; the report and the viewer read it (they sit below the demo, so the reader lives here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from userloop.errors import UserError
from userloop.files import read_user_json

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
PATH_KEYS = ("raw", "prepared", "user_lm", "assistant", "simulations", "evaluate_assistant", "validity", "metrics",
             "rlhi", "dpo", "usereval")


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a demo folder, with ``paths`` (and ``report``) resolved to absolute Paths (None: not run).

    ``paths["simulations"]`` maps each simulation name to its run folder; ``dir`` is the demo folder."""
    directory = Path(directory).resolve()
    if not (directory / MANIFEST).is_file():
        raise UserError(f"{directory} is not a demo folder: no {MANIFEST} (run 'userloop demo --out {directory}')")
    manifest = read_user_json(directory / MANIFEST, "demo manifest")
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        version = manifest.get("version") if isinstance(manifest, dict) else None
        raise UserError(f"{directory / MANIFEST}: manifest version {version!r} is not {MANIFEST_VERSION} "
                        "(written by another userloop version: run the demo again with --force)")
    paths = manifest.get("paths") or {}
    resolved: dict[str, Any] = {}
    for key in PATH_KEYS:
        value = paths.get(key)
        if key == "simulations":
            resolved[key] = {name: directory / relative for name, relative in (value or {}).items()}
        else:
            resolved[key] = None if value is None else directory / value
    manifest["paths"] = resolved
    manifest["report"] = None if manifest.get("report") is None else directory / manifest["report"]
    manifest["dir"] = directory
    return manifest
