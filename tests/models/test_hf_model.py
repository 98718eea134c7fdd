"""The hf provider on a tiny random checkpoint: batching, padding, bans, stops, samples, seeds, templates."""

from __future__ import annotations

import asyncio
import shutil
import threading
from dataclasses import replace

import pytest
import torch
from model_helpers import END_CONVERSATION

from userloop.errors import UserError
from userloop.models import GenerationParams, load_model
from userloop.models.hf import NUCLEUS_CANDIDATES, _row_seed, _RowSampler, _TokenBans
from userloop.models.tiny import build_tiny_chat_model

GREEDY = GenerationParams(max_new_tokens=12, temperature=0)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


PROMPTS = [user("Hello"), user("Can you help me fix this Python function? It returns None instead of a list."),
           [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Thanks, that works."}],
           user("I am a student and I want to learn about machine learning and statistics, " * 3)]


@pytest.fixture
def generated_ids(tiny_model, monkeypatch) -> list[list[int]]:
    """The generated token ids of every row (prompt removed), recorded around model.generate."""
    rows: list[list[int]] = []
    original = tiny_model.model.generate

    def spy(*args, **kwargs):
        output = original(*args, **kwargs)
        rows.extend(output[:, kwargs["input_ids"].shape[1]:].tolist())
        return output

    monkeypatch.setattr(tiny_model.model, "generate", spy)
    return rows


def ids_of(model, *texts: str) -> set[int]:
    """Single-token ids that render each text, with or without a leading space."""
    index = model._tokens_by_text()
    return {token for text in texts for variant in (text, " " + text) for token in index.get(variant, ())}


def until_stop(model, row: list[int]) -> list[int]:
    stops = set(model.stop_ids)
    return row[:next((i for i, t in enumerate(row) if t in stops), len(row))]


# --------------------------------------------------------------------------- prompts and stop tokens
def test_prompt_is_the_chat_template_with_generation_prompt(tiny_model):
    messages = PROMPTS[2]
    expected = tiny_model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    decoded = tiny_model.tokenizer.decode(tiny_model.prompt_ids(messages, 8), skip_special_tokens=False)
    assert decoded == expected
    assert decoded.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_stop_ids_include_the_end_of_turn_token(tiny_model):
    token_id = tiny_model.tokenizer.convert_tokens_to_ids
    assert token_id("<|eot_id|>") in tiny_model.stop_ids and token_id("<|end_of_text|>") in tiny_model.stop_ids
    assert set(tiny_model._end_of_turn_ids()) == {token_id("<|eot_id|>")}


def test_end_of_turn_found_from_the_template_alone(tmp_path):
    """A checkpoint whose generation config and tokenizer name another eos still stops on <|eot_id|>."""
    path = build_tiny_chat_model(tmp_path / "m")
    config = (path / "generation_config.json").read_text().replace('"eos_token_id": [\n    4,\n    1\n  ]',
                                                                   '"eos_token_id": 1')
    (path / "generation_config.json").write_text(config)
    model = load_model(f"hf:{path}")
    assert model.stop_ids[0] == 1 and model.tokenizer.convert_tokens_to_ids("<|eot_id|>") in model.stop_ids


CHATML = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
          "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_other_templates_end_of_turn_and_refusals(tmp_path):
    """A ChatML template: <|im_end|> is found as the end of turn; a template's own error is one line."""
    path = build_tiny_chat_model(tmp_path / "chatml", extra_special_tokens=["<|im_start|>", "<|im_end|>"])
    (path / "chat_template.jinja").write_text(CHATML)
    model = load_model(f"hf:{path}")
    im_end = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in model.stop_ids
    [completion] = model.generate([PROMPTS[0]], GenerationParams(max_new_tokens=4, temperature=0, logit_bias={im_end: 100}))
    assert (completion.text, completion.finish_reason) == ("", "stop")
    with pytest.raises(UserError, match="chat template rejected the conversation: no system role"):
        model.generate([[{"role": "system", "content": "x"}, *PROMPTS[0]]])


# --------------------------------------------------------------------------- batching
def test_batched_greedy_equals_one_at_a_time(tiny_model):
    batched = tiny_model.generate(PROMPTS, GREEDY)
    alone = [tiny_model.generate([p], GREEDY)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in alone]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in alone]
    assert [c.prompt_tokens for c in batched] == [len(tiny_model.prompt_ids(p, 1)) for p in PROMPTS]
    assert len({c.prompt_tokens for c in batched}) == len(PROMPTS)  # really different lengths: padding matters


