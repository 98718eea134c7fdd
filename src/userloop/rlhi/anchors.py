"""Checked anchors: a likelihood term on answers that passed their task's check, added to DPO's loss.

Preference steps on answers that are mostly prose move what the policy could already do: the loop of
docs/rlhi.md (part 4c) gains persona match and loses code. InstructGPT (Ouyang et al. 2022, "PPO-ptx") mixes
pre-training gradients into every RL update for this reason; here the mixed-in text is the initial policy's
own answers that pass their task's check (rejection sampling, as in RFT, Yuan et al. 2023), so the term
holds what the policy could verifiably do and nothing it could not. Each DPO update adds ``anchor_weight``
x the mean token negative log-likelihood of one batch of anchors (the answer's tokens only, the prompt with
the user's persona in its system message as the policy saw it), drawn in a seeded order, cycling.

``userloop rlhi anchors`` (:mod:`userloop.rlhi.task_answers`) and ``rlhi loop --anchors N`` make them. An
anchors file is JSONL, one row per answer: ``prompt`` (messages, without the persona), ``persona`` (text
or null), ``completion`` (one assistant message), and what produced it (``family``, ``user_id``,
``conversation_id``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from userloop.errors import UserError
from userloop.files import write_atomic
from userloop.rlhi.conditioning import is_message_list, with_persona


def read_anchors(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an anchors file (module docstring); a file with no usable row is an error, a malformed
    line is named."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--anchors {path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: not a JSON line") from None
        if not (isinstance(row, dict) and is_message_list(row.get("prompt")) and is_message_list(row.get("completion"))):
            raise UserError(f"{path}:{number}: an anchor needs 'prompt' and 'completion' as lists of "
                            "{role, content} messages")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no anchors in it")
    return rows


def write_anchors(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` as an anchors file."""
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def anchor_row(prompt: list[dict], persona: str | None, answer: str, **source: Any) -> dict[str, Any]:
    """One anchor: ``answer`` to ``prompt`` (persona-free messages) for a user with ``persona``."""
    return {"prompt": prompt, "persona": persona, "completion": [{"role": "assistant", "content": answer}], **source}


def tokenized_anchors(rows: Sequence[dict[str, Any]], tokenizer, persona: bool, max_length: int) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` per anchor: the chat template's rendering of the prompt (with the persona in
    its system message when ``persona``) and the answer, labels -100 on the prompt, cut to ``max_length``
    tokens from the start (the persona stays, as for the pairs)."""
    out = []
    for row in rows:
        prompt = with_persona(row["prompt"], row.get("persona") if persona else None)
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template(prompt + row["completion"], tokenize=False)
        if not whole.startswith(head):
            raise UserError("the policy's chat template renders a conversation's start differently from its prompt: "
                            "anchors need a template whose generation prompt is a prefix of the answered conversation")
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        ids = head_ids + tokenizer(whole[len(head):], add_special_tokens=False)["input_ids"]
        labels = [-100] * len(head_ids) + ids[len(head_ids):]
        out.append((ids[:max_length], labels[:max_length]))
    return out


class AnchorBatches:
    """Batches of tokenized anchors in a seeded order, reshuffled after each pass: ``input_ids``,
    ``attention_mask`` and ``labels`` tensors, right-padded with token 0 (padding is neither attended to
    nor a target, so any id serves). Anchors cut to no answer token are left out and counted (``cut``)."""

    def __init__(self, anchors: list[tuple[list[int], list[int]]], batch_size: int, seed: int):
        usable = [a for a in anchors if any(label != -100 for label in a[1][1:])]
        if not usable:
            raise UserError("no anchor has an answer token within max_length: raise --max-length")
        self.anchors, self.batch_size, self.cut = usable, batch_size, len(anchors) - len(usable)
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def next(self, device) -> dict[str, Any]:
        import torch

        while len(self.order) < self.batch_size:
            block = list(range(len(self.anchors)))
            self.rng.shuffle(block)
            self.order += block
        picked = [self.anchors[i] for i in self.order[:self.batch_size]]
        self.order = self.order[self.batch_size:]
        width = max(len(ids) for ids, _ in picked)
        ids = [ids + [0] * (width - len(ids)) for ids, _ in picked]
        labels = [labels + [-100] * (width - len(labels)) for _, labels in picked]
        mask = [[1] * len(a) + [0] * (width - len(a)) for a, _ in picked]
        return {name: torch.tensor(value, device=device) for name, value in
                (("input_ids", ids), ("attention_mask", mask), ("labels", labels))}


def anchored(trainer_class, batches: AnchorBatches, weight: float):
    """``trainer_class`` (TRL's ``DPOTrainer``) whose training loss adds ``weight`` x the mean token NLL of
    the next anchor batch; the NLL is logged as ``anchor_nll``, and the trainer's ``anchor_counts`` say how
    many anchors it draws from and how many were left out."""

    class AnchoredTrainer(trainer_class):
        anchor_counts: ClassVar[dict[str, int]] = {"anchors": len(batches.anchors), "anchors_cut_to_no_answer": batches.cut}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not model.training:
                return result
            nll = model(**batches.next(self.accelerator.device), fused_lm_head=True, use_cache=False).loss
            self._metrics["train"]["anchor_nll"].append(self.accelerator.gather(nll.detach()).mean().item())
            if return_outputs:
                loss, outputs = result
                return loss + weight * nll, outputs
            return result + weight * nll

    return AnchoredTrainer

