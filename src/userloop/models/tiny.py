"""Tiny chat checkpoints built offline, for tests, demos and benchmarks.

:func:`build_tiny_chat_model` trains a byte-level BPE tokenizer on a few sentences, wraps it in a
``PreTrainedTokenizerFast`` with a Llama-3-style chat template (``<|start_header_id|>{role}<|end_header_id|>``
headers, turns closed by ``<|eot_id|>``), builds a randomly initialised ``LlamaForCausalLM`` and saves
both with ``save_pretrained``, so the folder loads like any Hub checkpoint (``hf:FOLDER``). The
weights are random: the model writes fluent-looking nonsense, which is all a test of the plumbing needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
END_OF_TURN = "<|eot_id|>"
SPECIAL_TOKENS = (BEGIN_OF_TEXT, END_OF_TEXT, "<|start_header_id|>", "<|end_header_id|>", END_OF_TURN)

CORPUS = (
    "I would like to write a short poem about the sea and the sky.",
    "Sure, here is a poem: the sea is blue, the sky is wide, and I am happy.",
    "Can you help me fix this Python function? It returns None instead of a list.",
    "Hello! I need a recipe for dinner tonight, something quick with rice and beans.",
    "Thanks, that works. Now make it shorter and add a title.",
    "No, that is not what I asked. Please answer in one sentence.",
    "What is the capital of France? I think it is Paris but I am not sure.",
    "Write an email to my landlord about the broken heater in the kitchen.",
    "I am a student and I want to learn about machine learning and statistics.",
    "Explain it again like I am five years old, with an example about apples.",
)


def _llama3_template(generation_role: str = "assistant") -> str:
    """A Llama-3-style template whose generation prompt opens a turn for ``generation_role``."""
    return (
        "{{ bos_token }}{% for message in messages %}"
        "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
        "{% endfor %}{% if add_generation_prompt %}"
        f"<|start_header_id|>{generation_role}<|end_header_id|>\n\n"
        "{% endif %}"
    )


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str]):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` (GPT-2 pre-tokenisation, no prefix
    space), with ``special_tokens`` first in the vocabulary; every byte is in the alphabet, so any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    return bpe


def build_tiny_chat_model(
    path: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 600,
    max_positions: int = 512,
    extra_special_tokens: Sequence[str] = (),
    generation_role: str = "assistant",
    sampling_defaults: dict | None = None,
    chat_template: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random Llama chat model and its tokenizer to ``path``; returns the folder.

    ``vocab_size`` caps the BPE vocabulary (the built-in sentences give about 530 tokens);
    ``extra_special_tokens`` are added as special tokens (e.g. ``<|endconversation|>``).
    ``sampling_defaults`` go into the saved generation config (e.g. ``{"do_sample": True,
    "temperature": 0.6}``); without them the checkpoint decodes greedily by default. Generation
    stops on ``<|eot_id|>`` and ``<|end_of_text|>``. ``chat_template`` replaces the Llama-3-style
    template (and then ``generation_role`` has no effect).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    bpe = train_byte_level_bpe(CORPUS, vocab_size, [*SPECIAL_TOKENS, *extra_special_tokens])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BEGIN_OF_TEXT, eos_token=END_OF_TURN,
                                        additional_special_tokens=list(extra_special_tokens))
    tokenizer.chat_template = chat_template or _llama3_template(generation_role)

    token_id = tokenizer.convert_tokens_to_ids
    stop_ids = [token_id(END_OF_TURN), token_id(END_OF_TEXT)]
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=max_positions, tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=token_id(BEGIN_OF_TEXT), eos_token_id=stop_ids,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=stop_ids,
                                               **(sampling_defaults or {"do_sample": False}))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
