"""``userloop train user-lm``: train a user LM on flipped conversations with TRL's ``SFTTrainer``.

The recipe of "Flipping the Dialogue" (arXiv 2510.06552, section 3; microsoft/UserLM-8b: full
fine-tuning of Llama3-8b on WildChat, max length 2048, lr 2e-5) on a prepared folder: the ``train``
split is flipped (:mod:`userloop.userlm.flip`, ``packed`` or ``per_turn``) into pre-tokenised rows
with a ``completion_mask`` (1 on target tokens only), and ``SFTTrainer`` trains with
``completion_only_loss``; the ``validation`` split (packed: the same per-token loss, fewer tokens)
gives the validation loss. From scratch (``init: scratch``) a byte-level BPE tokenizer is trained on
the training text and a small Llama is built; from a pretrained path or Hub id the UserLM special
tokens and chat template are added where missing, and training is full fine-tuning or LoRA (peft).

Everything is one :class:`UserLMTrainConfig`, read by one parser (:func:`parse_config`: flags, and a
YAML file given with ``--config`` whose values flags override). ``out`` ends up a ``save_pretrained``
folder (model, tokenizer with the chat template, generation config with UserLM-8b's sampling
defaults) that stock transformers loads, plus ``train_config.yaml``, ``train_report.json``,
``loss_curve.jsonl`` and ``loss_curve.png``; ``checkpoint-N/`` folders let ``--resume`` continue.

``role: assistant`` (``userloop train assistant``) trains the same model the usual way round: loss on the
assistant turns, the source's system prompt as context, a chat template ending with the assistant header.
It gives the prompted-assistant baseline of the paper's Table 2 at the same size, and RLHI's base policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from userloop.config import option, require_at_least_one
from userloop.config import parse_config as parse_trainer_config
from userloop.conversation import Conversation
from userloop.data.personas import read_personas
from userloop.errors import UserError
from userloop.files import write_atomic
from userloop.train.common import (
    TrainResult,
    curve_rows,
    in_memory_dataset,
    large_allocations_mapped,
    load_pretrained,
    release_freed_memory,
    score_labelled_positions,
    step_progress,
    trainer_arguments,
    validate_bf16,
    write_curve_rows,
)
from userloop.userlm.flip import ROLES, SCHEMES, Sample, flip, read_split, user_system_message
from userloop.userlm.template import (
    BEGIN_OF_TEXT,
    CHAT_TEMPLATES,
    END_OF_TEXT,
    END_OF_TURN,
    GENERATION_DEFAULTS,
    SPECIAL_TOKENS,
    save_tokenizer,
    special_token_ids,
)
from userloop.userlm.tokenizer import train_tokenizer


@dataclass
class UserLMTrainConfig:
    """How to train a user LM; every field is also a flag (``--field value``) and a YAML key."""

    data: str | None = option(None, "prepared folder (userloop data prepare): trains on 'train', validates on "
                                      "'validation'; default: the built-in testbed, prepared")
    out: str = option("user-lm", "output folder: the final model, checkpoint-N/ folders, loss curve and reports")
    personas: str | None = option(None, "personas.jsonl ('userloop personas'): a persona-conditioned user LM, the "
                                         "user's persona after the intent in the system message (users without "
                                         "one keep the bare intent; counted)")
    detailed_intents: float = option(0.0, "share of the conversations (drawn with seed) conditioned on their detailed "
                                          "intent, the task's specifics (the testbed's 'detailed_intent'), instead of "
                                          "the high-level one: a user LM that must convey a given problem (sharded "
                                          "math, eval-validity) has then seen such intents; conversations without one "
                                          "keep theirs (counted)")
    role: str = option("user", "whose turns carry the loss: user (a user LM: intent as system message, "
                                "<|endconversation|> target) or assistant (the same model trained as an assistant)")
    init: str = option("scratch", "'scratch' (new tokenizer and small Llama) or a pretrained path or Hub id")
    scheme: str = option("packed", "packed (one sequence per conversation, loss on every user turn) or per_turn "
                                    "(the paper's K+1 samples); same loss, packed reads ~K times fewer tokens")
    vocab_size: int = option(2048, "scratch: BPE vocabulary size of the tokenizer trained on the training text")
    hidden_size: int = option(128, "scratch: model width")
    layers: int = option(2, "scratch: number of transformer layers")
    heads: int = option(4, "scratch: attention heads (key/value heads: half of them)")
    max_length: int = option(2048, "longest sample in tokens (the paper: 2048); targets beyond it are dropped and counted")
    learning_rate: float | None = option(None, "peak learning rate; default 2e-3 from scratch, 2e-4 with LoRA, "
                                                "2e-5 for full fine-tuning (the paper)")
    batch_size: int = option(8, "samples per device per step (batches group samples of similar length)")
    gradient_accumulation_steps: int = option(1, "steps whose gradients are summed before an update")
    epochs: float = option(1.0, "passes over the training samples (ignored when max_steps > 0)")
    max_steps: int = option(300, "stop after this many updates (-1: run the epochs); the default 300 takes "
                                  "about 4 minutes on a 2-core CPU on the testbed")
    warmup: float = option(0.05, "learning-rate warmup: a fraction of the updates (< 1) or a number of updates")
    lora: bool = option(False, "train LoRA adapters (peft) instead of all weights; pretrained init only; the "
                                "adapters are merged into the saved model")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    seed: int = option(0, "random seed (data order, initialisation)")
    bf16: str = option("auto", "bfloat16 mixed precision: auto (on when the GPU or CPU supports it: CUDA bf16, "
                                "AVX512-BF16 or AMX), true, false")
    eval_steps: int = option(100, "compute the validation loss every N updates (0: only at the end)")
    save_steps: int = option(200, "write a checkpoint-N/ folder every N updates (0: only at the end)")
    logging_steps: int = option(10, "record the training loss every N updates")
    resume: bool = option(False, "continue from the last checkpoint-N/ folder in out")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, about a "
                                                 "third more compute per update (for large models, e.g. 8B)")

    def validate(self) -> None:
        """Raise :class:`UserError` for a value that cannot work."""
        if self.role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.scheme not in SCHEMES:
            raise UserError(f"scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        validate_bf16(self.bf16)
        positive = ("vocab_size", "hidden_size", "layers", "heads", "max_length", "batch_size",
                    "gradient_accumulation_steps", "lora_r", "lora_alpha", "logging_steps")
        require_at_least_one(self, positive)
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 2:
            raise UserError(f"hidden_size ({self.hidden_size}) must be a multiple of heads ({self.heads}) with an even head size")
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(f"max_steps must be -1 or at least 1, got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise UserError(f"epochs must be positive, got {self.epochs}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise UserError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup < 0 or self.eval_steps < 0 or self.save_steps < 0 or not 0 <= self.lora_dropout < 1:
            raise UserError("warmup, eval_steps and save_steps must be >= 0 and lora_dropout in [0, 1)")
        if self.lora and self.init == "scratch":
            raise UserError("lora needs a pretrained init (a path or Hub id); from scratch every weight is trained")
        if not 0 <= self.detailed_intents <= 1:
            raise UserError(f"detailed_intents is a share in [0, 1], got {self.detailed_intents}")
        if self.detailed_intents and self.role != "user":
            raise UserError("detailed_intents condition a user LM (role user); an assistant never sees the intent")
        if self.personas is not None and self.role != "user":
            raise UserError("personas condition a user LM (role user); an assistant never sees the user's persona here")

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-3 if self.init == "scratch" else 2e-4 if self.lora else 2e-5


def parse_config(args: Sequence[str], role: str = "user") -> UserLMTrainConfig:
    """The config from command-line ``args`` (:func:`userloop.config.parse_config`: ``--config FILE.yaml``
    and flags); ``role="assistant"`` (``userloop train assistant``) makes ``role`` and ``out`` default to ``assistant``."""
    command = "user-lm" if role == "user" else role
    what = "a user LM on flipped conversations" if role == "user" else "an assistant"
    config = parse_trainer_config(UserLMTrainConfig, args, prog=f"userloop train {command}",
                                  description=f"Train {what} (see docs/userlm.md).",
                                  defaults=None if role == "user" else {"role": role, "out": role})
    if config.role != role:
        raise UserError(f"'userloop train {command}' trains role {role}; for role {config.role} use "
                        f"'userloop train {'user-lm' if config.role == 'user' else config.role}'")
    return config


def train_user_lm(config: UserLMTrainConfig, on_progress: Callable[[int, int], None] | None = None,
                  on_message: Callable[[str], None] = lambda message: None) -> TrainResult:
    """Train (or resume) as ``config`` says; returns the output folder and the report written to it.

    ``on_progress(step, total_steps)`` is called after each update; ``on_message`` gets one-line notes
    (data accounting, resumption) as they happen.
    """
    config.validate()
    with large_allocations_mapped():
        return _train(config, on_progress, on_message)


def _train(config: UserLMTrainConfig, on_progress: Callable[[int, int], None] | None,
           on_message: Callable[[str], None]) -> TrainResult:
    started = time.time()
    out = Path(config.out)
    checkpoint = _last_checkpoint(out) if config.resume else None
    train_convs, validation_convs, filled = _read_data(config)
    if filled:
        on_message(f"{filled:,} conversations had no intent: gave them an offline intent (userloop.userlm.intents)")
    detailed = use_detailed_intents(train_convs + validation_convs, config.detailed_intents, config.seed)
    if config.detailed_intents:
        on_message(f"detailed intents: {detailed['used']:,} conversations ({detailed['without_one']:,} drawn had none "
                   f"and kept their high-level intent)")
    personas, persona_counts = _read_personas(config, train_convs + validation_convs)
    if persona_counts:
        on_message(f"personas: {persona_counts['matched']:,} of {persona_counts['records']:,} users in {config.personas} "
                   f"have conversations here ({persona_counts['unmatched']:,} unknown user ids, not used)")
    tokenizer, model, added_tokens = _tokenizer_and_model(config, train_convs, checkpoint, personas)
    train_samples, train_report = flip(train_convs, tokenizer, config.scheme, config.max_length, role=config.role,
                                       personas=personas)
    validation_samples, validation_report = flip(validation_convs, tokenizer, "packed", config.max_length,
                                                 role=config.role, personas=personas)
    on_message(f"train: {train_report.summary()}")
    on_message(f"validation: {validation_report.summary()}")
    for split, samples, convs in (("train", train_samples, train_convs), ("validation", validation_samples, validation_convs)):
        if not samples:
            why = "has no conversations" if not convs else "has no sample left after flipping (see the counts above)"
            raise UserError(f"{config.data}: the {split} split {why}; training needs both train and validation")
    del train_convs, validation_convs, samples, convs  # flipped: the samples are what is left to hold
    unigram = unigram_baseline(train_samples, validation_samples, len(tokenizer))
    if checkpoint:
        on_message(f"resuming from {checkpoint}")

    trainer = _trainer(config, model, tokenizer, train_samples, validation_samples, added_tokens, on_progress)
    del train_samples, validation_samples  # the trainer has the rows
    release_freed_memory()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    validation_loss = next((entry["eval_loss"] for entry in trainer.state.log_history  # evaluated at the last step?
                            if "eval_loss" in entry and entry["step"] == trainer.state.global_step), None)
    if validation_loss is None:
        validation_loss = trainer.evaluate()["eval_loss"]
    _save_final(trainer, tokenizer, config, out)
    curve = curve_rows(trainer.state.log_history)
    report = {
        "role": config.role, "init": config.init, "scheme": config.scheme, "resumed_from": str(checkpoint) if checkpoint else None,
        "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
        "parameters": sum(p.numel() for p in trainer.model.parameters()), "bf16": bool(trainer.args.bf16),
        "vocab_size": len(tokenizer), "flip": {"train": train_report.to_dict(), "validation": validation_report.to_dict()},
        "intents_filled_offline": filled, "detailed_intents": {"share": config.detailed_intents, **detailed},
        "personas": persona_counts or None,
        "tokens_per_epoch": train_report.tokens, "target_tokens_per_epoch": train_report.target_tokens,
        "final_train_loss": next((row["loss"] for row in reversed(curve) if "loss" in row), None),
        "validation_loss": validation_loss, "unigram_baseline": unigram,
        "seconds": round(time.time() - started, 1),
    }
    if trainer.is_world_process_zero():  # under accelerate launch, one process writes the reports
        write_loss_curve(curve, out, unigram, title="user LM training" if config.role == "user" else "assistant training")
        write_atomic(out / "train_report.json", json.dumps(report, indent=2))
    return TrainResult(out, report)


# ---------------------------------------------------------------------- data
def _read_data(config: UserLMTrainConfig) -> tuple[list[Conversation], list[Conversation], int]:
    if config.data is None:
        from userloop.testbed.default import default_data

        config.data = str(default_data(prepared=True))
    train, filled_train = read_split(config.data, "train")
    validation, filled_validation = read_split(config.data, "validation")
    return train, validation, filled_train + filled_validation


def use_detailed_intents(conversations: list[Conversation], share: float, seed: int) -> dict[str, int]:
    """Give a ``share`` of ``conversations`` (drawn by a hash of id and ``seed``, so the same ones whatever the
    order) their detailed intent (``extra["detailed_intent"]``, written by the testbed) as their intent; returns
    how many got one (``used``) and how many drawn had none (``without_one``)."""
    counts = {"used": 0, "without_one": 0}
    for conv in conversations:
        draw = int.from_bytes(hashlib.blake2b(f"{seed}:{conv.id}".encode(), digest_size=8).digest()) / 2**64
        if draw >= share:
            continue
        detailed = conv.extra.get("detailed_intent")
        if isinstance(detailed, str) and detailed.strip():
            conv.intent = detailed
            counts["used"] += 1
        else:
            counts["without_one"] += 1
    return counts


def _read_personas(config: UserLMTrainConfig, conversations: list[Conversation]) -> tuple[dict[str, str] | None, dict]:
    """The persona text by user id of ``config.personas`` (``None`` without one) and its counts: records,
    users with conversations in the data (``matched``) and without (``unmatched``, unused). A file that
    matches no user is refused: its personas were derived from other data."""
    if config.personas is None:
        return None, {}
    personas = read_personas(Path(config.personas))
    users = {conv.user_id for conv in conversations if conv.user_id}
    matched = len(personas.keys() & users)
    if not matched:
        raise UserError(f"{config.personas}: none of its {len(personas):,} personas belongs to a user of {config.data} "
                        f"({len(users):,} users with an id there): derive them from this data with 'userloop personas'")
    return personas, {"file": config.personas, "records": len(personas), "matched": matched,
                      "unmatched": len(personas) - matched}


def unigram_baseline(train: list[Sample], validation: list[Sample], vocab_size: int) -> float:
    """Cross-entropy (nats/token) of the validation targets under the unigram distribution of the
    training targets (add-one smoothed over the vocabulary): what a model that ignores context scores."""
    counts = Counter(token for s in train for token, bit in zip(s.ids, s.mask, strict=True) if bit)
    total = sum(counts.values()) + vocab_size
    nll = [-math.log((counts[token] + 1) / total) for s in validation for token, bit in zip(s.ids, s.mask, strict=True) if bit]
    return sum(nll) / len(nll)


# ---------------------------------------------------------------------- model
def _last_checkpoint(out: Path) -> Path:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last is None:
        raise UserError(f"--resume: no checkpoint-N/ folder in {out}")
    return Path(last)


def _tokenizer_and_model(config: UserLMTrainConfig, train: list[Conversation], checkpoint: Path | None,
                         personas: dict[str, str] | None = None):
    """Tokenizer and model to start from; returns ``(tokenizer, model, added special tokens)``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if config.init == "scratch":
        if checkpoint is not None:  # the trainer restores the weights; the tokenizer must be the saved one
            tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        else:
            tokenizer = train_tokenizer(_texts(train, personas or {}), config.vocab_size)
            tokenizer.chat_template = CHAT_TEMPLATES[config.role]
        ids = special_token_ids(tokenizer)
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=4 * config.hidden_size,
            num_hidden_layers=config.layers, num_attention_heads=config.heads,
            num_key_value_heads=max(1, config.heads // 2), max_position_embeddings=config.max_length,
            tie_word_embeddings=True, bos_token_id=ids[BEGIN_OF_TEXT], eos_token_id=ids[END_OF_TURN],
            pad_token_id=tokenizer.pad_token_id))
        return tokenizer, model, []
    # Full fine-tuning keeps float32 master weights (bf16 is the trainer's mixed precision): updated in
    # bfloat16 storage, most lr-2e-5 steps of a bf16 checkpoint (Llama 3, UserLM-8b) would round away.
    tokenizer, model = load_pretrained(config.init, dtype="auto" if config.lora else "float32")
    vocab = tokenizer.get_vocab()
    added = [token for token in SPECIAL_TOKENS if token not in vocab]
    if added:
        tokenizer.add_special_tokens({"additional_special_tokens": added}, replace_extra_special_tokens=False)
        model.resize_token_embeddings(len(tokenizer))
    tokenizer.bos_token = BEGIN_OF_TEXT  # what the UserLM template writes first
    tokenizer.pad_token = tokenizer.pad_token or END_OF_TEXT
    tokenizer.chat_template = CHAT_TEMPLATES[config.role]
    return tokenizer, model, added


