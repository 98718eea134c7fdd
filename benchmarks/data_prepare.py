"""Benchmark `userloop data prepare` end to end against bare `json.loads` of the same file.

    python benchmarks/data_prepare.py --n 50000 200000

For each N: writes N WildChat-layout conversations (with per-turn OpenAI and Detoxify
moderation results, as the real release has), times `json.loads` of every line, then runs
`prepare` with default settings in a fresh process and reports conversations/s, the ratio to
the bare parse, and peak RSS of the main process and of the largest worker. Prints a Markdown
table row per N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from userloop.data.synthetic import write_wildchat

PREPARE = """
import json, resource, sys, time
from userloop.data.prepare import prepare
started = time.perf_counter()
result = prepare([sys.argv[1]], sys.argv[2])
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds,
    "read": result.report["conversations"]["read"],
    "kept": result.report["conversations"]["kept"],
    "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


def bare_parse_seconds(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)
    return time.perf_counter() - started


def run(n: int, folder: Path) -> dict:
    data = write_wildchat(folder / f"wildchat-{n}.jsonl", n, seed=n)
    parse = bare_parse_seconds(data)
    out = subprocess.run([sys.executable, "-c", PREPARE, str(data), str(folder / f"prepared-{n}")],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(n=n, mb=data.stat().st_size / 2**20, parse_seconds=parse)
    data.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50_000, 200_000])
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; date {date.today()}")
    print("| N | input MB | json.loads s | prepare s | conversations/s | prepare / json.loads | kept | peak RSS main MB | peak RSS worker MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            r = run(n, Path(tmp))
            print(f"| {n:,} | {r['mb']:.0f} | {r['parse_seconds']:.2f} | {r['seconds']:.2f} | {n / r['seconds']:,.0f} | "
                  f"{r['seconds'] / r['parse_seconds']:.2f}x | {r['kept']:,} | {r['main_rss_mb']:.0f} | {r['worker_rss_mb']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
