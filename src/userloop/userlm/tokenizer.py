"""A byte-level BPE tokenizer for a user LM trained from scratch, with the UserLM special tokens.

Trained (``tokenizers`` library) on the text the model will read: intents and user and assistant
turns. The special tokens of microsoft/UserLM-8b come first in the vocabulary and are never split;
the result is a ``PreTrainedTokenizerFast`` carrying the UserLM chat template, so it saves and loads
like any Hub tokenizer. Byte-level: any text encodes, nothing maps to an unknown token.
"""

from __future__ import annotations

from collections.abc import Iterable

from userloop.errors import UserError
from userloop.models.tiny import train_byte_level_bpe
from userloop.userlm.template import (
    BEGIN_OF_TEXT,
    END_CONVERSATION,
    END_OF_TEXT,
    END_OF_TURN,
    SPECIAL_TOKENS,
    USERLM_CHAT_TEMPLATE,
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """A UserLM-compatible ``PreTrainedTokenizerFast`` with a BPE vocabulary of ``vocab_size`` learned from ``texts``."""
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise UserError(f"the tokenizer vocabulary must hold the 256 bytes and the special tokens: vocab size >= "
                        f"{256 + len(SPECIAL_TOKENS)}, got {vocab_size}")
    bpe = train_byte_level_bpe(texts, vocab_size, SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BEGIN_OF_TEXT, eos_token=END_OF_TURN,
                                        pad_token=END_OF_TEXT, additional_special_tokens=[END_CONVERSATION])
    tokenizer.chat_template = USERLM_CHAT_TEMPLATE
    return tokenizer
