"""Time the testbed generator (issue 3 target: 10,000 users in under a minute on one core).

Usage: python benchmarks/testbed.py [--users 10000] [--seed 0]
Generation runs in this one process (one core); writing the files is timed separately.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from userloop.testbed import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    population = generate(args.users, args.seed)
    generated = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        population.write(Path(tmp))
        written = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
    turns = sum(len(r["conversation"]) for r in population.records)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print(f"users {args.users:,}  conversations {len(population.records):,}  messages {turns:,}")
    print(f"generate {generated:.1f} s ({args.users / generated:,.0f} users/s, {turns / generated:,.0f} messages/s)")
    print(f"write (incl. summary) {written:.1f} s, {size:.0f} MB")


if __name__ == "__main__":
    main()