def _texts(conversations: list[Conversation], personas: dict[str, str]):
    """The training text a scratch tokenizer learns from: each system message as the model reads it, and the turns."""
    for conv in conversations:
        yield user_system_message(conv.intent or "", personas.get(conv.user_id or ""))
        for message in conv.messages:
            yield message.content


# ---------------------------------------------------------------------- trainer
def _dataset(samples: list[Sample]):
    """The samples as the rows TRL's ``SFTTrainer`` would prepare from them, built here in one pass over Arrow
    arrays: ``input_ids`` and ``labels`` (the id on a target token, -100 elsewhere: completion-only loss).
    TRL's own preparation (label building, truncation to ``max_length``, dropping rows without a target) copies
    the table three times in Python rows and has nothing to do here: :func:`flip` keeps every sample within
    ``max_length`` and with at least one target. The trainer skips it (``skip_prepare_dataset``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = pa.array([s.ids for s in samples], pa.list_(pa.int32()))
    targets = pc.cast(pa.array([s.mask for s in samples], pa.list_(pa.int8())).flatten(), pa.bool_())
    labels = pc.if_else(targets, pc.cast(ids.flatten(), pa.int64()), pa.scalar(-100, pa.int64()))
    return in_memory_dataset({"input_ids": ids, "labels": pa.ListArray.from_arrays(ids.offsets, labels)})


def _trainer(config, model, tokenizer, train: list[Sample], validation: list[Sample], added_tokens: list[str],
             on_progress):
    from transformers import PrinterCallback

    progress = step_progress(on_progress)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM",
                                 modules_to_save=["embed_tokens", "lm_head"] if added_tokens else None)
    with warnings.catch_warnings():  # TRL's own use of deprecated transformers names, not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        args = _sft_config(config)
    trainer = _length_grouped_sft_trainer()(model=model, args=args, train_dataset=_dataset(train),
                                            eval_dataset=_dataset(validation), processing_class=tokenizer,
                                            peft_config=peft_config, callbacks=[progress])
    trainer.remove_callback(PrinterCallback)
    score_labelled_positions(trainer)
    return trainer


def _length_grouped_sft_trainer():
    """TRL's ``SFTTrainer`` whose batches group samples of similar length (little padding), grouped over the
    global batch of an update (every process's rows), so that N processes (``accelerate launch``) train on the
    same updates, in the same order for a seed, as one process with an N times larger batch."""
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl import SFTTrainer

    class LengthGroupedSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset=None):
            import pyarrow.compute as pc

            dataset = self.train_dataset if train_dataset is None else train_dataset
            lengths = pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()
            args = self.args
            return LengthGroupedSampler(args.train_batch_size * args.gradient_accumulation_steps * args.world_size,
                                        lengths=lengths)

    return LengthGroupedSFTTrainer


def _sft_config(config: UserLMTrainConfig):
    """TRL's training arguments for ``config``: completion-only loss on pre-tokenised rows, length-grouped batches
    (for evaluation transformers' own sampler; for training :func:`_length_grouped_sft_trainer`'s)."""
    from trl import SFTConfig

    return SFTConfig(
        **trainer_arguments(config, config.out, config.peak_learning_rate),
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation_steps,
        eval_strategy="steps" if config.eval_steps else "no", eval_steps=config.eval_steps or None,
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        max_length=config.max_length, completion_only_loss=True, packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},  # the rows come prepared (_dataset)
        train_sampling_strategy="group_by_length", gradient_checkpointing=config.gradient_checkpointing,
        ddp_find_unused_parameters=False,  # every weight is used
    )


def _save_final(trainer, tokenizer, config: UserLMTrainConfig, out: Path) -> None:
    """The final model as a plain ``save_pretrained`` folder (LoRA adapters merged; FSDP and ZeRO-3 shards
    gathered by the trainer), the tokenizer with the chat template, UserLM-8b's generation defaults and
    the config that was run."""
    import yaml
    from transformers import GenerationConfig

    ids = special_token_ids(tokenizer)
    generation_config = GenerationConfig(bos_token_id=ids[BEGIN_OF_TEXT], eos_token_id=ids[END_OF_TURN],
                                         pad_token_id=tokenizer.pad_token_id, **GENERATION_DEFAULTS)
    main = trainer.is_world_process_zero()
    if config.lora:
        merged = trainer.model.merge_and_unload()
        merged.generation_config = generation_config
        if main:
            merged.save_pretrained(out)
    else:
        trainer.model.generation_config = generation_config
        trainer.save_model(str(out))
    if main:
        save_tokenizer(tokenizer, out)
        (out / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def write_loss_curve(rows: list[dict], out: Path, unigram: float, title: str = "user LM training") -> None:
    """``loss_curve.jsonl`` (:func:`~userloop.train.common.write_curve_rows`) and ``loss_curve.png`` in ``out``
    (with the unigram baseline as a dashed line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_curve_rows(rows, out)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("loss", "train"), ("eval_loss", "validation")):
        points = [(row["step"], row[key]) for row in rows if key in row]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
    ax.axhline(unigram, color="grey", linestyle="--", label="unigram baseline (validation)")
    ax.set_xlabel("update")
    ax.set_ylabel("loss (nats per target token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=100)
    plt.close(fig)

