"""The closed RLHI loop against training on the logged interactions only, on the testbed (docs/loop.md).

    python benchmarks/rlhi_loop.py --work /tmp/s4e --policy /tmp/s4e/base --user hf:/tmp/s4/persona-userlm \
        --personas /tmp/s4/personas.jsonl [--rounds 2] [--users 48] [--eval-users 46] [--max-steps 30]

Runs ``userloop rlhi loop`` twice with the same settings, the same held-out users and the same DPO budget:
``--work/simulated`` (the policy's pairs come from simulated users talking to it) and ``--work/logged``
(``--baseline logged``: the same rounds on the same training users' logged train-split conversations).
Each arm resumes where it stopped. Prints one Markdown table: per arm and round, the pairs, DPO's loss and
reward accuracy, and the held-out evaluation (persona match, task success, feedback rate of the held-out
simulated users, each with its standard error), plus each round's change from round 0 of the same arm.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ARMS = {"simulated": "none", "logged": "logged"}


def run_arm(args: argparse.Namespace, name: str) -> dict:
    out = Path(args.work) / name
    command = [sys.executable, "-m", "userloop.cli", "rlhi", "loop", "--policy", args.policy, "--user", args.user,
               "--out", str(out), "--baseline", ARMS[name], "--rounds", str(args.rounds), "--users", str(args.users),
               "--eval-users", str(args.eval_users), "--turns", str(args.turns), "--n", str(args.n),
               "--max-steps", str(args.max_steps), "--max-new-tokens", str(args.max_new_tokens), "--seed", str(args.seed)]
    if args.personas:
        command += ["--personas", args.personas]
    print(" ".join(command[2:]).replace("userloop.cli", "userloop"), flush=True)
    subprocess.run(command, check=True)
    return json.loads((out / "report.json").read_text())


def table(reports: dict[str, dict]) -> str:
    lines = [("| arm | round | pairs (guided + sampled) | DPO loss / reward acc. | persona match (SE) | change | "
             "task success (SE) | held-out feedback rate (SE) | change | held-out conversation ends |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, report in reports.items():
        first = report["rounds"][0]["eval"]
        for r in report["rounds"]:
            e, t = r["eval"], r.get("training", {})
            pairs = f"{r['pairs']['guided']} + {r['pairs']['sampled']}" if "pairs" in r else ""
            loss = f"{t.get('train_loss')} / {t.get('reward_accuracy_mean')}" if t.get("trained") else ""
            ends = ", ".join(f"{k} {v}" for k, v in e["ends"].items())
            lines.append(f"| {name} | {r['round']} | {pairs} | {loss} | {e['persona_match']} ({e['persona_match_se']}) | "
                         f"{e['persona_match'] - first['persona_match']:+.4f} | {e['task_success']} ({e['task_success_se']}) | "
                         f"{e['feedback_rate']} ({e['feedback_rate_se']}) | {e['feedback_rate'] - first['feedback_rate']:+.4f} | "
                         f"{ends} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--personas")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--eval-users", type=int, default=46)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=sorted(ARMS), default=sorted(ARMS, reverse=True))
    args = parser.parse_args()
    reports = {name: run_arm(args, name) for name in args.only}
    print(table(reports))


if __name__ == "__main__":
    main()
