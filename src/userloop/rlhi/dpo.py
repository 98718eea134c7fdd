"""``userloop train dpo``: persona-conditioned DPO on user-guided and user-based pairs (RLHI section 2.3).

RLHI trains the policy with DPO (Rafailov et al. 2023: maximise log sigmoid(beta * [log pi/pi_ref(chosen)
- log pi/pi_ref(rejected)])) on preference pairs whose prompt carries the user's persona in the system
message (:func:`userloop.rlhi.conditioning.with_persona`), so the policy learns what *this* user prefers.

* **Offline** (``--pairs``): one DPO run on existing pairs (``rlhi build``'s user-guided rewrites, or
  ``rlhi rewards``'s user-based pairs), starting from ``--policy``, against the frozen ``--ref``
  (default: a frozen copy of the initial policy).
* **Online iterative** (``--online``): for ``rounds`` rounds, sample ``n`` answers from the current
  policy for requests that got no feedback, score them (``--scorer``: ``testbed:scorer``, ``rm:PATH`` or a
  judge model), pair the best with the worst, and run DPO on those pairs starting from the round's
  policy with the round's starting policy as reference (iterative DPO as in Xu et al. 2023 and
  self-rewarding LMs, Yuan et al. 2024: model t+1 is trained against model t). ``--ref`` is the first
  round's reference. A last sampling pass scores the final policy, so the report shows the mean score
  before every round and after the last.
* **SFT on the chosen answers** (``method: sft``), the ablation: TRL's ``SFTTrainer`` on
  prompt-completion rows (loss on the chosen answer only), same pairs, same persona conditioning.

``--no-persona`` leaves the persona out of every prompt (the persona-agnostic ablation). Everything is
one :class:`DPOTrainConfig` (YAML with ``--config`` and flags, parsed like ``train user-lm``). ``out`` ends
up a ``save_pretrained`` folder with the tokenizer and its chat template, plus ``dpo_report.json``,
``loss_curve.jsonl`` (the logged training loss per update, as ``train user-lm`` writes it) and
``train_config.yaml``; the online mode keeps each round's policy in ``out/round-K/``. Multi-GPU:
``accelerate launch --config_file configs/accelerate/ddp.yaml -m userloop.cli train dpo ...``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from userloop.config import option, require_at_least_one
from userloop.config import parse_config as parse_trainer_config
from userloop.errors import UserError, missing_dependency
from userloop.files import write_atomic
from userloop.models import load_model
from userloop.models.registry import role_spec
from userloop.rlhi.anchors import AnchorBatches, anchored, read_anchors, tokenized_anchors
from userloop.rlhi.conditioning import is_message_list, with_persona
from userloop.rlhi.reward_scorers import load_scorer
from userloop.rlhi.user_rewards import best_worst_pairs, requests_without_feedback, sample_candidates, score_candidates
from userloop.train.common import (
    TrainResult,
    curve_rows,
    large_allocations_mapped,
    load_pretrained,
    release_freed_memory,
    score_labelled_positions,
    step_progress,
    trainer_arguments,
    validate_bf16,
    write_curve_rows,
)
from userloop.userlm.template import save_tokenizer

METHODS = ("dpo", "sft")


@dataclass
class DPOTrainConfig:
    """How to train the policy on preferences; every field is also a flag (``--field value``) and a YAML key."""

    policy: str | None = option(None, "the starting policy: a save_pretrained folder with a chat template "
                                       "(e.g. from 'userloop train assistant')")
    pairs: str | None = option(None, "preference pairs (offline mode): pairs.parquet, a pairs_dataset/ folder, or "
                                      "a folder holding either (an 'rlhi build' or 'rlhi rewards' output)")
    out: str = option("dpo", "output folder: the trained policy, dpo_report.json, train_config.yaml (online: round-K/)")
    ref: str | None = option(None, "reference model folder; default: a frozen copy of the initial policy")
    method: str = option("dpo", "dpo, or sft (supervised fine-tuning on the chosen answers: the ablation)")
    persona: bool = option(True, "put the user's persona in the system message of every prompt "
                                  "(--no-persona: the persona-agnostic ablation)")
    online: bool = option(False, "online iterative DPO: sample, score, pair best vs worst, train, for 'rounds' rounds")
    rounds: int = option(2, "online: number of sample-score-train rounds")
    scorer: str = option("testbed:scorer", "online: what scores the samples: testbed:scorer (true persona match), "
                                            "rm:PATH (a reward model from 'train reward'), or a chat model spec (judge)")
    n: int = option(4, "online: candidates sampled per request")
    data: str | None = option(None, "online: prepared folder whose requests without feedback are sampled "
                                     "(default: the built-in testbed, prepared)")
    split: str = option("train", "online: split of 'data' to take requests from")
    personas: str | None = option(None, "online: personas.jsonl of 'rlhi build' (default: derived offline from the split)")
    followups: str | None = option(None, "online: followups.jsonl of 'rlhi build' (default: the offline classifier)")
    requests: int = option(256, "online: requests sampled per round (fresh ones each round while the pool lasts)")
    temperature: float = option(0.6, "online: sampling temperature (RLHI: 0.6)")
    top_p: float = option(0.9, "online: nucleus sampling (RLHI: 0.9)")
    max_new_tokens: int = option(192, "online: longest sampled answer in tokens")
    beta: float = option(0.1, "DPO beta: the strength of the KL tie to the reference (the paper's default 0.1)")
    sft_weight: float = option(0.0, "weight of a negative log-likelihood term on the chosen answers added to the DPO "
                                     "loss (RPO, Pang et al. 2024: it holds the policy on the chosen text; 0: plain DPO)")
    anchors: str | None = option(None, "checked anchors (JSONL, userloop.rlhi.anchors): answers that passed their "
                                        "task's check; each update adds anchor_weight x one batch's token NLL")
    anchor_weight: float = option(1.0, "weight of the anchors' NLL term (with --anchors)")
    learning_rate: float = option(1e-4, "peak learning rate (1e-4 suits the tiny testbed policies; use ~5e-7 "
                                         "for 8B models)")
    batch_size: int = option(8, "pairs per device per step")
    gradient_accumulation_steps: int = option(1, "steps whose gradients are summed before an update")
    epochs: float = option(1.0, "passes over the pairs (per round when online; ignored when max_steps > 0)")
    max_steps: int = option(-1, "stop after this many updates (per round when online; -1: run the epochs)")
    max_length: int = option(1024, "longest prompt + answer in tokens; a longer one loses its end (TRL's keep_start: the "
                                         "persona at the start stays)")
    warmup: float = option(0.1, "learning-rate warmup: a fraction of the updates (< 1) or a number of updates")
    logging_steps: int = option(5, "record loss and reward accuracy/margins every N updates")
    bf16: str = option("auto", "bfloat16 mixed precision: auto (on when the hardware supports it), true, false")
    seed: int = option(0, "random seed (data order, request choice, sampling)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, about a "
                                                 "third more compute per update (the same weights and losses)")

    def validate(self) -> None:
        """Raise :class:`UserError` for a value that cannot work."""
        if not self.policy:
            raise UserError("--policy is required (a save_pretrained folder, e.g. from 'userloop train assistant')")
        if self.method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.online and self.pairs:
            raise UserError("give either --pairs (offline) or --online (pairs made from the policy's samples), not both")
        if not self.online and not self.pairs:
            raise UserError("--pairs is required (or --online to make pairs from the policy's own samples)")
        if self.online and self.method != "dpo":
            raise UserError("--online trains with DPO only (method sft takes --pairs)")
        if self.online:
            role_spec("scorer", self.scorer)
        validate_bf16(self.bf16)
        require_at_least_one(self, ("rounds", "n", "requests", "max_new_tokens", "batch_size",
                                    "gradient_accumulation_steps", "max_length", "logging_steps"))
        if self.online and self.n < 2:
            raise UserError(f"n must be at least 2 to pair a best with a worst answer, got {self.n}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(f"max_steps must be -1 or at least 1, got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise UserError(f"epochs must be positive, got {self.epochs}")
        if self.beta <= 0 or self.learning_rate <= 0 or self.warmup < 0:
            raise UserError("beta and learning_rate must be positive and warmup >= 0")
        if self.sft_weight < 0:
            raise UserError(f"sft_weight must be 0 (plain DPO) or positive, got {self.sft_weight}")
        if self.sft_weight and self.method != "dpo":
            raise UserError("sft_weight adds an SFT term to the DPO loss; method sft takes no sft_weight")
        if self.anchors and (self.method != "dpo" or self.anchor_weight <= 0):
            raise UserError("--anchors adds a term to the DPO loss: it needs method dpo and a positive anchor_weight")
        if self.anchors and not Path(self.anchors).is_file():
            raise UserError(f"--anchors {self.anchors}: no such file")
        if not 0 < self.top_p <= 1 or self.temperature < 0:
            raise UserError(f"top_p must be in (0, 1] and temperature >= 0, got {self.top_p} and {self.temperature}")
        for name in ("policy", "ref"):
            value = getattr(self, name)
            if value and not Path(value).is_dir():
                raise UserError(f"--{name} {value}: no such model folder")
            if value and not (Path(value) / "config.json").is_file():
                raise UserError(f"--{name} {value}: not a model folder (no config.json; expected a save_pretrained "
                                "folder, e.g. from 'userloop train assistant')")


def parse_config(args: Sequence[str]) -> DPOTrainConfig:
    """The config from command-line ``args`` (:func:`userloop.config.parse_config`: ``--config FILE.yaml``
    and flags); ``--help`` lists every field."""
    return parse_trainer_config(DPOTrainConfig, args, prog="userloop train dpo",
                                description="Persona-conditioned DPO (offline or online iterative) or SFT on chosen "
                                            "answers (see docs/rlhi.md).")


# ----------------------------------------------------------------------------- pairs
def read_pairs(path: str | Path, counts: Counter | None = None) -> list[dict[str, Any]]:
    """The pair rows of ``pairs.parquet``, a ``pairs_dataset/`` folder, or a folder holding either, in TRL's
    conversational format. A row whose prompt, chosen or rejected is not a non-empty list of messages is
    left out and counted (``counts["pairs_skipped_malformed"]``); a file with no usable row is an error."""
    path = Path(path)
    if path.is_dir() and (path / "pairs.parquet").is_file():
        path = path / "pairs.parquet"
    elif path.is_dir() and (path / "pairs_dataset").is_dir():
        path = path / "pairs_dataset"
    if path.is_file():
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise UserError(f"{path}: not a readable Parquet file ({type(err).__name__})") from None
    elif path.is_dir():
        import datasets

        try:
            rows = datasets.load_from_disk(str(path)).to_list()
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"{path}: not a pairs folder ({' '.join(str(err).split())[:200]})") from None
    else:
        raise UserError(f"--pairs {path}: no such file or folder")
    missing = {"prompt", "chosen", "rejected"} - set(rows[0]) if rows else set()
    if missing:
        raise UserError(f"{path}: pairs need the columns prompt, chosen and rejected; missing {', '.join(sorted(missing))}")
    if not rows:
        raise UserError(f"{path}: no pairs to train on")
    problems = [pair_problem(row) for row in rows]
    usable = [row for row, problem in zip(rows, problems, strict=True) if problem is None]
    if not usable:
        raise UserError(f"{path}: no usable pair in {len(rows):,} rows (first row: {problems[0]})")
    if counts is not None:
        counts["pairs_skipped_malformed"] += len(rows) - len(usable)
    return usable


def pair_problem(row: dict[str, Any]) -> str | None:
    """Why ``row`` is not a conversational preference pair (None: it is one)."""
    for column in ("prompt", "chosen", "rejected"):
        value = row[column]
        if isinstance(value, str):
            return (f"{column} is text; pairs need TRL's conversational format "
                    "(lists of {role, content} messages, as 'rlhi build' writes)")
        if not isinstance(value, list) or not value:
            return f"{column} is {'empty' if isinstance(value, list) else 'null' if value is None else type(value).__name__}"
        if not is_message_list(value):
            return f"{column} has a message without a text role and content"
    return None


def preference_rows(pairs: Sequence[dict[str, Any]], persona: bool) -> list[dict[str, list[dict]]]:
    """TRL's conversational preference rows: the prompt with the persona in its system message
    (``persona=False``: the prompt as it is), one-message ``chosen`` and ``rejected``."""
    return [{"prompt": with_persona(pair["prompt"], pair.get("persona") if persona else None),
             "chosen": [_message(m) for m in pair["chosen"]], "rejected": [_message(m) for m in pair["rejected"]]}
            for pair in pairs]


def sft_rows(pairs: Sequence[dict[str, Any]], persona: bool) -> list[dict[str, list[dict]]]:
    """Prompt-completion rows for SFT on the chosen answers (same prompts as :func:`preference_rows`)."""
    return [{"prompt": row["prompt"], "completion": row["chosen"]} for row in preference_rows(pairs, persona)]


def _message(message: dict) -> dict[str, str]:
    return {"role": message["role"], "content": message["content"]}


# ----------------------------------------------------------------------------- training
def train_dpo(config: DPOTrainConfig, on_progress: Callable[[int, int], None] | None = None,
              on_message: Callable[[str], None] = lambda message: None) -> TrainResult:
    """Train as ``config`` says (offline DPO, SFT on chosen, or online iterative DPO); writes ``out``."""
    config.validate()
    started = time.time()
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if config.online:
        report = _train_online(config, out, on_progress, on_message)
    else:
        skipped: Counter = Counter()
        pairs = read_pairs(config.pairs, skipped)
        with_persona_text = sum(bool(p.get("persona")) for p in pairs)
        on_message(f"{len(pairs):,} pairs, {with_persona_text:,} with a persona"
                   + ("" if config.persona else " (left out: --no-persona)")
                   + (f"; {skipped['pairs_skipped_malformed']:,} malformed rows left out" if skipped else ""))
        report = {"pairs": len(pairs), "pairs_with_persona": with_persona_text,
                  "pairs_skipped_malformed": skipped["pairs_skipped_malformed"],
                  **run_training(config, pairs, config.policy, config.ref or config.policy, out, on_progress)}
    report = {"method": config.method, "persona": config.persona, "online": config.online, "policy": config.policy,
              "ref": (config.ref or config.policy) if config.method == "dpo" else None, **report, "seconds": round(time.time() - started, 1)}
    if _is_main_process():
        import yaml

        (out / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
        write_atomic(out / "dpo_report.json", json.dumps(report, indent=2))
    return TrainResult(out, report)


def run_training(config: DPOTrainConfig, pairs: Sequence[dict], policy: str, ref: str, out: Path,
                 on_progress: Callable[[int, int], None] | None) -> dict:
    """One DPO (or SFT) run on ``pairs`` from ``policy`` (reference ``ref``); saves the model to ``out``
    and returns the training numbers (loss, reward accuracy and margins from TRL's logs)."""
    with large_allocations_mapped():
        trainer = build_trainer(config, pairs, policy, ref, out, on_progress)
        release_freed_memory()
        with warnings.catch_warnings():  # TRL's own use of deprecated transformers names
            warnings.simplefilter("ignore", FutureWarning)
            output = trainer.train()
        trainer.save_model(str(out))
        if trainer.is_world_process_zero():
            save_tokenizer(trainer.processing_class, out)
            write_curve_rows(curve_rows(trainer.state.log_history), out)
    return {**_training_numbers(output.training_loss, trainer.state), **getattr(trainer, "anchor_counts", {}),
            "bf16": bool(trainer.args.bf16)}


def build_trainer(config: DPOTrainConfig, pairs: Sequence[dict], policy: str, ref: str, out: Path,
                  on_progress: Callable[[int, int], None] | None = None):
    """TRL's ``DPOTrainer`` (``SFTTrainer`` for method sft) for ``pairs``, from ``policy`` against the frozen ``ref``."""
    try:
        import datasets
        from transformers import PrinterCallback
    except ImportError as err:
        raise missing_dependency(err.name or "transformers", "train") from None

    progress = step_progress(on_progress)
    tokenizer, model = load_pretrained(policy, dtype="float32")
    if not tokenizer.chat_template:
        raise UserError(f"{policy}: the tokenizer has no chat template (train the policy with 'userloop train assistant')")
    with warnings.catch_warnings():  # TRL's own use of deprecated transformers names
        warnings.simplefilter("ignore", FutureWarning)
        if config.method == "dpo":
            from trl import DPOTrainer

            _, ref_model = load_pretrained(ref, dtype="float32")
            ref_model.eval().requires_grad_(False)
            trainer_class = DPOTrainer
            if config.anchors:
                batches = AnchorBatches(tokenized_anchors(read_anchors(config.anchors), tokenizer, config.persona,
                                                          config.max_length),
                                        config.batch_size, config.seed)
                trainer_class = anchored(DPOTrainer, batches, config.anchor_weight)
            trainer = trainer_class(model=model, ref_model=ref_model, args=_trainer_args(config, out, "dpo"),
                                    train_dataset=datasets.Dataset.from_list(preference_rows(pairs, config.persona)),
                                    processing_class=tokenizer, callbacks=[progress])
        else:
            from trl import SFTTrainer

            trainer = SFTTrainer(model=model, args=_trainer_args(config, out, "sft"),
                                 train_dataset=datasets.Dataset.from_list(sft_rows(pairs, config.persona)),
                                 processing_class=tokenizer, callbacks=[progress])
    trainer.remove_callback(PrinterCallback)
    score_labelled_positions(trainer)
    return trainer


def _trainer_args(config: DPOTrainConfig, out: Path, method: str):
    common = {
        **trainer_arguments(config, out, config.learning_rate),
        "gradient_accumulation_steps": config.gradient_accumulation_steps, "save_strategy": "no",
        "max_length": config.max_length, "gradient_checkpointing": config.gradient_checkpointing, "ddp_find_unused_parameters": False,
    }
    if method == "dpo":
        from trl import DPOConfig

        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.sft_weight]} if config.sft_weight else {}
        return DPOConfig(beta=config.beta, **losses, **common)
    from trl import SFTConfig

    return SFTConfig(completion_only_loss=True, packing=False, **common)


