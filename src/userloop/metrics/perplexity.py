"""Per-token perplexity of real user turns under a user LM, with and without the intent.

"Flipping the Dialogue" (arXiv 2510.06552, Table 1) measures how well a user LM predicts real user
turns: perplexity = exp(mean negative log-likelihood over the tokens of every user turn), each turn
scored given everything before it, once with the task intent as system message and once with no
system message (UserLM-8b: 4.33 with and 5.60 without on WildChat test; 7.42 / 14.92 on PRISM).

A turn's tokens are its content and its ``<|eot_id|>`` (ending the turn is part of writing it); the
``<|endconversation|>`` target is not a real user turn and is left out. Conversations are rendered
with the UserLM template (:mod:`userloop.userlm.flip`), whatever template the checkpoint carries,
so the checkpoint's tokenizer must have the UserLM special tokens (a user LM trained by userloop or
microsoft/UserLM-8b). Turns beyond ``max_length`` tokens (with the intent) are scored in neither
condition, so both score the same turns; the counts say how many. Empty (whitespace-only) user turns
are not scored either (they are no target, :mod:`userloop.userlm.flip`) and counted apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from userloop.batching import token_budget_batches
from userloop.errors import UserError
from userloop.train.common import load_pretrained
from userloop.userlm.flip import Renderer, read_split, render, user_lm_messages


def user_turn_perplexity(checkpoint: str | Path, data: str | Path, split: str = "test", max_conversations: int | None = None,
                         batch_size: int = 8, max_length: int = 2048, device: str = "auto",
                         max_batch_tokens: int = 4096, on_progress: Callable[[int], None] | None = None,
                         on_total: Callable[[int], None] | None = None) -> dict:
    """Perplexity of the user turns of ``split`` in prepared folder ``data`` under ``checkpoint``.

    Returns ``{"with_intent": {...}, "without_intent": {...}, ...}``, each part with ``perplexity``,
    ``nll_per_token`` and ``tokens``; both score the same turns (those that fit in ``max_length`` with
    the intent), counted in ``turns_scored`` and ``turns_not_scored`` (beyond ``max_length``), and
    ``empty_turns_not_scored``. A forward pass takes up to ``batch_size`` samples of similar length and at
    most ``max_batch_tokens`` padded tokens (a longer sample alone), which bounds its activations (about
    9 KB a token for the demo's 2-layer user LM, attention included). ``on_total`` gets the number of batches,
    ``on_progress`` is called with 1 after each.
    """
    import torch
    import transformers

    if batch_size < 1 or max_batch_tokens < 1 or max_length < 2 or (max_conversations is not None and max_conversations < 1):
        raise UserError("batch size, max batch tokens and max conversations must be at least 1, max length at least 2")
    conversations, filled = read_split(data, split)
    conversations = conversations[:max_conversations] if max_conversations else conversations
    if not conversations:
        raise UserError(f"{data}: the {split} split has no conversations")
    transformers.utils.logging.disable_progress_bar()  # progress is reported through on_progress
    tokenizer, model = load_pretrained(checkpoint)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = model.to(device).eval()
    renderer = Renderer(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else renderer.eot

    parts: dict[str, list] = {"with_intent": [], "without_intent": []}
    turns, too_long, unscored = 0, 0, 0
    for conv in conversations:
        with_intent, targets, dropped = render(renderer, user_lm_messages(conv, True, end=False), "packed", max_length)
        too_long += dropped
        if not with_intent:
            unscored += 1
            continue
        turns += targets - dropped  # the same turns without the intent (a shorter prompt: they fit too)
        without_intent, _, _ = render(renderer, user_lm_messages(conv, False, end=False), "packed", max_length,
                                      max_targets=targets - dropped)
        parts["with_intent"] += with_intent
        parts["without_intent"] += without_intent
    if not turns:
        raise UserError(f"{data}: no user turn of the {split} split to score (none fits in max_length {max_length} "
                        "or all are empty)")
    batches = {name: token_budget_batches(samples, lambda s: len(s.ids), max_batch_tokens, max_rows=batch_size)
               for name, samples in parts.items()}
    if on_total is not None:
        on_total(sum(len(b) for b in batches.values()))
    result: dict = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "conversations": len(conversations),
                    "intents_filled_offline": filled, "conversations_scored": len(conversations) - unscored,
                    "turns_scored": turns, "turns_not_scored": too_long,
                    "empty_turns_not_scored": sum(not t.strip() for c in conversations for t in c.user_turns)}
    for name in parts:
        nll, tokens = 0.0, 0
        for batch in batches[name]:
            batch_nll, batch_tokens = _summed_nll(model, batch, pad, device)
            nll, tokens = nll + batch_nll, tokens + batch_tokens
            if on_progress is not None:
                on_progress(1)
        result[name] = {"perplexity": math.exp(nll / tokens) if tokens else None,
                        "nll_per_token": nll / tokens if tokens else None, "tokens": tokens}
    return result


def _summed_nll(model, batch, pad: int, device: str) -> tuple[float, int]:
    """Sum of the negative log-likelihoods of the masked tokens of a batch, and their number."""
    import torch

    width = max(len(s.ids) for s in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, sample in enumerate(batch):
        n = len(sample.ids)
        ids[row, :n] = torch.tensor(sample.ids)
        mask[row, :n] = torch.tensor(sample.mask, dtype=torch.bool)
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():  # right padding: causal attention never reaches it, so no (L x L) attention mask is needed
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state
        targets = mask[:, 1:]  # position t predicts token t + 1: score only the target tokens' positions
        logits = model.get_output_embeddings()(hidden[:, :-1][targets]).float()
        nll = torch.nn.functional.cross_entropy(logits, ids[:, 1:][targets], reduction="sum")
    return nll.item(), int(targets.sum())