def test_concurrent_callers_are_coalesced(tiny_model):
    tiny_model.batch_size_counts.clear()

    async def main():
        return await asyncio.gather(*(tiny_model.agenerate([PROMPTS[1]], GREEDY) for _ in range(16)))

    results = asyncio.run(main())
    assert len(results) == 16 and all(len(r) == 1 for r in results)
    assert tiny_model.batch_size_counts == {16: 1}  # 16 callers waiting at once: one generate call
    assert {r[0].text for r in results} == {tiny_model.generate([PROMPTS[1]], GREEDY)[0].text}


def test_callers_arriving_one_after_another_are_coalesced(tiny_model_path):
    model = load_model(f"hf:{tiny_model_path}", batch_wait_ms=500, max_batch_wait_ms=5000)

    async def main():
        calls = []
        for _ in range(5):
            calls.append(asyncio.ensure_future(model.agenerate([PROMPTS[0]], GREEDY)))
            await asyncio.sleep(0.005)
        return await asyncio.gather(*calls)

    assert len(asyncio.run(main())) == 5
    assert model.batch_size_counts == {5: 1}


def test_prompts_of_very_different_lengths_are_prefilled_apart_when_padding_costs_more():
    from userloop.models.hf import _GenerationCosts

    rows, lengths = [0, 1, 2, 3, 4], [300, 10, 12, 290, 11]
    costs = _GenerationCosts()
    assert costs.prefill_chunks(rows, lengths) == [rows]  # no timings yet: one pass
    costs.token_seconds, costs.step_overhead = 1e-3, 2e-2  # padding is expensive: short and long apart
    assert costs.prefill_chunks(rows, lengths) == [[1, 2, 4], [0, 3]]
    costs.token_seconds, costs.step_overhead = 1e-7, 1e-1  # forward passes are expensive: one pass
    assert costs.prefill_chunks(rows, lengths) == [rows]


def test_rows_prefilled_apart_are_decoded_in_one_call(tiny_model_path):
    """Prompts prefilled in separate passes are laid side by side for one generate call, with the outputs of
    one request at a time (greedy and seeded sampling)."""
    model = load_model(f"hf:{tiny_model_path}", prefix_cache_mb=0)
    model._costs.token_seconds, model._costs.step_overhead = 1.0, 1e-9  # any padding costs more than a pass
    passes = []
    original = model._prefill_chunk
    model._prefill_chunk = lambda targets, found: passes.append(len(targets)) or original(targets, found)
    for params in (GREEDY, GenerationParams(max_new_tokens=10, temperature=1.0, n=2, seed=5)):
        passes.clear()
        model.batch_size_counts.clear()
        batched = model.generate(PROMPTS, params)
        assert passes == [1] * len(PROMPTS) and model.batch_size_counts == {len(PROMPTS) * params.n: 1}
        alone = [model.generate([prompt], params)[0] for prompt in PROMPTS]
        assert [[c.text for c in x.choices] for x in batched] == [[c.text for c in x.choices] for x in alone]


def test_max_batch_size_is_respected(tiny_model_path):
    model = load_model(f"hf:{tiny_model_path}", max_batch_size=4, batch_wait_ms=50)
    completions = model.generate(PROMPTS * 3, GenerationParams(max_new_tokens=3, temperature=0, n=2))
    assert len(completions) == 12 and all(len(c.choices) == 2 for c in completions)
    assert max(model.batch_size_counts) <= 4 and sum(s * c for s, c in model.batch_size_counts.items()) == 24