def _training_numbers(training_loss: float, state) -> dict:
    """The loss and TRL's DPO reward metrics: the last logged value and the mean over the run."""
    logs = [entry for entry in state.log_history if "loss" in entry]
    numbers: dict[str, Any] = {"steps": state.global_step, "train_loss": round(training_loss, 4)}
    for key, name in (("loss", "loss"), ("rewards/accuracies", "reward_accuracy"), ("rewards/margins", "reward_margin"),
                      ("mean_token_accuracy", "token_accuracy"), ("anchor_nll", "anchor_nll")):
        values = [entry[key] for entry in logs if key in entry]
        if values:
            numbers[f"{name}_last"] = round(values[-1], 4)
            numbers[f"{name}_mean"] = round(sum(values) / len(values), 4)
    return numbers


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


# ----------------------------------------------------------------------------- online iterative DPO
def _train_online(config: DPOTrainConfig, out: Path, on_progress, on_message) -> dict:
    """RLHI's user-based rewards in a loop: sample -> score -> best vs worst pairs -> DPO, ``rounds`` times."""
    data = Path(config.data) if config.data else _default_data()
    scorer = load_scorer(config.scorer, data)
    counts: Counter = Counter()
    pool = requests_without_feedback(data, config.split, _path(config.followups), _path(config.personas),
                                     counts=counts)
    pool = fitting_requests(pool, config.policy, config.max_new_tokens, config.persona, counts)
    if not pool:
        raise UserError(f"{data}: no request without feedback in the {config.split} split fits the policy's context")
    random.Random(config.seed).shuffle(pool)
    policy, ref, rounds = config.policy, config.ref or config.policy, []
    for index in range(config.rounds + 1):
        last = index == config.rounds
        chunk = _chunk(pool, index, config.requests)
        on_message(("final policy" if last else f"round {index + 1}") +
                   f": sampling {config.n} answers for each of {len(chunk):,} requests")
        pairs, sampled = sample_and_pair(config, policy, chunk, scorer, seed=config.seed + index)
        if last:
            rounds.append({"round": "final", "policy": policy, **sampled})
            break
        on_message(f"round {index + 1}: mean score {sampled['mean_score']:.4f}, {len(pairs):,} pairs "
                   f"({sampled['skipped_all_tied']:,} requests skipped: all candidates tied)")
        if not pairs:
            raise UserError(f"round {index + 1}: every request's candidates tied; no pair to train on")
        round_out = out / f"round-{index + 1}"
        numbers = run_training(config, pairs, policy, ref, round_out, on_progress)
        rounds.append({"round": index + 1, "policy": policy, "ref": ref, **sampled, **numbers})
        policy = ref = str(round_out)   # the next round starts from this policy and is tied to it
    _copy_model(Path(policy), out)
    return {"scorer": scorer.name, "data": str(data), "split": config.split, "requests": dict(counts),
            "rounds": rounds, "mean_score_before": rounds[0]["mean_score"], "mean_score_after": rounds[-1]["mean_score"]}


