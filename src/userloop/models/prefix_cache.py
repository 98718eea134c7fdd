"""Key/value states of earlier prompts, for the ``hf`` provider to reuse when a prompt starts the same way.

A guardrail resample round sends the same prompt again, and a conversation's next turn sends its last
prompt with the new messages appended: either way the model already computed the keys and values of most
of the prompt's tokens. :class:`PrefixCache` keeps, for each prompt the provider prefilled, the states of
its tokens (one sequence, no padding: per layer a key and a value tensor of shape ``[heads, tokens,
head_dim]``) and finds, for a new prompt, the stored one with the longest common token prefix. States at
position ``t`` depend only on tokens ``0..t``, so a common prefix of any stored prompt is reusable.

Lookup: token sequences are cut into blocks of :data:`BLOCK` tokens, and a hash chained over the blocks so
far indexes every entry that holds that prefix; a prompt walks its blocks while some entry holds them,
then compares tokens one by one past the last common block. Entries shorter than a block are not kept.

Memory: the entries' tensors stay within ``budget_bytes``; the least recently used go first. An entry
whose tokens are a prefix of a newly stored one is dropped at once (the new one answers every lookup it
would), so a conversation's turns hold one entry between them, not one per turn.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch

BLOCK = 16

LayerStates = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values, [heads, tokens, head_dim] each


class _Entry:
    __slots__ = ("hashes", "nbytes", "states", "tokens")

    def __init__(self, tokens: tuple[int, ...], states: LayerStates, hashes: list[int]) -> None:
        self.tokens, self.states, self.hashes = tokens, states, hashes
        self.nbytes = sum(k.nbytes + v.nbytes for k, v in states)


class PrefixCache:
    """Per-sequence key/value states found by longest common token prefix; least recently used evicted
    beyond ``budget_bytes``. ``reused_tokens`` / ``looked_up_tokens`` count what lookups found."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.nbytes = 0
        self.reused_tokens = self.looked_up_tokens = 0
        self._entries: OrderedDict[_Entry, None] = OrderedDict()  # least recently used first
        self._holders: dict[int, dict[_Entry, None]] = {}  # block-chain hash -> entries holding that prefix

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int]) -> tuple[int, LayerStates | None]:
        """``(length, states)``: how many leading ``tokens`` a stored entry shares, and that entry's states
        (at least ``length`` long: slice them); ``(0, None)`` when none shares a block."""
        self.looked_up_tokens += len(tokens)
        deepest, blocks = None, 0
        for chain in _block_chain(tokens):
            holders = self._holders.get(chain)
            if not holders:
                break
            deepest, blocks = holders, blocks + 1
        if deepest is None:
            return 0, None
        # every holder of the deepest block shares it; which goes on furthest is told by the tokens after it
        entry = max(deepest, key=lambda held: _common_length(held.tokens, tokens, blocks * BLOCK))
        length = _common_length(entry.tokens, tokens, blocks * BLOCK)
        if list(entry.tokens[:blocks * BLOCK]) != list(tokens[:blocks * BLOCK]):
            return 0, None  # a hash collision
        self._entries.move_to_end(entry)
        self.reused_tokens += length
        return length, entry.states

    def store(self, tokens: Sequence[int], states: LayerStates) -> None:
        """Keep ``states`` (their own storage: not views of a batch) for ``tokens``; drop the entries
        that are prefixes of ``tokens``, then the least recently used while over the budget."""
        tokens = tuple(tokens)
        hashes = list(_block_chain(tokens))
        entry = _Entry(tokens, states, hashes)
        if not hashes or entry.nbytes > self.budget_bytes:
            return
        for blocks, chain in enumerate(hashes, 1):
            for held in list(self._holders.get(chain, ())):
                if len(held.hashes) == blocks and tokens[:len(held.tokens)] == held.tokens:
                    self._remove(held)  # a prefix of the new entry (checked once: at its last full block)
        for chain in hashes:
            self._holders.setdefault(chain, {})[entry] = None
        self._entries[entry] = None
        self.nbytes += entry.nbytes
        while self.nbytes > self.budget_bytes:
            self._remove(next(iter(self._entries)))

    def _remove(self, entry: _Entry) -> None:
        del self._entries[entry]
        self.nbytes -= entry.nbytes
        for chain in entry.hashes:
            holders = self._holders[chain]
            del holders[entry]
            if not holders:
                del self._holders[chain]


def right_aligned(rows: list[LayerStates | None], lengths: list[int], width: int) -> LayerStates:
    """Per layer, keys and values of shape ``[rows, heads, width, head_dim]`` holding the first ``lengths[r]``
    states of row ``r`` at its right end (left padding), zeros before them; rows of length 0 may be None."""
    template = next(states for states, length in zip(rows, lengths) if length)
    layers = []
    for layer, (first_keys, first_values) in enumerate(template):
        keys = first_keys.new_zeros((len(rows), first_keys.shape[0], width, first_keys.shape[2]))
        values = first_values.new_zeros((len(rows), first_values.shape[0], width, first_values.shape[2]))
        for row, (states, length) in enumerate(zip(rows, lengths)):
            if length:
                keys[row, :, width - length:] = states[layer][0][:, :length]
                values[row, :, width - length:] = states[layer][1][:, :length]
        layers.append((keys, values))
    return layers


def _block_chain(tokens: Sequence[int]) -> Iterator[int]:
    """A hash of each full block of ``tokens`` chained with the blocks before it."""
    chain = 0
    for start in range(0, len(tokens) - BLOCK + 1, BLOCK):
        chain = hash((chain, *tokens[start:start + BLOCK]))
        yield chain


def _common_length(stored: tuple[int, ...], tokens: Sequence[int], start: int) -> int:
    """How many leading tokens ``stored`` and ``tokens`` share, given that the first ``start`` are the same."""
    length, limit = start, min(len(stored), len(tokens))
    while length < limit and stored[length] == tokens[length]:
        length += 1
    return length
