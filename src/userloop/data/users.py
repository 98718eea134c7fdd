"""Who a conversation's user is, and user-level train/validation/test splits.

User identity (``user_key``):

* ``user+agent`` (default): the source's user id plus the browser user-agent where the source
  records one. On WildChat that is ``hashed_ip`` + ``header['user-agent']``, the linking the
  dataset card describes.
* ``user``: the source's user id alone (WildChat: ``hashed_ip``).

A conversation without a user id is its own user (key ``conversation:<id>``), so it can never
pull another user's conversations across splits.

Splits (``assign_splits``): users are stratified by country (the country of their first
conversation; countries with fewer than ``MIN_STRATUM`` users share one stratum), and within each
stratum users are sorted by key, shuffled with the seed and cut by the ratios. The result depends
only on the set of users and the seed, not on input order, and no user is in two splits.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from userloop.conversation import Conversation
from userloop.errors import UserError

USER_IDENTITIES = ("user+agent", "user")
SPLIT_NAMES = ("train", "validation", "test")
MIN_STRATUM = 20


def user_key(conv: Conversation, identity: str = "user+agent") -> str:
    """The key that groups a conversation with its user's other conversations."""
    if not conv.user_id:
        return f"conversation:{conv.id}"
    if identity == "user+agent":
        agent = _user_agent(conv)
        if agent:
            return f"{conv.user_id}|{agent}"
    return conv.user_id


def _user_agent(conv: Conversation) -> str | None:
    header = conv.extra.get("header")
    if isinstance(header, dict):
        agent = header.get("user-agent")
        if isinstance(agent, str):
            return agent
    return None


def parse_ratios(text: str) -> tuple[float, float, float]:
    """'90/5/5' (or '0.9/0.05/0.05') -> fractions of train, validation, test."""
    try:
        parts = [float(p) for p in text.replace(",", "/").split("/")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise UserError(f"--splits must be three non-negative numbers like 90/5/5, got '{text}'")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def assign_splits(users: dict[str, str | None], ratios: tuple[float, float, float], seed: int) -> dict[str, int]:
    """Map each user key to a split index (0 train, 1 validation, 2 test).

    ``users`` maps user key -> country (or None)."""
    by_country: dict[str | None, list[str]] = defaultdict(list)
    for key, country in users.items():
        by_country[country].append(key)
    strata: dict[str, list[str]] = defaultdict(list)
    for country, keys in by_country.items():
        strata[str(country) if len(keys) >= MIN_STRATUM else "(small countries)"].extend(keys)
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(ratios)
    out: dict[str, int] = {}
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        order = rng.permutation(len(keys))
        bounds = np.rint(cuts * len(keys)).astype(int)
        split_of_rank = np.searchsorted(bounds, np.arange(len(keys)), side="right")
        for rank, position in enumerate(order):
            out[keys[position]] = int(min(split_of_rank[rank], 2))
    return out
