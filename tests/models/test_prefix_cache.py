"""Prefix reuse: the PrefixCache structure, and the hf provider giving the same outputs with it as without."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import torch

from userloop.models import GenerationParams, load_model
from userloop.models.prefix_cache import BLOCK, PrefixCache, right_aligned
from userloop.models.tiny import build_tiny_chat_model
from userloop.userlm.simulator import UserSimulator
from userloop.userlm.template import build_userlm_lookalike

HEADS, HEAD_DIM = 2, 4
TOKEN_BYTES = 2 * HEADS * HEAD_DIM * 4  # one layer's key and value of one token, float32


def states_of(tokens: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One layer's fake key/value states whose values say which token they belong to."""
    keys = torch.tensor(tokens, dtype=torch.float32).view(1, -1, 1).expand(HEADS, -1, HEAD_DIM).contiguous()
    return [(keys, -keys)]


def stored(cache: PrefixCache, tokens: list[int]) -> PrefixCache:
    cache.store(tokens, states_of(tokens))
    return cache


# --------------------------------------------------------------------------- the structure
def test_lookup_finds_the_longest_common_prefix_of_any_entry():
    shared = list(range(100, 100 + 2 * BLOCK))
    cache = stored(stored(PrefixCache(10**6), shared + [1, 2, 3, 4, 5]), shared + [7, 8])
    length, states = cache.lookup(shared + [1, 2, 3, 9, 9, 9])
    assert length == 2 * BLOCK + 3  # past the last common block, token by token, in the entry that goes furthest
    assert states[0][0][0, :length, 0].tolist() == (shared + [1, 2, 3])
    assert cache.lookup(shared + [7, 8])[0] == 2 * BLOCK + 2
    assert cache.lookup(shared[:BLOCK + 3])[0] == BLOCK + 3  # a shorter prompt reuses part of an entry
    assert cache.lookup([5] + shared) == (0, None)  # nothing shares the first block
    assert cache.reused_tokens == 2 * BLOCK + 3 + 2 * BLOCK + 2 + BLOCK + 3


def test_prompts_shorter_than_a_block_are_not_kept():
    cache = stored(PrefixCache(10**6), list(range(BLOCK - 1)))
    assert len(cache) == 0 and cache.nbytes == 0
    assert cache.lookup(list(range(BLOCK - 1))) == (0, None)


def test_an_entry_that_is_a_prefix_of_a_new_one_is_dropped():
    turn_one = list(range(3 * BLOCK + 5))
    cache = stored(stored(PrefixCache(10**6), turn_one), [0] * 2 * BLOCK)  # an unrelated entry stays
    stored(cache, turn_one + [1, 2, 3] * BLOCK)  # the next turn of the same conversation
    assert len(cache) == 2 and cache.nbytes == (2 * BLOCK + len(turn_one) + 3 * BLOCK) * TOKEN_BYTES
    assert cache.lookup(turn_one)[0] == len(turn_one)
    stored(cache, turn_one[:-1] + [999])  # shares most of it, but is no prefix: both stay
    assert len(cache) == 3


def test_least_recently_used_entries_go_beyond_the_budget():
    first, second, third = ([k] * 2 * BLOCK for k in (1, 2, 3))
    cache = stored(stored(PrefixCache(2 * 2 * BLOCK * TOKEN_BYTES), first), second)
    assert cache.lookup(first)[0] == 2 * BLOCK  # first is now the most recently used
    stored(cache, third)
    assert len(cache) == 2 and cache.nbytes <= cache.budget_bytes
    assert cache.lookup(second) == (0, None) and cache.lookup(first)[0] == cache.lookup(third)[0] == 2 * BLOCK
    stored(cache, [4] * 5 * BLOCK)  # larger than the whole budget: not kept, nothing evicted for it
    assert cache.lookup([4] * 5 * BLOCK) == (0, None) and len(cache) == 2


def test_right_aligned_lays_rows_side_by_side_with_left_padding():
    [(keys, values)] = right_aligned([states_of([1, 2, 3]), None, states_of([4, 5, 6, 7])], [2, 0, 4], 5)
    assert keys.shape == (3, HEADS, 5, HEAD_DIM)
    assert keys[:, 0, :, 0].tolist() == [[0, 0, 0, 1, 2], [0, 0, 0, 0, 0], [0, 4, 5, 6, 7]]
    assert torch.equal(values, -keys)


# --------------------------------------------------------------------------- the hf provider
def chat(*turns: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(turns)]


TURN_ONE = [chat("Hello! Can you help me write a poem about the sea and the ships on it?"),
            chat("Fix this Python function: it returns None instead of the list it builds."),
            chat("What is the capital of France, and what is it known for?")]


