"""The base policy's training data: conversations with the user's persona in the system message.

RLHI starts from an instruction-tuned assistant and conditions it on the user's persona (section 2.3:
persona-conditioned policy). On the testbed the base policy is a tiny assistant trained with
``userloop train assistant`` on the prepared conversations; :func:`write_policy_data` writes a copy of a
prepared folder whose conversations carry each user's *derived* persona (``personas.jsonl`` of
``rlhi build``: what a deployment has, never the testbed truth) as a system message, put there with
:func:`userloop.rlhi.conditioning.with_persona`, the same helper DPO, sampling and evaluation use. Users
without a derived persona (too little history) keep their conversations unchanged, as they would be
served. The assistant trainer keeps a system message as the assistant's system prompt, so the policy
learns to read the persona line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from userloop.conversation import Message, read_parquet, write_parquet
from userloop.data.personas import read_personas
from userloop.data.sources import prepared_splits
from userloop.errors import UserError
from userloop.files import read_user_json, write_atomic
from userloop.rlhi.build import output_folder
from userloop.rlhi.conditioning import with_persona


def write_policy_data(data: Path, personas: Path, out: Path) -> dict:
    """Copy the prepared folder ``data`` to ``out`` with every conversation of a user who has a persona in
    ``personas`` (``personas.jsonl``) conditioned on it; returns (and writes into ``report.json``) the counts."""
    splits = prepared_splits(Path(data))
    if "train" not in splits:
        raise UserError(f"{data}: not a prepared folder (run 'userloop data prepare' first)")
    persona_text = read_personas(Path(personas))
    if not persona_text:
        raise UserError(f"{personas}: no persona in it (expected 'rlhi build' personas.jsonl records with a persona text)")
    loaded = {split: list(read_parquet(path)) for split, path in splits.items()}
    users = {c.user_id for conversations in loaded.values() for c in conversations if c.user_id}
    matched = users & persona_text.keys()
    if not matched:
        raise UserError(f"{personas}: none of its {len(persona_text):,} users has a conversation in {data} "
                        f"({len(users):,} users with an id there): the personas were derived from other data")
    output_folder(out)
    counts: dict[str, dict[str, int]] = {}
    for split, conversations in loaded.items():
        conditioned = 0
        for conversation in conversations:
            persona = persona_text.get(conversation.user_id or "")
            if persona:
                messages = with_persona([m.to_dict() for m in conversation.messages], persona)
                extras = [{}] * (len(messages) - len(conversation.messages)) + [m.extra for m in conversation.messages]
                conversation.messages = [Message(m["role"], m["content"], extra)
                                         for m, extra in zip(messages, extras, strict=True)]
                conditioned += 1
        write_parquet(conversations, out / f"{split}.parquet")
        counts[split] = {"conversations": len(conversations), "with_persona": conditioned,
                         "without_persona": len(conversations) - conditioned}
    source_report = Path(data) / "report.json"
    report = {**read_user_json(source_report, "prepared data report"), "policy_data": {
        "source": str(data), "personas": str(personas), "splits": counts,
        "users_with_persona": len(matched), "users_without_persona": len(users - matched),
        "personas_without_conversations": len(persona_text.keys() - users)}}
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    bad_lines = Path(data) / "bad_lines.jsonl"
    if bad_lines.is_file():
        shutil.copy2(bad_lines, out / "bad_lines.jsonl")
    return report["policy_data"]