def test_max_batch_tokens_cuts_a_wide_batch_shortest_prompts_first(tiny_model_path):
    params = GenerationParams(max_new_tokens=3, temperature=0.7, seed=5, n=2)
    unbounded = load_model(f"hf:{tiny_model_path}", max_batch_tokens=0, batch_wait_ms=50)
    lengths = sorted(len(unbounded.prompt_ids(p, 3)) for p in PROMPTS)
    budget = 2 * 2 * (lengths[1] + 3)  # the two shortest prompts' rows fit, the third's do not
    bounded = load_model(f"hf:{tiny_model_path}", max_batch_tokens=budget, batch_wait_ms=50)
    whole, cut = unbounded.generate(PROMPTS, params), bounded.generate(PROMPTS, params)
    assert unbounded.batch_size_counts == {2 * len(PROMPTS): 1}
    assert sum(bounded.batch_size_counts.values()) > 1 and bounded.batch_size_counts[4] == 1  # the 2 shortest first
    assert sum(size * calls for size, calls in bounded.batch_size_counts.items()) == 2 * len(PROMPTS)
    assert [[c.text for c in x.choices] for x in cut] == [[c.text for c in x.choices] for x in whole]


def test_different_params_in_one_batch(tiny_model):
    async def main():
        return await asyncio.gather(tiny_model.agenerate([PROMPTS[0]], GenerationParams(max_new_tokens=2, temperature=0)),
                                    tiny_model.agenerate([PROMPTS[0]], GenerationParams(max_new_tokens=6, temperature=0)))

    short, long = asyncio.run(main())
    assert short[0].completion_tokens <= 2 and long[0].completion_tokens <= 6
    assert long[0].text.startswith(short[0].text)


def test_model_is_usable_after_aclose(tiny_model):
    async def main():
        async with tiny_model:
            first = await tiny_model.agenerate([PROMPTS[0]], GREEDY)
        return first, await tiny_model.agenerate([PROMPTS[0]], GREEDY)

    first, second = asyncio.run(main())
    assert first[0].text == second[0].text


def test_one_running_event_loop_at_a_time(tiny_model_path):
    model = load_model(f"hf:{tiny_model_path}")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(model.agenerate([PROMPTS[0]], GREEDY), loop).result(timeout=60)
        with pytest.raises(RuntimeError, match="another running event loop"):
            model.generate([PROMPTS[0]], GREEDY)
        asyncio.run_coroutine_threadsafe(model.aclose(), loop).result(timeout=60)
        assert model.generate([PROMPTS[0]], GREEDY)[0].completion_tokens > 0  # released: usable here now
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# --------------------------------------------------------------------------- finishing
def test_length_and_eos(tiny_model):
    never_stop = GenerationParams(max_new_tokens=5, temperature=0, logit_bias={t: -100 for t in tiny_model.stop_ids})
    [long] = tiny_model.generate([PROMPTS[0]], never_stop)
    assert (long.finish_reason, long.completion_tokens) == ("length", 5)
    eot = tiny_model.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    [ended] = tiny_model.generate([PROMPTS[0]], GenerationParams(max_new_tokens=5, temperature=0, logit_bias={eot: 100}))
    assert (ended.text, ended.finish_reason, ended.completion_tokens) == ("", "stop", 1)