def texts(completions) -> list[list[str]]:
    return [[choice.text for choice in completion.choices] for completion in completions]


@pytest.fixture(scope="module")
def with_and_without(tiny_model_path):
    """The tiny checkpoint loaded twice: with the prefix cache (the default) and without."""
    return load_model(f"hf:{tiny_model_path}"), load_model(f"hf:{tiny_model_path}", prefix_cache_mb=0)


@pytest.mark.parametrize("params", [GenerationParams(max_new_tokens=10, temperature=0),
                                    GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.8, n=2, seed=11)],
                         ids=["greedy", "sampled"])
def test_reused_prefixes_give_the_outputs_of_computing_everything(with_and_without, params):
    """Resample rounds (the same prompts again) and next turns (prompts extended), mixed with new prompts in
    one batch: the same texts with the prefix cache as without, while most prompt tokens are reused."""
    reusing, computing = with_and_without
    reusing.prefix_cache.reused_tokens = reusing.prefix_cache.looked_up_tokens = 0
    rounds = [TURN_ONE, TURN_ONE]  # a guardrail resample round sends the same prompts
    first = reusing.generate(TURN_ONE, params)
    rounds.append([[*prompt, {"role": "assistant", "content": completion.text}, {"role": "user", "content": "Thanks!"}]
                   for prompt, completion in zip(TURN_ONE, first)] + [chat("A new conversation starts here, unseen.")])
    for calls, prompts in enumerate(rounds):
        seeded = replace(params, seed=None if params.seed is None else params.seed + calls)
        assert texts(reusing.generate(prompts, seeded)) == texts(computing.generate(prompts, seeded))
    cache = reusing.prefix_cache
    assert cache.reused_tokens > cache.looked_up_tokens / 2
    assert computing.prefix_cache is None


def test_memory_stays_within_the_budget(tiny_model_path):
    computing = load_model(f"hf:{tiny_model_path}", prefix_cache_mb=0)
    probe = load_model(f"hf:{tiny_model_path}")
    probe.generate(TURN_ONE[:1], GenerationParams(max_new_tokens=1, temperature=0))
    lengths = sorted(len(probe.prompt_ids(prompt, 1)) - 1 for prompt in TURN_ONE)
    per_token = probe.prefix_cache.nbytes / (len(probe.prompt_ids(TURN_ONE[0], 1)) - 1)
    budget_tokens = lengths[0] + lengths[1] - 1  # room for any one of the prompts, not for two
    assert budget_tokens >= lengths[-1]
    small = load_model(f"hf:{tiny_model_path}", prefix_cache_mb=budget_tokens * per_token / 2**20)
    params = GenerationParams(max_new_tokens=4, temperature=1.0, seed=3)
    for prompts in (TURN_ONE, TURN_ONE[::-1], TURN_ONE):
        assert texts(small.generate(prompts, params)) == texts(computing.generate(prompts, params))
        assert 0 < small.prefix_cache.nbytes <= small.prefix_cache.budget_bytes
        assert len(small.prefix_cache) == 1


def test_guardrail_rounds_and_turns_give_the_same_conversations(tmp_path):
    """Conversations of a UserLM look-alike (whose random turns fail the guardrails, so most turns take several
    resample rounds) and an assistant, all in lock-step: the same with the prefix cache as without."""
    user_path = build_userlm_lookalike(tmp_path / "user")
    assistant_path = build_tiny_chat_model(tmp_path / "assistant", seed=1)

    async def converse(prefix_cache_mb: float):
        user, assistant = (load_model(f"hf:{path}", prefix_cache_mb=prefix_cache_mb)
                           for path in (user_path, assistant_path))
        simulator = UserSimulator(user, params=GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.8, seed=4))
        intents = [f"You want help with task number {i}: plan it, then check the result." for i in range(4)]
        histories: list[list[dict]] = [[] for _ in intents]
        events = []
        async with user, assistant:
            for turn in range(3):
                for history, user_turn in zip(histories, await simulator.anext_turns(intents, histories)):
                    history.append({"role": "user", "content": user_turn.text})
                    events.append(user_turn.events)
                replies = await assistant.agenerate(histories, GenerationParams(max_new_tokens=12, seed=turn))
                for history, reply in zip(histories, replies):
                    history.append({"role": "assistant", "content": reply.text})
        return histories, events, user.prefix_cache

    reused, reused_events, cache = asyncio.run(converse(1024))
    computed, computed_events, _ = asyncio.run(converse(0))
    assert reused == computed and reused_events == computed_events
    assert sum(e["action"] == "resample" for turn in reused_events for e in turn) >= 8  # rounds were resampled
    assert cache.reused_tokens > cache.looked_up_tokens / 2
