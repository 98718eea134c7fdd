"""The chat template and special tokens of microsoft/UserLM-8b, and a tiny look-alike checkpoint.

A user LM reads a conversation whose optional system message is the task intent and writes the next
USER turn ("Flipping the Dialogue", arXiv 2510.06552, section 2). Each message is rendered as
``<|start_header_id|>{role}<|end_header_id|>\\n{content}<|eot_id|>`` (Llama-3 headers, one newline
after the header, content trimmed) after ``<|begin_of_text|>``, and the prompt always ends with the
user header, so whatever the conversation, the model's next tokens are a user turn. A turn ends with
``<|eot_id|>``; a user who is done writes ``<|endconversation|>`` as the content of its last turn
(followed by ``<|eot_id|>`` like any turn, so generation that stops on ``<|eot_id|>`` -- the real
model's generation config -- stops there too).

Token ids are never hard-coded: they are read from the tokenizer (:func:`special_token_ids`).
"""

from __future__ import annotations

from pathlib import Path

from userloop.errors import UserError
from userloop.models.tiny import build_tiny_chat_model

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
END_OF_TURN = "<|eot_id|>"
END_CONVERSATION = "<|endconversation|>"
SPECIAL_TOKENS = (BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, END_OF_TURN, END_CONVERSATION)

USERLM_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{{ '<|start_header_id|>user<|end_header_id|>\\n' }}"
)

# The same rendering for a model trained as an assistant (``userloop train assistant``): the generation
# prompt is the assistant header, as in Llama-3-instruct templates.
ASSISTANT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n' }}{% endif %}"
)
CHAT_TEMPLATES = {"user": USERLM_CHAT_TEMPLATE, "assistant": ASSISTANT_CHAT_TEMPLATE}

# microsoft/UserLM-8b's generation_config.json: nucleus sampling, stop on <|eot_id|>.
GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "max_length": 4096}


def special_token_ids(tokenizer) -> dict[str, int]:
    """Every UserLM special token's id in ``tokenizer``; a missing one raises :class:`UserError`."""
    ids = {}
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise UserError(f"the tokenizer has no {token} token: it is not a UserLM-compatible tokenizer")
        ids[token] = token_id
    return ids


def save_tokenizer(tokenizer, path: str | Path) -> None:
    """``save_pretrained`` with the chat template inside ``tokenizer_config.json``, as in microsoft/UserLM-8b
    (transformers 5 would write it to ``chat_template.jinja``; both load the same)."""
    tokenizer.save_pretrained(path, save_jinja_files=False)
    (Path(path) / "chat_template.jinja").unlink(missing_ok=True)


def build_userlm_lookalike(path: str | Path, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Write a tiny random checkpoint laid out like microsoft/UserLM-8b to ``path``; returns the folder.

    Same special token strings, a ``LlamaForCausalLM`` config, the UserLM chat template in
    ``tokenizer_config.json`` and the real model's generation config (sampling at temperature 0.6,
    top-p 0.9, stop on ``<|eot_id|>``, max length 4096). It loads with stock ``AutoTokenizer`` /
    ``AutoModelForCausalLM`` (no ``trust_remote_code``) and with ``load_model("hf:PATH")``.
    """
    from transformers import AutoTokenizer, GenerationConfig

    path = build_tiny_chat_model(path, hidden_size=hidden_size, layers=layers, extra_special_tokens=[END_CONVERSATION],
                                 chat_template=USERLM_CHAT_TEMPLATE, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    save_tokenizer(tokenizer, path)
    ids = special_token_ids(tokenizer)
    GenerationConfig(bos_token_id=ids[BEGIN_OF_TEXT], eos_token_id=ids[END_OF_TURN], **GENERATION_DEFAULTS).save_pretrained(path)
    return path
