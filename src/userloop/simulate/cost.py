"""What a run cost: its token counts per role priced by a price table (``simulate --prices FILE``).

A price table is a YAML or JSON mapping of model specs to their prices per one million tokens,
``{"openai:gpt-4o-mini@https://api.openai.com/v1": {"prompt": 0.15, "completion": 0.6}}``, in whatever currency
the table is written in. Every model of the run (the user's and the assistant's spec, exactly as the run names
them) must have a price; a free one is ``{prompt: 0, completion: 0}``. The tokens are the ones the records
sum per conversation (every call of a turn, guardrail resamples included); the reply classifier's calls are
not recorded and not priced.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from userloop.errors import UserError
from userloop.files import read_user_text

PRICE_PARTS = ("prompt", "completion")
PER_TOKENS = 1_000_000


def load_prices(path: str | Path) -> dict[str, dict[str, float]]:
    """The price table in ``path`` (YAML or JSON): model spec -> {"prompt", "completion"} per 1M tokens; any way it
    can be wrong is one :class:`UserError` line."""
    import yaml

    text = read_user_text(path, "--prices file")
    try:
        table = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as err:
        raise UserError(f"--prices {path}: not valid YAML or JSON: {' '.join(str(err).split())[:200]}") from None
    example = "e.g. {\"openai:gpt-4o-mini\": {\"prompt\": 0.15, \"completion\": 0.6}} (per 1M tokens)"
    if not isinstance(table, dict) or not table:
        raise UserError(f"--prices {path}: expected a mapping of model specs to prices, {example}")
    prices = {}
    for spec, price in table.items():
        if not isinstance(spec, str) or not isinstance(price, dict) or set(price) != set(PRICE_PARTS) or not all(
                isinstance(price[part], int | float) and not isinstance(price[part], bool) and price[part] >= 0
                for part in PRICE_PARTS):
            raise UserError(f"--prices {path}: the price of {spec!r} must be {{prompt: NUMBER, completion: NUMBER}} "
                            f"(per 1M tokens, >= 0), got {price!r}")
        prices[spec] = {part: float(price[part]) for part in PRICE_PARTS}
    return prices


def check_priced(prices: Mapping[str, Mapping[str, float]], models: Mapping[str, str | None], path: str | Path) -> None:
    """A :class:`UserError` naming the first model of ``models`` (role -> spec) that ``prices`` has no price for."""
    for role, spec in models.items():
        if spec is not None and spec not in prices:
            raise UserError(f"--prices {path} has no price for the {role} model {spec!r}: add "
                            f"{spec!r}: {{prompt: ..., completion: ...}} (per 1M tokens; 0 for a free model)")


def run_cost(tokens: Mapping[str, Mapping[str, int]], models: Mapping[str, str | None],
             prices: Mapping[str, Mapping[str, float]], conversations: int) -> dict[str, Any]:
    """The cost of ``tokens`` (role -> {"prompt", "completion"} counts, summed over the run) with each role's model
    (``models``: role -> spec; None: the role made no calls) priced by ``prices``: per role and part, the run's total
    and the mean per conversation, in the price table's currency."""
    by_role = {}
    for role, spec in models.items():
        if spec is None:
            continue
        parts = {part: tokens[role][part] * prices[spec][part] / PER_TOKENS for part in PRICE_PARTS}
        by_role[role] = {"model": spec, **parts, "total": sum(parts.values())}
    total = sum(role["total"] for role in by_role.values())
    return {"by_role": by_role, "total": total, "per_conversation": total / conversations if conversations else None}
