"""A policy's answers to testbed tasks in full, checked; and ``userloop rlhi anchors``, checked anchors made offline.

A testbed conversation's first task has a full request (its shards in one turn) and a check (``rlhi.tasks``).
The loop (``rlhi loop``) measures task success this way and makes its checked anchors from the answers that
pass (``userloop.rlhi.anchors``). :func:`make_anchors` does the latter without a loop, for offline DPO
(``train dpo --anchors FILE``, docs/rlhi.md run 3 part 3c): the policy answers the first tasks of a seeded
draw of ``train``-split conversations, greedily, with each user's derived persona in its system message, and
the answers that pass become the anchors. No ``test``-split (held-out) user's task is used.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from userloop.config import option, require_at_least_one
from userloop.data.personas import read_personas
from userloop.errors import UserError
from userloop.files import write_atomic
from userloop.models import GenerationParams, load_model
from userloop.progress import Progress, no_progress
from userloop.rlhi.anchors import anchor_row, write_anchors
from userloop.rlhi.build import read_split_conversations
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.tasks import passes
from userloop.rlhi.user_rewards import derive_personas, label_followups
from userloop.testbed.population import read_truth, truth_folder


def full_request(task: dict) -> list[dict]:
    """A task's full request: its shards in one user turn."""
    return [{"role": "user", "content": task["full_request"]}]


def answer_full_tasks(policy, tasks: Sequence[dict], personas: Sequence[str | None],
                      params: GenerationParams) -> tuple[list[str], list[bool]]:
    """``policy``'s answers to each task's full request (the persona in the system message) and whether each
    passes the task's check."""
    answers = [c.text for c in policy.generate([with_persona(full_request(t), p)
                                                for t, p in zip(tasks, personas, strict=True)], params)]
    return answers, [passes(t, a) for t, a in zip(tasks, answers, strict=True)]


def passing_answers(policy_path: Path, drawn: Sequence[tuple[str, str]], personas: Mapping[str, str] | None,
                    truth: Mapping[str, dict], params: GenerationParams) -> tuple[list[dict], list[dict], list[bool]]:
    """The policy's answers to the ``drawn`` (user id, conversation id) pairs' first tasks in full, each user's
    persona from ``personas`` in the system message (none when ``personas`` is None): the anchor rows of those
    that pass their check, the tasks, and which passed."""
    tasks = [truth[conversation_id]["tasks"][0] for _, conversation_id in drawn]
    texts = [personas[user_id] if personas is not None else None for user_id, _ in drawn]
    answers, solved = answer_full_tasks(load_model(f"hf:{policy_path}"), tasks, texts, params)
    rows = [anchor_row(full_request(task), persona, answer, family=task["family"], user_id=user_id,
                       conversation_id=conversation_id)
            for (user_id, conversation_id), task, persona, answer, ok
            in zip(drawn, tasks, texts, answers, solved, strict=True) if ok]
    return rows, tasks, solved


def tasks_by_family(tasks: Sequence[dict], solved: Sequence[bool]) -> dict[str, list[int]]:
    """``{family: [passed, tried]}``."""
    out: dict[str, list[int]] = {}
    for task, ok in zip(tasks, solved, strict=True):
        out.setdefault(task["family"], [0, 0])
        out[task["family"]][0] += ok
        out[task["family"]][1] += 1
    return dict(sorted(out.items()))


def policy_folder(spec: str) -> Path:
    """The local folder of a policy given as ``FOLDER`` or ``hf:FOLDER``: a ``save_pretrained`` folder."""
    folder = Path(spec.removeprefix("hf:")).expanduser()
    if not folder.is_dir():
        raise UserError(f"--policy {spec}: no such model folder")
    if not (folder / "config.json").is_file():
        raise UserError(f"--policy {spec}: not a model folder (no config.json); give a local save_pretrained folder, "
                        "e.g. from 'userloop train assistant'")
    return folder


