"""Persona-conditioned vs unconditioned user LM on the testbed: do simulated users with persona P behave
like the real users with P? (issue 11, first part; definitions in docs/persona-users.md)

    python benchmarks/persona_sim.py --work /tmp/s4 [--max-steps 400] [--max-conversations N]

Steps (each reuses its output when it is already in ``--work``):

1. ``userloop personas --out WORK/personas.jsonl``: derived personas of the default testbed (all splits;
   users with at least 3 conversations).
2. ``userloop train user-lm --personas WORK/personas.jsonl --out WORK/persona-userlm`` and the same command
   without ``--personas`` into ``WORK/plain-userlm``: the same data, updates, model size and seed.
3. The assistant both simulators talk to: ``scripted:WORK/replay-assistant.json``, 2,000 replies of the
   testbed's scripted assistant drawn from the TRAIN split, served in a fixed shuffled order whatever the
   user wrote (docs/persona-users.md says why this and not a tiny trained assistant).
4. ``userloop eval-persona-sim`` on the test split's users with a persona, both user LMs, into
   ``WORK/persona-sim``; prints report.md.
5. Does each field matter in the real population at all? The same behaviour statistics over the TRAIN
   split's users with a persona (about 20 times the held-out conversations, no simulation), by derived
   value: the spread between values and its standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

USERLOOP = [sys.executable, "-m", "userloop.cli"]


def run(args: list[str]) -> None:
    print("$ userloop " + " ".join(args), flush=True)
    started = time.time()
    subprocess.run([*USERLOOP, *args], check=True)
    print(f"  ({time.time() - started:.0f}s, load {os.getloadavg()[0]:.1f})", flush=True)


def replay_assistant(path: Path, replies: int = 2000, seed: int = 0) -> Path:
    """A scripted assistant replaying the testbed assistant's replies of the train split, shuffled."""
    from userloop.conversation import read_parquet
    from userloop.testbed.default import default_data

    texts = [m.content for c in read_parquet(default_data(prepared=True) / "train.parquet")
             for m in c.messages if m.role == "assistant" and m.content.strip()]
    path.write_text(json.dumps(random.Random(seed).sample(texts, min(replies, len(texts)))))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--max-conversations", type=int, default=None)
    parser.add_argument("--max-turns", type=int, default=6)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    personas = work / "personas.jsonl"
    if not personas.is_file():
        run(["personas", "--out", str(personas)])
    for name, extra in (("persona-userlm", ["--personas", str(personas)]), ("plain-userlm", [])):
        if not (work / name / "train_report.json").is_file():
            run(["train", "user-lm", *extra, "--out", str(work / name), "--max_steps", str(args.max_steps),
                 "--save_steps", "0", "--seed", "0"])
    assistant = f"scripted:{replay_assistant(work / 'replay-assistant.json')}"
    out = work / "persona-sim"
    run(["eval-persona-sim", "--personas", str(personas), "--assistant", assistant,
         "--conditioned", f"hf:{work / 'persona-userlm'}", "--unconditioned", f"hf:{work / 'plain-userlm'}",
         "--max-turns", str(args.max_turns), "--user-max-new-tokens", "48", "--out", str(out),
         *(["--max-conversations", str(args.max_conversations)] if args.max_conversations else [])])
    print((out / "report.md").read_text())
    population_spreads(personas, args.max_turns)


def population_spreads(personas: Path, max_turns: int) -> None:
    """Step 5: per field and statistic, the real spread between values on the train split, and its SE."""
    import math

    from userloop.metrics.persona_fidelity import (
        STATISTICS,
        _by_value,
        behaviour_statistics,
        behaviours,
        cut,
        held_out_scenarios,
        read_persona_fields,
    )
    from userloop.rlhi.followup_classifier import load_offline
    from userloop.rlhi.personas import PREFERENCE_FIELDS
    from userloop.testbed.default import default_data
    from userloop.userlm.flip import read_split

    records, _ = read_persona_fields(personas)
    conversations, _ = read_split(str(default_data(prepared=True)), "train")
    by_id = {c.id: c for c in conversations}
    real = behaviours([(cut(by_id[s.id], max_turns), len(by_id[s.id].user_turns) <= max_turns)
                       for s in held_out_scenarios(conversations, records, max_turns)], load_offline())
    print(f"\n## Real spreads on the train split ({len(real):,} conversations of users with a persona)\n")
    print("| field | statistic | per value | spread | SE of the spread |\n|---|---|---|---|---|")
    for name in PREFERENCE_FIELDS:
        table = {v: behaviour_statistics(g) for v, g in _by_value(real, lambda u, name=name: records[u].get(name)).items()}
        for stat in STATISTICS:
            estimates = {v: t[stat] for v, t in table.items() if t[stat] is not None}
            high, low = max(estimates, key=lambda v: estimates[v].value), min(estimates, key=lambda v: estimates[v].value)
            cells = " / ".join(f"{v} {e.value:.3f}" for v, e in estimates.items())
            print(f"| {name} | {stat} | {cells} | {estimates[high].value - estimates[low].value:.3f} | "
                  f"{math.hypot(estimates[high].se, estimates[low].se):.3f} |")


if __name__ == "__main__":
    main()
