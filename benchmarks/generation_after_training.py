"""Generation speed under glibc's mmap threshold: the process's own, inside a training's scope, and after it.

    python benchmarks/generation_after_training.py --policy runs/rlhi3/base [--prompts 32] [--new-tokens 192]
                                                   [--repeats 3]

The trainers map every allocation of 1 MiB or more while they run (``train.common.large_allocations_mapped``:
freed activations go back to the system); until 2026-12-05 the setting stayed for the rest of the process, so
a process that trained and then generated (``rlhi loop``, ``benchmarks/rlhi_ablations.py``, the demo)
generated under it. Each mode runs in a fresh process: load the policy, set the thresholds (``default``
leaves glibc's own, which start at 128 KiB and grow with every larger block freed, up to 32 MiB;
``training`` is inside the trainers' scope, 1 MiB; ``after`` is what the scope leaves: mmap 32 MiB, trim
64 MiB; ``mmap-32MiB`` sets the mmap threshold alone), warm up on 4 prompts, then answer --prompts testbed requests (the first
user turns of the prepared test split, each with its user's persona line as the policy sees it) greedily,
--repeats times; prints the median seconds per mode and checks that every mode gives the same answers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import ctypes, json, statistics, sys, time
from userloop.models import GenerationParams, load_model
from userloop.train.common import large_allocations_mapped

policy, mode, count, new_tokens, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
prompts = json.loads(sys.stdin.read())[:count]
model = load_model(f"hf:{policy}")
scope = large_allocations_mapped()
if mode == "training":
    scope.__enter__()
elif mode == "after":
    with scope:
        pass
elif mode == "mmap-32MiB":
    ctypes.CDLL("libc.so.6").mallopt(-3, 32 << 20)
params = GenerationParams(max_new_tokens=new_tokens, temperature=0, seed=0)
model.generate(prompts[:4], params)
seconds = []
for _ in range(repeats):
    started = time.perf_counter()
    answers = [c.text for c in model.generate(prompts, params)]
    seconds.append(time.perf_counter() - started)
print(json.dumps({"seconds": statistics.median(seconds), "runs": seconds, "answers": answers}))
"""


def testbed_prompts(count: int) -> list[list[dict]]:
    from userloop.conversation import read_parquet
    from userloop.testbed.default import default_data

    prompts = []
    for conversation in read_parquet(default_data(prepared=True) / "test.parquet"):
        first = next((m for m in conversation.messages if m.role == "user"), None)
        if first is not None:
            prompts.append([{"role": "user", "content": first.content}])
        if len(prompts) == count:
            break
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    prompts = json.dumps(testbed_prompts(args.prompts))
    print(f"load average before: {os.getloadavg()}")
    results = {}
    for mode in ("default", "training", "mmap-32MiB", "after", "default"):
        run = subprocess.run([sys.executable, "-c", WORKER, args.policy, mode, str(args.prompts), str(args.new_tokens),
                              str(args.repeats)], input=prompts, capture_output=True, text=True, check=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        results.setdefault(mode, []).append(result)
        print(f"{mode:>8}: median {result['seconds']:.2f} s ({', '.join(f'{s:.2f}' for s in result['runs'])})", flush=True)
    answers = {json.dumps(r["answers"]) for rs in results.values() for r in rs}
    print(f"same answers in every mode: {len(answers) == 1}; load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