@dataclass
class AnchorsConfig:
    """``userloop rlhi anchors``: checked anchors for ``train dpo --anchors``; every field is also a flag."""

    policy: str = option("", "the policy that answers (the one DPO will start from): a save_pretrained folder with a "
                             "chat template (or hf:FOLDER)")
    data: str | None = option(None, "a prepared testbed folder (its truth holds the tasks and their checks); "
                                    "default: the built-in testbed, prepared")
    personas: str | None = option(None, "personas.jsonl (user_id, persona; 'rlhi build' writes one); default: derived "
                                        "offline from the train split's conversations")
    tasks: int = option(512, "train-split conversations drawn (seeded); the policy answers each one's first task in full")
    persona: bool = option(True, "each user's persona in the system message, as persona-conditioned DPO trains "
                                 "(users without one are not drawn)")
    max_new_tokens: int = option(192, "longest answer in tokens")
    min_conversations: int = option(3, "derived personas: users need at least this many conversations")
    seed: int = option(0, "the draw of conversations")

    def validate(self) -> None:
        """Raise :class:`UserError` for a value that cannot work."""
        if not self.policy:
            raise UserError("--policy is required: the model folder whose answers become the anchors")
        policy_folder(self.policy)
        if self.data and not Path(self.data).is_dir():
            raise UserError(f"--data {self.data}: no such folder (give a prepared testbed folder)")
        if self.personas and not Path(self.personas).is_file():
            raise UserError(f"--personas {self.personas}: no such file")
        require_at_least_one(self, ("tasks", "max_new_tokens", "min_conversations"))


def make_anchors(config: AnchorsConfig, out: Path, progress: Progress = no_progress) -> dict[str, Any]:
    """Write the anchors file ``out`` and its report (:func:`report_path`); returns the report."""
    config.validate()
    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give the anchors file's path (e.g. {out / 'anchors.jsonl'})")
    policy = policy_folder(config.policy)
    data = Path(config.data) if config.data else _default_data()
    truth_dir = truth_folder(data)
    if truth_dir is None:
        raise UserError(f"{data} is not the testbed (no truth.jsonl): checked anchors need the tasks' checks, "
                        "which the testbed's truth holds")
    _, truth = read_truth(truth_dir)
    train = read_split_conversations(data, "train")
    personas = None
    if config.persona:
        with progress("the users' personas" + ("" if config.personas else ", derived from the train split"), 1) as advance:
            personas = _personas(config, train)
            advance(1)
    pool = sorted((c.user_id, c.id) for c in train
                  if c.user_id and c.id in truth and (personas is None or c.user_id in personas))
    if not pool:
        raise UserError(f"{data}: no train-split conversation has a task in the truth"
                        + (" and a user with a persona" if config.persona else ""))
    drawn = random.Random(f"anchors-{config.seed}").sample(pool, min(config.tasks, len(pool)))
    greedy = GenerationParams(max_new_tokens=config.max_new_tokens, temperature=0, seed=config.seed)
    with progress(f"the policy answers {len(drawn):,} training tasks", 1) as advance:
        rows, tasks, solved = passing_answers(policy, drawn, personas, truth, greedy)
        advance(1)
    if not rows:
        raise UserError(f"none of the policy's {len(drawn):,} answers passed its task's check: there is nothing to "
                        "anchor to; draw more with --tasks")
    report = {"policy": str(policy), "data": str(data), "personas": config.personas or ("derived" if config.persona else None),
              "pool": len(pool), "tried": len(drawn), "passed": len(rows), "by_family": tasks_by_family(tasks, solved),
              "report": str(report_path(out))}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_anchors(rows, out)
    write_atomic(report_path(out), json.dumps(report, indent=2))
    return report


def report_path(anchors: Path) -> Path:
    """Where :func:`make_anchors` writes the report of the anchors file ``anchors``."""
    return anchors.with_name(anchors.stem + ".report.json")


def _personas(config: AnchorsConfig, train) -> dict[str, str]:
    if config.personas:
        return read_personas(Path(config.personas))
    return derive_personas(train, label_followups(train, None, Counter()), config.min_conversations)


def _default_data() -> Path:
    from userloop.testbed.default import default_data

    return default_data(prepared=True)
