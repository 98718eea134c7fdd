"""Ask a chat model for answers that must pass a check: one batched call, one retry for the failures.

Every LLM-backed RLHI step (follow-up judge, persona summaries, rewrites, the rewrite judge) uses
:func:`ask_validated`: prompts go through :meth:`ChatModel.generate` in one batch (the ``openai``
provider spreads a batch over its replicas), each answer is validated, an invalid answer is asked again
once with the reason appended, and what is still invalid comes back as ``None`` for the caller's
fallback. Counts: ``valid`` (first answer), ``retried`` (second answer), ``invalid`` (both failed),
and ``error: REASON`` per first-round failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from userloop.models import GenerationParams

T = TypeVar("T")
Validator = Callable[[int, str], tuple[Any, str | None]]   # (prompt index, answer) -> (value or None, error)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in a model's answer (code fences and surrounding prose allowed), or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = orjson.loads(text[start:end + 1])
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def ask_validated(model, prompts: Sequence[list[dict[str, str]]], validate: Validator, retry_message: str,
                  max_new_tokens: int, counts: Counter) -> list[Any]:
    """One validated value (or None) per prompt; ``retry_message`` gets ``{error}`` filled in."""
    if not prompts:
        return []
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0)
    answers = model.generate(list(prompts), params)
    values: list[Any] = []
    retry: list[tuple[int, str, str]] = []
    for i, completion in enumerate(answers):
        value, error = validate(i, completion.text)
        values.append(value)
        if error is None:
            counts["valid"] += 1
        else:
            counts[f"error: {error}"] += 1
            retry.append((i, completion.text, error))
    if retry:
        again = [[*prompts[i], {"role": "assistant", "content": answer},
                  {"role": "user", "content": retry_message.format(error=error)}] for i, answer, error in retry]
        for (i, _, _), completion in zip(retry, model.generate(again, params), strict=True):
            value, error = validate(i, completion.text)
            if error is None:
                values[i] = value
                counts["retried"] += 1
            else:
                counts["invalid"] += 1
    return values
