"""``userloop train reward``: a persona-conditioned reward model on TRL's ``RewardTrainer`` (RLHI section 2.2).

RLHI scores candidate answers with a reward model that reads the user's persona: a sequence
classifier with one output r(x, y), trained on preference pairs with the Bradley-Terry loss
-log sigmoid(r(x, chosen) - r(x, rejected)) (TRL's ``RewardTrainer``), where x is the conversation up
to the user's request with the persona in the system message (:func:`~userloop.rlhi.conditioning.with_persona`).
``--no-persona`` trains the persona-agnostic control on the same pairs.

Pairs come from ``--pairs`` (``rlhi build``'s user-guided rewrites, ``rlhi rewards``'s user-based pairs;
held-out pairs: those of about ``held_out`` of the users, chosen by a hash of the user id) or, by
default, are made on the testbed (:func:`styled_pairs`): for a request of the prepared data, the
request's first answer is re-rendered by the testbed assistant in two styles (same substance:
``rlhi.rewrites.substance`` and ``testbed.assistant.render``): a random style, and the same style with
one random axis (length, structure, tone or vocabulary) changed, so one persona field decides the
preference; the answer with the
higher true persona-match score of the asking user is chosen; scores less than ``min_margin`` apart give
no pair (counted: such near-ties are decided by the filler sentences the renderer drew, not by the persona). The
preferred answer depends on the persona, so a model blind to the persona can do no better than the
population's majority preference; the report gives that bound (``population_oracle_accuracy``: the
pair ordered by the mean score over every user's true persona, the testbed's persona-agnostic
quality). Training pairs come from the ``train`` split, held-out pairs from the ``test`` split (other users).

The model: a small ``LlamaForSequenceClassification`` built from scratch with a byte-level BPE
tokenizer trained on the training rows' text, persona included, and a Llama-3-style chat template (``init: scratch``), or a
pretrained folder / Hub id loaded with one output. ``out`` ends up a ``save_pretrained`` folder that
``rm:OUT`` scores with (:class:`~userloop.rlhi.reward_scorers.RewardModelScorer`), plus ``train_config.yaml``
and ``reward_report.json`` (held-out pair accuracy; with the persona model, also the accuracy when the
persona is removed from the input).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from userloop.config import option, require_at_least_one
from userloop.config import parse_config as parse_trainer_config
from userloop.errors import UserError, missing_dependency
from userloop.files import write_atomic
from userloop.models.tiny import BEGIN_OF_TEXT, END_OF_TURN, SPECIAL_TOKENS, _llama3_template, train_byte_level_bpe
from userloop.rlhi.build import read_split_conversations
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.dpo import read_pairs
from userloop.rlhi.pairwise_judges import TestbedJudge
from userloop.rlhi.reward_scorers import RewardModelScorer, ScoreRequest
from userloop.rlhi.rewrites import TestbedRewriter, substance
from userloop.rlhi.user_rewards import derive_personas, label_followups
from userloop.testbed import read_truth, score
from userloop.testbed.assistant import STYLE_VALUES, Style, render
from userloop.testbed.population import truth_folder
from userloop.train.common import TrainResult, step_progress, trainer_arguments, validate_bf16

PAD_TOKEN = "<|end_of_text|>"


@dataclass
class RewardTrainConfig:
    """How to train a reward model; every field is also a flag (``--field value``) and a YAML key."""

    pairs: str | None = option(None, "preference pairs: pairs.parquet, a pairs_dataset/ folder, or a folder holding either "
                                      "('rlhi build' / 'rlhi rewards' output); default: testbed pairs made from --data")
    data: str | None = option(None, "testbed pairs: the prepared testbed folder (train split: training pairs, test split: "
                                     "held-out pairs); default: the built-in testbed, prepared")
    out: str = option("reward-model", "output folder: the reward model (save_pretrained), reward_report.json, train_config.yaml")
    persona: bool = option(True, "put the user's persona in the system message (false: the persona-agnostic control)")
    persona_source: str = option("derived", "testbed pairs: whose persona text the model reads: derived (part 1's offline "
                                             "derivation, what a deployment has) or true (the testbed's description)")
    max_pairs: int = option(800, "testbed pairs: at most this many training pairs (held-out: at most a quarter of it)")
    min_margin: float = option(0.1, "testbed pairs: the chosen answer's true persona-match score must beat the rejected "
                                     "one's by at least this much (near-ties are decided by filler words, not the persona)")
    held_out: float = option(0.2, "--pairs: share of users whose pairs are held out for the accuracy")
    init: str = option("scratch", "'scratch' (new tokenizer and small Llama) or a pretrained path or Hub id")
    vocab_size: int = option(1024, "scratch: BPE vocabulary size")
    hidden_size: int = option(64, "scratch: model width")
    layers: int = option(2, "scratch: transformer layers")
    heads: int = option(4, "scratch: attention heads (key/value heads: half of them)")
    max_length: int = option(768, "longest pair in tokens (prompt + answer); longer pairs are left out and counted")
    learning_rate: float = option(1e-3, "peak learning rate (cosine schedule); use ~1e-5 for a pretrained model")
    batch_size: int = option(16, "pairs per step")
    epochs: float = option(3.0, "passes over the training pairs (ignored when max_steps > 0)")
    max_steps: int = option(-1, "stop after this many updates (-1: run the epochs)")
    warmup: float = option(0.05, "learning-rate warmup: a fraction of the updates (< 1) or a number of updates")
    seed: int = option(0, "random seed (pairs, initialisation, data order)")
    bf16: str = option("auto", "bfloat16 mixed precision: auto (on when the GPU or CPU supports it), true, false")
    logging_steps: int = option(10, "record the training loss every N updates")

    def validate(self) -> None:
        if self.persona_source not in ("derived", "true"):
            raise UserError(f"persona_source must be derived or true, got {self.persona_source!r}")
        validate_bf16(self.bf16)
        require_at_least_one(self, ("max_pairs", "vocab_size", "hidden_size", "layers", "heads", "max_length",
                                    "batch_size", "logging_steps"))
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 2:
            raise UserError(f"hidden_size ({self.hidden_size}) must be a multiple of heads ({self.heads}) with an even head size")
        if not 0 <= self.min_margin < 1:
            raise UserError(f"min_margin must be in [0, 1), got {self.min_margin}")
        if not 0 < self.held_out < 1:
            raise UserError(f"held_out must be in (0, 1), got {self.held_out}")
        if self.learning_rate <= 0 or self.warmup < 0:
            raise UserError("learning_rate must be positive and warmup at least 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(f"max_steps must be -1 or at least 1, got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise UserError(f"epochs must be positive, got {self.epochs}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise UserError(f"--out {self.out} is a file, not a folder")


def parse_config(args: Sequence[str]) -> RewardTrainConfig:
    """The config from command-line ``args`` (:func:`userloop.config.parse_config`: ``--config FILE.yaml``
    and flags); ``--help`` lists every field."""
    return parse_trainer_config(RewardTrainConfig, args, prog="userloop train reward",
                                description="Train a persona-conditioned reward model (see docs/rlhi.md).")


# ----------------------------------------------------------------------------- testbed pairs
def styled_pairs(data: Path, split: str, limit: int, seed: int, persona_source: str, counts: Counter,
                  min_margin: float = 0.0) -> tuple[list[dict[str, Any]], dict[str, dict]]:
    """Pairs of two style renderings of each conversation's first answer (module docstring), at most
    ``limit`` (drawn at random with ``seed``), the two true scores at least ``min_margin`` apart (and
    never equal); returns the pairs and the users' true personas."""
    truth = truth_folder(data)
    if truth is None:
        raise UserError(f"{data} is not the testbed (no truth.jsonl): testbed pairs need the truth; give --pairs PATH")
    users, _ = read_truth(truth)
    true_personas = {user_id: record["persona"] for user_id, record in users.items()}
    conversations = read_split_conversations(data, split)
    if persona_source == "true":
        persona_text = {user_id: record["description"] for user_id, record in users.items()}
    else:
        persona_text = derive_personas(conversations, label_followups(conversations, None, Counter()), 3)
    stock = TestbedRewriter()._stock
    pool = [c for c in conversations if c.user_id in true_personas]
    counts["conversations_not_in_truth"] += len(conversations) - len(pool)
    random.Random(seed).shuffle(pool)
    pairs = []
    for conversation in pool:
        if len(pairs) >= limit:
            break
        messages = [{"role": m.role, "content": m.content} for m in conversation.messages]
        first = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first is None or first + 1 >= len(messages) or messages[first + 1]["role"] != "assistant":
            counts["skipped_no_answer"] += 1
            continue
        sentences, block = substance(messages[first + 1]["content"], stock)
        if not sentences:
            counts["skipped_no_substance"] += 1
            continue
        rng = random.Random(f"{seed}-{conversation.id}")
        a = Style(**{axis: rng.choice(values) for axis, values in STYLE_VALUES.items()})
        axis = rng.choice(sorted(STYLE_VALUES))
        b = replace(a, **{axis: rng.choice([v for v in STYLE_VALUES[axis] if v != getattr(a, axis)])})
        texts = [render(rng, style, sentences[0], sentences[1:], block) for style in (a, b)]
        truth_scores = [score(true_personas[conversation.user_id], text) for text in texts]
        margin = abs(truth_scores[0] - truth_scores[1])
        if margin <= 1e-9 or margin < min_margin:
            counts["skipped_tie" if margin <= 1e-9 else "skipped_near_tie"] += 1
            continue
        best = 0 if truth_scores[0] > truth_scores[1] else 1
        persona = persona_text.get(conversation.user_id)
        counts["pairs_without_persona"] += persona is None
        pairs.append({"prompt": messages[:first + 1], "chosen": [{"role": "assistant", "content": texts[best]}],
                      "rejected": [{"role": "assistant", "content": texts[1 - best]}], "user_id": conversation.user_id,
                      "persona": persona, "feedback": None, "conversation_id": conversation.id})
    counts["pairs"] += len(pairs)
    return pairs, true_personas


