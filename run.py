#!/usr/bin/env python3
"""The README's two commands: `python3 run.py demo` (the main job) and `python3 run.py test`.

Each creates `.venv` when it is missing and installs what it needs (pinned by constraints.txt,
which keeps torch on the CPU build 2.13.0), then runs. Only python3 is needed on the machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXTRAS = {"demo": "demo", "test": "dev"}


def ensure_environment(extra: str) -> None:
    """Create the virtual environment and install userloop[extra] unless already done."""
    inputs = b"".join((ROOT / name).read_bytes() for name in ("pyproject.toml", "constraints.txt"))
    stamp = VENV / f".installed-{extra}-{hashlib.sha256(inputs).hexdigest()[:16]}"
    if stamp.exists():
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print(f"installing userloop[{extra}] into {VENV} (pinned by constraints.txt)", flush=True)
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[{extra}]"], check=True)
    for old in VENV.glob(f".installed-{extra}-*"):
        old.unlink()
    stamp.touch()


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, cwd=ROOT)


def demo() -> None:
    """The main job: `userloop demo --out demo` (docs/demo.md), further arguments passed on (e.g. --force)."""
    run(str(BIN / "userloop"), "demo", "--out", "demo", *sys.argv[2:])


def test() -> None:
    run(str(BIN / "python"), "-m", "pytest", "-q", *sys.argv[2:])


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in EXTRAS:
        print("usage: python3 run.py demo [userloop demo flags] | test [pytest args]", file=sys.stderr)
        return 2
    try:
        ensure_environment(EXTRAS[command])
        {"demo": demo, "test": test}[command]()
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
