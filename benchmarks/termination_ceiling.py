"""How well can any user simulator end conversations on the testbed? Termination F1 ceilings from its truth.

    python benchmarks/termination_ceiling.py [--users 2000] [--seed 0] [--json]

Termination F1 ("Flipping the Dialogue", Table 2; ``userloop.metrics.fidelity``) asks, after each real assistant
turn, whether the simulator ends the conversation there. Part of a testbed user's choice is random by construction
(a satisfied user leaves with weight 0.45 against thanking, extending or asking for more: ``AFTER_SATISFIED`` in
``userloop.testbed.dialogue``), so no simulator reaches 100. This script measures how far one can get: for each
set of features a simulator could know at a decision point, the end probability per feature value is estimated
on the TRAIN split's users of the prepared testbed and applied to the TEST split's users (those eval-sim replays),
scored three ways:

* ``sampled``: the simulator ends with that probability (a calibrated model sampled at temperature 1); expected
  counts, so no sampling noise;
* ``greedy``: it ends when the probability is above 0.5;
* ``best threshold``: it ends above the threshold (0.05 steps) that maximises F1 on the TRAIN split.

Features: ``act`` (the assistant's reply: answer, clarification question, discussion, refusal, acknowledgement),
``all_revealed`` (every shard of the current task has been said), ``previous`` (the type of the user's previous
turn: a thanks is followed by an end), ``turn`` (user turns so far, capped at 6), ``family`` (math, code, ...),
``correct`` (the answer passed the task's check: what a user who can check answers knows) and ``violation`` (the
reply misses one of the user's style preferences: what the persona knows). A user LM reads the first three in
the text, ``correct`` only when it can check the answer, ``violation`` only when it knows the persona.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from userloop.testbed.default import DEFAULT_SEED, DEFAULT_USERS, default_data
from userloop.userlm.flip import read_split

FEATURE_SETS = {
    "none (the base rate)": (),
    "act": ("act",),
    "act, previous": ("act", "previous"),
    "act, previous, turn, family": ("act", "previous", "turn", "family"),
    "act, all_revealed, previous": ("act", "all_revealed", "previous"),
    "act, all_revealed, previous, turn, family": ("act", "all_revealed", "previous", "turn", "family"),
    "+ correct": ("act", "all_revealed", "previous", "turn", "family", "correct"),
    "+ correct, violation (the policy's inputs)": ("act", "all_revealed", "previous", "turn", "family", "correct",
                                                  "violation"),
}


def decision_points(truth: Path) -> list[tuple[str, dict, bool]]:
    """(user id, features, ended here) after every assistant turn of every logged conversation."""
    points = []
    with truth.open() as lines:
        for line in lines:
            record = json.loads(line)
            if record["type"] != "conversation":
                continue
            revealed, previous, user_turns, task = 0, None, 0, None
            for index, turn in enumerate(record["turns"]):
                if turn["role"] == "user":
                    user_turns += 1
                    revealed = len(turn["shards"]) if turn["type"] == "new_request" else revealed + len(turn["shards"])
                    previous, task = turn["type"], record["tasks"][turn["task"]]
                    continue
                features = {"act": turn["act"], "all_revealed": revealed >= len(task["shards"]), "previous": previous,
                            "turn": min(user_turns, 6), "family": task["family"], "correct": turn.get("correct"),
                            "violation": bool(turn.get("violations"))}
                points.append((record["user_id"], features, index == len(record["turns"]) - 1))
    return points


def end_probabilities(points, keys: tuple[str, ...]) -> dict[tuple, float]:
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for _, features, ended in points:
        key = tuple(features[k] for k in keys)
        counts[key][0] += ended
        counts[key][1] += 1
    return {key: ends / total for key, (ends, total) in counts.items()}


def scores(points, probability, decide) -> dict[str, float]:
    """F1, precision and recall (x100) of expected end decisions ``decide(probability)`` in [0, 1]."""
    tp = fp = fn = 0.0
    for _, features, ended in points:
        predicted = decide(probability(features))
        tp += predicted * ended
        fp += predicted * (not ended)
        fn += (1 - predicted) * ended
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": round(100 * f1, 1), "precision": round(100 * precision, 1), "recall": round(100 * recall, 1)}


def ceilings(train, test) -> dict[str, dict]:
    base = sum(ended for *_, ended in train) / len(train)
    rows = {}
    for name, keys in FEATURE_SETS.items():
        table = end_probabilities(train, keys)

        def probability(features, table=table, keys=keys):
            return table.get(tuple(features[k] for k in keys), base)

        thresholds = [t / 20 for t in range(1, 20)]
        best = max(thresholds, key=lambda t: scores(train, probability, lambda p, t=t: float(p > t))["f1"])
        rows[name] = {"sampled": scores(test, probability, lambda p: p),
                      "greedy": scores(test, probability, lambda p: float(p > 0.5)),
                      "best_threshold": {**scores(test, probability, lambda p, t=best: float(p > t)), "threshold": best}}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    prepared = default_data(prepared=True)
    users = {split: {c.user_id for c in read_split(prepared, split)[0]} for split in ("train", "test")}
    points = decision_points(default_data(prepared=False) / "truth.jsonl")
    train = [p for p in points if p[0] in users["train"]]
    test = [p for p in points if p[0] in users["test"]]
    result = {"testbed": {"users": DEFAULT_USERS, "seed": DEFAULT_SEED}, "decision_points": {"train": len(train), "test": len(test)},
              "base_rate": round(100 * sum(p[2] for p in test) / len(test), 1),
              "always_end": scores(test, lambda f: 1.0, lambda p: p), "ceilings": ceilings(train, test)}
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"decision points: train {len(train):,}, test {len(test):,}; base rate of real ends (test) {result['base_rate']}%")
    print(f"always end: F1 {result['always_end']['f1']}, precision {result['always_end']['precision']}")
    print("| features the simulator knows | sampled F1 (P) | greedy F1 (P) | best threshold F1 (P) |")
    print("|---|---|---|---|")
    for name, row in result["ceilings"].items():
        cells = [f"{row[k]['f1']} ({row[k]['precision']})" for k in ("sampled", "greedy", "best_threshold")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