def held_out_user(user_id: str | None, share: float, seed: int) -> bool:
    """Whether ``user_id``'s pairs are held out (a stable hash of the id and the seed; no id: never)."""
    if not user_id:
        return False
    digest = hashlib.sha256(f"{seed}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def population_oracle_accuracy(pairs: Sequence[dict], true_personas: dict[str, dict]) -> float | None:
    """The accuracy of ordering each pair by the persona-agnostic quality (UserEval's overall score: the
    mean true score over every user's persona): the best a persona-blind reward can do when it knows the
    population's taste exactly."""
    if not pairs or not true_personas:
        return None
    quality = TestbedJudge(true_personas).overall_score
    right = 0.0
    for pair in pairs:
        chosen, rejected = quality(pair["chosen"][0]["content"]), quality(pair["rejected"][0]["content"])
        right += 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0
    return round(right / len(pairs), 4)


# ----------------------------------------------------------------------------- model and training
def build_tokenizer(texts, vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts`` with a Llama-3-style chat template (system
    messages rendered) and ``<|end_of_text|>`` as padding."""
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise UserError(f"vocab_size must hold the 256 bytes and the special tokens: at least {256 + len(SPECIAL_TOKENS)}")
    bpe = train_byte_level_bpe(texts, vocab_size, SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BEGIN_OF_TEXT, eos_token=END_OF_TURN, pad_token=PAD_TOKEN)
    tokenizer.chat_template = _llama3_template()
    return tokenizer


def _row_texts(rows: Sequence[dict]):
    """Every message of TRL preference ``rows`` as the model reads it (the persona's system message included)."""
    for row in rows:
        for message in (*row["prompt"], *row["chosen"], *row["rejected"]):
            yield message["content"]


def tokenizer_and_model(config: RewardTrainConfig, rows: Sequence[dict]):
    """``(tokenizer, model)``: built from scratch or loaded with one output. From scratch, the tokenizer is
    trained on the training ``rows`` (:func:`training_rows`, the persona's system message included), so the
    persona's words are whole tokens like the answers' words."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    if config.init == "scratch":
        tokenizer = build_tokenizer(_row_texts(rows), config.vocab_size)
        torch.manual_seed(config.seed)
        model = LlamaForSequenceClassification(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=4 * config.hidden_size,
            num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=max(1, config.heads // 2),
            max_position_embeddings=config.max_length, tie_word_embeddings=False, num_labels=1,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
        return tokenizer, model
    source = str(Path(config.init).expanduser()) if Path(config.init).expanduser().is_dir() else config.init
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if not tokenizer.chat_template:
            raise UserError(f"{source}: the tokenizer has no chat template")
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    except (OSError, ValueError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UserError(f"cannot load {source!r} as a reward model: {(lines or [type(err).__name__])[0][:300]}") from None
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def training_rows(pairs: Sequence[dict], persona: bool) -> list[dict]:
    """TRL's conversational preference rows (explicit prompt), the persona in the prompt's system message."""
    return [{"prompt": with_persona(p["prompt"], p.get("persona") if persona else None),
             "chosen": [{"role": m["role"], "content": m["content"]} for m in p["chosen"]],
             "rejected": [{"role": m["role"], "content": m["content"]} for m in p["rejected"]]} for p in pairs]


def fits(tokenizer, row: dict, max_length: int) -> bool:
    return all(len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=True)["input_ids"]) <= max_length
               for side in ("chosen", "rejected"))


def _trainer(config: RewardTrainConfig, model, tokenizer, rows: list[dict], on_progress):
    import datasets
    from transformers import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    progress = step_progress(on_progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = RewardConfig(**trainer_arguments(config, config.out, config.learning_rate), save_strategy="no",
                            eval_strategy="no", gradient_checkpointing=False, max_length=None,
                            pad_token=tokenizer.pad_token)
    trainer = RewardTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                            processing_class=tokenizer, callbacks=[progress])
    trainer.remove_callback(PrinterCallback)
    return trainer


def pair_accuracy(scorer, pairs: Sequence[dict]) -> float | None:
    """Share of ``pairs`` whose chosen answer the scorer rates above the rejected one (equal: half)."""
    if not pairs:
        return None
    requests = [ScoreRequest(p.get("user_id") or "", p.get("persona"), p["prompt"], p[side][0]["content"])
                for p in pairs for side in ("chosen", "rejected")]
    values = scorer.score(requests)
    right = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(values[::2], values[1::2], strict=True))
    return round(right / len(pairs), 4)


def train_reward_model(config: RewardTrainConfig, on_progress: Callable[[int, int], None] | None = None,
                       on_message: Callable[[str], None] = lambda message: None) -> TrainResult:
    """Train as ``config`` says, evaluate on the held-out pairs, save; returns the folder and the report."""
    try:
        import trl  # noqa: F401
    except ImportError:
        raise missing_dependency("trl", "train") from None
    import yaml

    config.validate()
    started = time.time()
    out = Path(config.out)
    counts: Counter = Counter()
    true_personas: dict[str, dict] = {}
    if config.pairs is not None:
        pairs = read_pairs(config.pairs, counts)
        train_pairs = [p for p in pairs if not held_out_user(p.get("user_id"), config.held_out, config.seed)]
        held_out = [p for p in pairs if held_out_user(p.get("user_id"), config.held_out, config.seed)]
        source = {"pairs": config.pairs, "pairs_skipped_malformed": counts["pairs_skipped_malformed"]}
    else:
        from userloop.testbed.default import default_data

        data = Path(config.data) if config.data else default_data(prepared=True)
        train_pairs, true_personas = styled_pairs(data, "train", config.max_pairs, config.seed, config.persona_source,
                                                  counts, config.min_margin)
        held_out, _ = styled_pairs(data, "test", max(1, config.max_pairs // 4), config.seed, config.persona_source,
                                   counts, config.min_margin)
        source = {"testbed": str(data), "persona_source": config.persona_source, "testbed_pairs": dict(counts)}
    if not train_pairs or not held_out:
        raise UserError(f"need training and held-out pairs, got {len(train_pairs)} and {len(held_out)}: pairs are held "
                        f"out by user (a share of {config.held_out} of the users), so more pairs, more users, or "
                        "another --held_out are needed")
    rows = training_rows(train_pairs, config.persona)
    tokenizer, model = tokenizer_and_model(config, rows)
    kept = [row for row in rows if fits(tokenizer, row, config.max_length)]
    on_message(f"{len(kept):,} training pairs ({len(rows) - len(kept):,} longer than {config.max_length} tokens left out), "
               f"{len(held_out):,} held-out pairs"
               + (f"; {counts['pairs_skipped_malformed']:,} malformed rows left out" if counts["pairs_skipped_malformed"] else ""))
    if not kept:
        raise UserError(f"every training pair is longer than max_length {config.max_length}")
    trainer = _trainer(config, model, tokenizer, kept, on_progress)
    trainer.train()
    model = trainer.model.eval()
    scorer = RewardModelScorer(tokenizer, model, max_length=config.max_length, use_persona=config.persona)
    with_persona_pairs = [p for p in held_out if p.get("persona")]
    report: dict[str, Any] = {
        "persona": config.persona, "init": config.init, "source": source,
        "train_pairs": len(kept), "train_pairs_too_long": len(rows) - len(kept), "held_out_pairs": len(held_out),
        "held_out_pairs_with_persona": len(with_persona_pairs),
        "steps": trainer.state.global_step, "parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None),
        "train_accuracy": pair_accuracy(scorer, train_pairs[:len(held_out)]),
        "held_out_accuracy": pair_accuracy(scorer, held_out),
        "held_out_accuracy_on_pairs_with_persona": pair_accuracy(scorer, with_persona_pairs),
    }
    if config.persona:
        scorer.use_persona = False
        report["held_out_accuracy_persona_removed"] = pair_accuracy(scorer, held_out)
    if true_personas:
        report["population_oracle_accuracy"] = population_oracle_accuracy(held_out, true_personas)
    report["seconds"] = round(time.time() - started, 1)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    (out / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    write_atomic(out / "reward_report.json", json.dumps(report, indent=2))
    return TrainResult(out, report)