def fitting_requests(requests: Sequence, policy: str, max_new_tokens: int, persona: bool, counts) -> list:
    """The requests whose conditioned prompt plus ``max_new_tokens`` fits the policy's context; the others
    are counted (``counts["skipped_prompt_too_long"]``)."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    context = getattr(AutoConfig.from_pretrained(policy), "max_position_embeddings", None) or float("inf")
    kept = [r for r in requests
            if len(tokenizer.apply_chat_template(with_persona(r.prompt, r.persona if persona else None), tokenize=True,
                                                 add_generation_prompt=True, return_dict=True)["input_ids"])
            + max_new_tokens <= context]
    counts["skipped_prompt_too_long"] += len(requests) - len(kept)
    return kept


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _chunk(pool: list, index: int, size: int) -> list:
    """The ``index``-th block of ``size`` requests, wrapping around when the pool runs out."""
    start = (index * size) % len(pool)
    return (pool[start:] + pool[:start])[:size]


def sample_and_pair(config: DPOTrainConfig, policy: str, requests: Sequence, scorer, seed: int) -> tuple[list[dict], dict]:
    """Sample ``config.n`` answers per request from ``policy``, score them, pair the best with the worst;
    returns the pairs and the numbers (mean score of all samples, pairs, requests skipped as ties)."""
    model = load_model(f"hf:{policy}")
    prompts = [with_persona(r.prompt, r.persona if config.persona else None) for r in requests]
    candidates = sample_candidates(model, prompts, n=config.n, temperature=config.temperature, top_p=config.top_p,
                                   seed=seed, max_new_tokens=config.max_new_tokens)
    scores = score_candidates(scorer, requests, candidates)
    pairing: Counter = Counter()
    pairs = best_worst_pairs(requests, candidates, scores, pairing)
    flat = [value for group in scores for value in group]
    return pairs, {"requests": len(requests), "samples": len(flat), "mean_score": round(sum(flat) / len(flat), 4),
                   "mean_best": round(sum(map(max, scores)) / len(scores), 4), "pairs": len(pairs),
                   "skipped_all_tied": pairing["all_tied"]}


def _copy_model(source: Path, out: Path) -> None:
    """The final round's model files into ``out`` (so ``out`` is the trained policy in both modes)."""
    import shutil

    if _is_main_process():
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, out / item.name)


def _default_data() -> Path:
    from userloop.testbed.default import default_data

    return default_data(prepared=True)
