"""Online RLHI on the testbed (docs/loop.md): ground-truth users, a user LM, and the logged interactions.

    python benchmarks/rlhi_loop.py --work runs/loops --policy runs/base --user hf:runs/persona-userlm \
        [--personas runs/rlhi/personas.jsonl] [--rounds 2] [--users 64] [--eval-users 50] [--max-steps 40] \
        [--learning-rate 1e-4] [--seeds 0 1 2] [--only ground-truth simulated logged]

Runs ``userloop rlhi loop`` per arm and seed with the same settings, the same held-out users and the same DPO
budget: ``ground-truth`` (``--user testbed:users``: the policy talks to the testbed's own users and learns from
their follow-ups), ``simulated`` (the user LM ``--user`` plays them) and ``logged`` (``--baseline logged``: the
same rounds on the same training users' logged train-split conversations); ``ground-truth-mirrored`` and
``simulated-mirrored`` are the first two with ``--mirrors`` (each round's pairs plus their persona-contrastive
mirrors, docs/rlhi.md); ``ground-truth-mirrored-corrector`` adds ``--rewriter testbed:corrector`` (users'
stated corrections become rewrites too) and ``ground-truth-mirrored-corrector-task`` then ``--scorer
testbed:task-scorer`` (sampled answers are also rewarded for passing the task's check), and
``ground-truth-mirrored-corrector-task-sft`` then ``--sft-weight`` (default 1: the chosen answers' NLL added to
each round's DPO loss) or ``-anchored`` ``--reference initial`` (every round's DPO reference is the initial
policy, not the round's own); ``ground-truth-mirrored-checked`` is ``ground-truth-mirrored`` with checked
anchors (``--anchors``, default 512, and ``--anchor-weight``, default 1: the initial policy's answers to
training tasks that pass their check add an NLL term to every round's DPO loss), and
``ground-truth-mirrored-checked-renewed`` then ``--anchors-refresh`` (each round's starting policy answers the
anchor tasks again; a task's newest passing answer becomes its anchor). Every arm is evaluated by the
testbed users (``--eval-user testbed:users``), so the arms are compared on the ground truth, and the gap
between ``simulated`` and ``ground-truth`` is what the simulated users cost RLHI. Each run resumes where it
stopped (``--work/ARM-seedS``). Prints one Markdown table: per arm, seed and round, the pairs, DPO's loss and
reward accuracy, the held-out persona match with its change from round 0 (paired over the same users, with
its SE), task success and the held-out users' feedback rate; then per arm and round the mean change over
seeds with a 95% t interval over seeds; and, for an arm run beside its twin (its name without the last parts,
the fewest that name an arm that ran: ``ground-truth-mirrored`` for ``ground-truth-mirrored-corrector``), their
difference in persona match (paired
over the same held-out users) and in task success (the same held-out tasks) per round: mean over seeds, t
interval over seeds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from userloop.rlhi.loop import GROUND_TRUTH_USERS, pair_counts
from userloop.statistics import mean_se

ARMS = ("ground-truth", "simulated", "logged", "ground-truth-mirrored", "simulated-mirrored",
        "ground-truth-mirrored-corrector", "ground-truth-mirrored-corrector-task",
        "ground-truth-mirrored-corrector-task-sft", "ground-truth-mirrored-corrector-task-anchored",
        "ground-truth-mirrored-checked", "ground-truth-mirrored-checked-renewed")


def run_arm(args: argparse.Namespace, name: str, seed: int) -> dict:
    out = Path(args.work) / f"{name}-seed{seed}"
    user = GROUND_TRUTH_USERS if name.startswith("ground-truth") else args.user
    command = [sys.executable, "-m", "userloop.cli", "rlhi", "loop", "--policy", args.policy, "--user", user,
               "--eval-user", GROUND_TRUTH_USERS, "--out", str(out),
               "--baseline", "logged" if name == "logged" else "none", "--rounds", str(args.rounds),
               "--users", str(args.users), "--eval-users", str(args.eval_users), "--turns", str(args.turns),
               "--n", str(args.n), "--max-steps", str(args.max_steps), "--learning-rate", str(args.learning_rate), "--max-new-tokens", str(args.max_new_tokens),
               "--seed", str(seed)]
    if args.personas:
        command += ["--personas", args.personas]
    parts = name.split("-")
    if "mirrored" in parts:
        command.append("--mirrors")
    if "corrector" in parts:
        command += ["--rewriter", "testbed:corrector"]
    if "task" in parts:
        command += ["--scorer", "testbed:task-scorer"]
    if "anchored" in parts:
        command += ["--reference", "initial"]
    if "sft" in parts:
        command += ["--sft-weight", str(args.sft_weight)]
    if "checked" in parts:
        command += ["--anchors", str(args.anchors), "--anchor-weight", str(args.anchor_weight)]
    if "renewed" in parts:
        command.append("--anchors-refresh")
    print(" ".join(command[2:]).replace("userloop.cli", "userloop"), flush=True)
    subprocess.run(command, check=True)
    return json.loads((out / "report.json").read_text())


def table(reports: dict[tuple[str, int], dict]) -> str:
    lines = [("| arm | seed | round | pairs (guided + sampled) | DPO loss / reward acc. | persona match (SE) | "
              "change from round 0 (paired SE) | task success (SE) | held-out feedback rate (SE) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for (name, seed), report in reports.items():
        changes = {c["round"]: c for c in report["paired_changes_from_round_0"]}
        for r in report["rounds"]:
            e, t = r["eval"], r.get("training", {})
            pairs = pair_counts(r["pairs"]) if "pairs" in r else ""
            loss = f"{t.get('train_loss')} / {t.get('reward_accuracy_mean')}" if t.get("trained") else ""
            change = changes.get(r["round"])
            moved = f"{change['persona_match_change']:+.4f} ({change['se']})" if change else ""
            lines.append(f"| {name} | {seed} | {r['round']} | {pairs} | {loss} | {e['persona_match']} "
                         f"({e['persona_match_se']}) | {moved} | {e['task_success']} ({e['task_success_se']}) | "
                         f"{e['feedback_rate']} ({e['feedback_rate_se']}) |")
    return "\n".join(lines)


def over_seeds(reports: dict[tuple[str, int], dict]) -> str:
    """Per arm and round: the change in held-out persona match from round 0 and the task success, each the mean
    over seeds with a 95% t interval."""
    lines = ["| arm | round | seeds | mean change from round 0 | 95% interval over seeds | task success | 95% interval |",
             "|---|---|---|---|---|---|---|"]
    arms = dict.fromkeys(name for name, _ in reports)
    for name in arms:
        changes: dict[int, list[float]] = {}
        solved: dict[int, list[float]] = {}
        for (arm, _), report in reports.items():
            if arm == name:
                for change in report["paired_changes_from_round_0"]:
                    changes.setdefault(change["round"], []).append(change["persona_match_change"])
                for r in report["rounds"]:
                    solved.setdefault(r["round"], []).append(r["eval"]["task_success"])
        for index, values in sorted(solved.items()):
            moved = changes.get(index, [])
            change = f"{sum(moved) / len(moved):+.4f} | {t_interval(moved)}" if moved else " | "
            lines.append(f"| {name} | {index} | {len(values)} | {change} | {sum(values) / len(values):.4f} | "
                         f"{t_interval(values)} |")
    return "\n".join(lines)


def t_interval(values: list[float]) -> str:
    """The 95% t interval of the mean of ``values`` (one per seed)."""
    if len(values) < 2:
        return "one seed"
    from scipy.stats import t

    mean = sum(values) / len(values)
    half = t.ppf(0.975, len(values) - 1) * mean_se(values)
    return f"[{mean - half:+.4f}, {mean + half:+.4f}]"


def twin_of(name: str, present: set[str]) -> str | None:
    """The arm among ``present`` that ``name`` adds options to: its name with the last parts dropped, the fewest
    that name a present arm (``ground-truth-mirrored`` for ``ground-truth-mirrored-corrector-task`` when the
    ``-corrector`` arm did not run), or None."""
    twin = name.rpartition("-")[0]
    while twin and twin not in present:
        twin = twin.rpartition("-")[0]
    return twin or None


def versus_twin(reports: dict[tuple[str, int], dict]) -> str:
    """Per arm with its twin (:func:`twin_of`) and round: its held-out persona match minus the twin's, paired over
    the same seed's held-out users (both arms start from the same policy and meet the same users), and its task
    success minus the twin's (the same tasks); mean over the seeds both ran, with the 95% t interval over seeds."""
    lines = [("| arm minus twin | round | seeds | persona match: mean difference | 95% interval | per seed | "
             "task success: mean difference | 95% interval |"), "|---|---|---|---|---|---|---|---|"]
    present = {arm for arm, _ in reports}
    for name in dict.fromkeys(arm for arm, _ in reports if twin_of(arm, present)):
        twin = twin_of(name, present)
        seeds = sorted(seed for arm, seed in reports if arm == name and (twin, seed) in reports)
        by_round: dict[int, list[tuple[float, float]]] = {}
        for seed in seeds:
            mine = {r["round"]: r["eval"] for r in reports[(name, seed)]["rounds"]}
            theirs = {r["round"]: r["eval"] for r in reports[(twin, seed)]["rounds"]}
            for index in sorted(set(mine) & set(theirs) - {0}):
                a, b = mine[index]["persona_match_by_user"], theirs[index]["persona_match_by_user"]
                shared = [u for u in a if u in b]
                by_round.setdefault(index, []).append((sum(a[u] - b[u] for u in shared) / len(shared),
                                                       mine[index]["task_success"] - theirs[index]["task_success"]))
        for index, values in sorted(by_round.items()):
            if len(values) == len(seeds):
                match, solved = [v[0] for v in values], [v[1] for v in values]
                lines.append(f"| {name} minus {twin} | {index} | {len(values)} | {sum(match) / len(match):+.4f} | "
                             f"{t_interval(match)} | {' '.join(f'{v:+.3f}' for v in match)} | "
                             f"{sum(solved) / len(solved):+.4f} | {t_interval(solved)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--user", required=True, help="the user LM of the simulated and logged arms")
    parser.add_argument("--personas")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--eval-users", type=int, default=50)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="every arm's DPO learning rate")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sft-weight", type=float, default=1.0, help="the -sft arms' --sft-weight")
    parser.add_argument("--anchors", type=int, default=512, help="the -checked arms' --anchors")
    parser.add_argument("--anchor-weight", type=float, default=1.0, help="the -checked arms' --anchor-weight")
    parser.add_argument("--only", nargs="+", choices=ARMS, default=list(ARMS[:3]))
    args = parser.parse_args()
    reports = {(name, seed): run_arm(args, name, seed) for seed in args.seeds for name in args.only}
    print(table(reports))
    print()
    print(over_seeds(reports))
    if any(twin_of(arm, {a for a, _ in reports}) for arm, _ in reports):
        print()
        print(versus_twin(reports))


if __name__ == "__main__":
    main()
