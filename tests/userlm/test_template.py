"""The UserLM-8b chat template (exact string) and the look-alike checkpoint."""

import json

from userloop.userlm.template import END_CONVERSATION, END_OF_TURN, USERLM_CHAT_TEMPLATE, special_token_ids

MESSAGES = [
    {"role": "system", "content": "You are a user who wants a poem about the sea."},
    {"role": "user", "content": "  write me a sea poem\n"},
    {"role": "assistant", "content": "The sea is wide."},
]


def test_template_renders_the_exact_userlm_string(userlm_tokenizer):
    text = userlm_tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert text == (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\nYou are a user who wants a poem about the sea.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\nwrite me a sea poem<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\nThe sea is wide.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n"
    )


def test_template_always_ends_on_the_user_header(userlm_tokenizer):
    for messages in (MESSAGES[:1], MESSAGES[:2], MESSAGES):
        for generation_prompt in (False, True):
            text = userlm_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
            assert text.endswith("<|start_header_id|>user<|end_header_id|>\n")


def test_lookalike_layout_matches_userlm_8b(userlm_path):
    config = json.loads((userlm_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    tokenizer_config = json.loads((userlm_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == USERLM_CHAT_TEMPLATE
    generation = json.loads((userlm_path / "generation_config.json").read_text())
    assert (generation["do_sample"], generation["temperature"], generation["top_p"], generation["max_length"]) == (True, 0.6, 0.9, 4096)


def test_lookalike_loads_and_generates_with_stock_transformers(userlm_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(userlm_path)
    model = AutoModelForCausalLM.from_pretrained(userlm_path)
    ids = special_token_ids(tokenizer)
    assert model.generation_config.eos_token_id == ids[END_OF_TURN]
    inputs = tokenizer.apply_chat_template(MESSAGES[:1], return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=5, bad_words_ids=[[ids[END_CONVERSATION]]])
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_lookalike_runs_through_the_hf_provider(userlm_path):
    from userloop.models import GenerationParams, load_model

    model = load_model(f"hf:{userlm_path}")
    [completion] = model.generate([MESSAGES], GenerationParams(max_new_tokens=4, seed=1))
    assert completion.choices[0].text is not None
