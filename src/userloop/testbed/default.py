"""The default data of every command: the testbed population (2,000 users, seed 0), generated once into the cache."""

from __future__ import annotations

from pathlib import Path

from userloop.cache import cache_dir
from userloop.data.prepare import PrepareConfig, prepare
from userloop.testbed.population import TESTBED_VERSION, generate

DEFAULT_USERS = 2000
DEFAULT_SEED = 0


def default_data(prepared: bool = True) -> Path:
    """The testbed population's folder in the cache (generated on first use); with ``prepared`` the folder
    that ``userloop data prepare`` made of it."""
    root = cache_dir() / f"testbed-v{TESTBED_VERSION}-users{DEFAULT_USERS}-seed{DEFAULT_SEED}"
    raw, out = root / "raw", root / "prepared"
    if not (raw / "summary.json").is_file():
        generate(DEFAULT_USERS, DEFAULT_SEED).write(raw)
    if not prepared:
        return raw
    if not (out / "report.json").is_file():
        prepare([str(raw / "conversations.jsonl")], out, PrepareConfig())
    return out