def test_stop_strings_cut_the_text(tiny_model):
    never_stop = GenerationParams(max_new_tokens=20, temperature=0, logit_bias={t: -100 for t in tiny_model.stop_ids})
    [full] = tiny_model.generate([PROMPTS[1]], never_stop)
    stop = full.text[6:9]
    assert stop and stop not in full.text[:6]
    [cut] = tiny_model.generate([PROMPTS[1]], GenerationParams(max_new_tokens=20, temperature=0, stop=[stop],
                                                                  logit_bias=never_stop.logit_bias))
    assert cut.text == full.text[:full.text.index(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens < 20


def test_added_special_tokens_stay_in_the_text(tiny_model):
    end = tiny_model.tokenizer.convert_tokens_to_ids(END_CONVERSATION)
    [completion] = tiny_model.generate([PROMPTS[0]], GenerationParams(max_new_tokens=3, temperature=0, logit_bias={end: 100}))
    assert completion.text == END_CONVERSATION * 3


def test_prompt_too_long(tiny_model):
    with pytest.raises(UserError, match="exceeds the context"):
        tiny_model.generate([PROMPTS[0]], GenerationParams(max_new_tokens=600))
    with pytest.raises(UserError, match="exceeds the context"):
        tiny_model.generate([user("word " * 600)], GenerationParams(max_new_tokens=1))


def test_logit_bias_outside_the_vocabulary(tiny_model):
    with pytest.raises(UserError, match="outside the vocabulary"):
        tiny_model.generate([PROMPTS[0]], GenerationParams(logit_bias={10**6: 1}))


# --------------------------------------------------------------------------- bans
def test_banned_tokens_never_appear(tiny_model, generated_ids):
    favoured = ids_of(tiny_model, "I", END_CONVERSATION)
    assert len(favoured) >= 3  # "I", " I" and the special token
    bias = {t: 30 for t in favoured}
    unbanned = tiny_model.generate(PROMPTS, GenerationParams(max_new_tokens=8, temperature=0, logit_bias=bias))
    assert all(set(until_stop(tiny_model, row)) & favoured for row in generated_ids)  # the bias works...
    generated_ids.clear()
    banned = tiny_model.generate(PROMPTS, GenerationParams(max_new_tokens=8, temperature=1.0, seed=1, logit_bias=bias,
                                                           banned_tokens=["I", END_CONVERSATION], n=2))
    assert len(generated_ids) == 8
    assert not any(set(until_stop(tiny_model, row)) & favoured for row in generated_ids)  # ...and the ban wins
    assert END_CONVERSATION not in "".join(c.text for b in banned for c in b.choices)
    assert unbanned[0].text != banned[0].text


def test_banned_first_tokens_only_at_the_first_position(tiny_model, generated_ids):
    favoured = ids_of(tiny_model, "Sure")
    params = GenerationParams(max_new_tokens=4, temperature=0, logit_bias={t: 50 for t in favoured},
                              banned_first_tokens=["Sure"])
    tiny_model.generate(PROMPTS, params)
    assert len(generated_ids) == len(PROMPTS)
    for row in generated_ids:
        assert row[0] not in favoured and row[1] in favoured


def test_ban_maps_words_to_tokens_with_and_without_a_space(tiny_model):
    sequences = tiny_model._ban_sequences(("Paris",))
    assert (tiny_model.tokenizer.convert_tokens_to_ids("ĠParis"),) in sequences
    assert tuple(tiny_model.tokenizer.encode("Paris", add_special_tokens=False)) in sequences


def test_first_position_bans_cover_merged_tokens_that_open_with_the_word(tiny_model_path):
    """A tokenizer with merged pieces ("I'm", "\\nI") has tokens that start the banned word: banned first too."""
    model = load_model(f"hf:{tiny_model_path}")
    merged = ["I'm", "\nI", "Here's", "You,"]
    model.tokenizer.add_tokens([*merged, "Your", "Ice"])
    merged_ids = model.tokenizer.convert_tokens_to_ids(merged)
    other_ids = model.tokenizer.convert_tokens_to_ids(["Your", "Ice"])
    first = {s[0] for s in model._ban_sequences(("I", "You", "Here"), opening=True) if len(s) == 1}
    assert set(merged_ids) <= first and not set(other_ids) & first
    assert not {(t,) for t in merged_ids} & set(model._ban_sequences(("I", "You", "Here")))  # only at the start


def test_sequence_bans_in_the_processor():
    """Multi-token bans: the last token is masked only after the others, anywhere or at the start."""
    width = 2
    bans = _TokenBans(width, everywhere=[(5, 6)], first=[(7, 8, 9), (3,)], logit_bias=((1, 2.0),))
    scores = torch.zeros(3, 10)
    at_start = bans(torch.tensor([[0, 0], [0, 0], [0, 0]]), scores)
    assert torch.isinf(at_start[:, 3]).all() and not torch.isinf(at_start[:, 6]).any()
    assert (at_start[:, 1] == 2.0).all()
    step_two = bans(torch.tensor([[0, 0, 7, 8], [0, 0, 5, 8], [0, 0, 8, 5]]), scores)
    assert step_two[0, 9] == -torch.inf and step_two[1, 9] == 0  # (7, 8, 9) only after 7, 8 from the start
    assert step_two[2, 6] == -torch.inf and step_two[0, 6] == 0  # (5, 6) after a 5 anywhere
    assert not torch.isinf(step_two[:, 3]).any()  # first-position bans are over


# --------------------------------------------------------------------------- sampling
def test_n_samples_and_seeds(tiny_model):
    params = GenerationParams(max_new_tokens=10, temperature=1.0, n=3, seed=7)
    [alone] = tiny_model.generate([PROMPTS[1]], params)
    assert len(alone.choices) == 3 and len({c.text for c in alone.choices}) > 1
    assert alone.completion_tokens == sum(c.completion_tokens for c in alone.choices)

    async def in_a_crowd():
        others = [tiny_model.agenerate([p], GenerationParams(max_new_tokens=10, temperature=1.0, n=3))
                  for p in PROMPTS]
        return (await asyncio.gather(tiny_model.agenerate([PROMPTS[1]], params), *others))[0][0]

    crowded = asyncio.run(in_a_crowd())
    assert [c.text for c in crowded.choices] == [c.text for c in alone.choices]
    [other_seed] = tiny_model.generate([PROMPTS[1]], GenerationParams(max_new_tokens=10, temperature=1.0, n=3, seed=8))
    assert [c.text for c in other_seed.choices] != [c.text for c in alone.choices]


def test_n_samples_share_one_prefill_with_the_same_outputs(tiny_model_path):
    """A request for n samples prefills its prompt once and repeats the KV cache for its n rows: the outputs are
    those of n one-sample requests with the same row seeds (greedy and seeded sampling, prompts of different
    lengths in one batch)."""
    model = load_model(f"hf:{tiny_model_path}", prefix_cache_mb=0)  # nothing reused from one call to the next
    greedy = model.generate(PROMPTS, replace(GREEDY, n=2))
    assert [[c.text for c in x.choices] for x in greedy] == [[c.text] * 2 for c in model.generate(PROMPTS, GREEDY)]
    sampled = model.generate(PROMPTS, GenerationParams(max_new_tokens=10, temperature=1.0, n=3, seed=7))
    singles = [model.generate(PROMPTS, GenerationParams(max_new_tokens=10, temperature=1.0, seed=_row_seed(7, j)))
               for j in range(3)]
    assert [[c.text for c in x.choices] for x in sampled] == [[s[i].text for s in singles] for i in range(len(PROMPTS))]
    assert len({c.text for x in sampled for c in x.choices}) > len(PROMPTS)  # the samples differ


def test_top_p_near_zero_is_greedy(tiny_model):
    [greedy] = tiny_model.generate([PROMPTS[1]], GREEDY)
    [nucleus] = tiny_model.generate([PROMPTS[1]], GenerationParams(max_new_tokens=12, temperature=1.0, top_p=1e-6, seed=3))
    assert nucleus.text == greedy.text


def test_top_p_nucleus_is_that_of_ranking_the_whole_vocabulary():
    """The sampler ranks a row's most probable tokens first, and the whole row only when its nucleus goes
    further or equal probabilities straddle its edge: the nucleus is always that of ranking every token."""
    torch.manual_seed(0)
    peaked, flat = torch.randn(3, 3000) * 8, torch.randn(2, 3000) * 0.1
    tied = torch.full((1, 3000), -30.0)
    tied[0, [5, 17, 900]] = 0.0  # three equal tokens; top-p 0.5 keeps two of them
    probs = torch.softmax(torch.cat([peaked, flat, tied]), dim=1)
    for top_p in (0.5, 0.8, 0.95):
        ranked, order = probs.sort(dim=1, descending=True)
        expected = probs.scatter(1, order, ranked.masked_fill(ranked.cumsum(dim=1) - ranked > top_p, 0.0))
        nucleus = _RowSampler(1.0, top_p, 0, [0] * len(probs), 1)._nucleus(probs)
        assert torch.equal(nucleus, expected)
    assert (nucleus[3:5] > 0).sum() > 2 * NUCLEUS_CANDIDATES  # the flat rows went past the candidates


def test_row_draws_are_those_of_one_draw_per_step():
    generator = torch.Generator().manual_seed(123)
    assert _RowSampler(1.0, 1.0, 0, [123], 7).uniforms[0].tolist() == [
        torch.rand((), generator=generator).item() for _ in range(7)]


# --------------------------------------------------------------------------- a user LM look-alike
def test_user_lm_template_and_generation_config_defaults(tmp_path):
    path = build_tiny_chat_model(tmp_path / "userlm", generation_role="user", extra_special_tokens=[END_CONVERSATION],
                                 sampling_defaults={"do_sample": True, "temperature": 0.6, "top_p": 0.9})
    model = load_model(f"hf:{path}")
    intent = [{"role": "system", "content": "You want a poem about the sea."}]
    prompt = model.tokenizer.decode(model.prompt_ids(intent, 8), skip_special_tokens=False)
    assert prompt.endswith("<|start_header_id|>user<|end_header_id|>\n\n")
    assert model._sampling(GenerationParams()) == (pytest.approx(0.6), pytest.approx(0.9), 0)  # the checkpoint's
    assert model._sampling(GenerationParams(temperature=0))[0] == 0
    first, again = (model.generate([intent], GenerationParams(max_new_tokens=8, seed=5))[0].text for _ in range(2))
    assert first == again


# --------------------------------------------------------------------------- loading errors
def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="no such model folder"):
        load_model(f"hf:{tmp_path / 'missing'}")


def test_folder_without_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot load") as err:
        load_model(f"hf:{tmp_path / 'empty'}")
    assert "\n" not in str(err.value)


def test_checkpoint_without_chat_template(tiny_model_path, tmp_path):
    copy = shutil.copytree(tiny_model_path, tmp_path / "copy")
    (copy / "chat_template.jinja").unlink()
    with pytest.raises(UserError, match="no chat template"):
        load_model(f"hf:{copy}")


@pytest.mark.parametrize(("options", "fragment"), [({"max_batch_size": 0}, "max_batch_size"),
                                                   ({"batch_wait_ms": -1}, "batch_wait_ms"),
                                                   ({"max_batch_tokens": 1.5}, "max_batch_tokens"),
                                                   ({"max_batch_wait_ms": "x"}, "max_batch_wait_ms"),
                                                   ({"dtype": "int8"}, "dtype"), ({"device": "tpu"}, "device"),
                                                   ({"prefix_cache_mb": -1}, "prefix_cache_mb"),
                                                   ({"prefix_cache_mb": float("nan")}, "prefix_cache_mb")])
def test_bad_options(tiny_model_path, options, fragment):
    with pytest.raises(UserError, match=fragment):
        load_model(f"hf:{tiny_model_path}", **options)


def test_loading_a_local_folder_draws_no_progress_bar(tiny_model_path, capfd):
    import transformers

    transformers.utils.logging.enable_progress_bar()
    try:
        model = load_model(f"hf:{tiny_model_path}")
        asyncio.run(model.aclose())
        assert "Loading weights" not in capfd.readouterr().err
    finally:
        transformers.utils.logging.enable_progress_bar()
