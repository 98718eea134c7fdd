"""Benchmark generation throughput: one request at a time vs the coalescing hf provider vs `userloop serve`.

    python benchmarks/generation.py [--prompts 64] [--new-tokens 32] [--repeats 3] [--workloads short mixed]
                                    [--prefix-cache-mb MB]

Builds a tiny random Llama chat checkpoint (hidden 256, 4 layers, 8 heads, byte-level BPE vocabulary of
527 tokens), then generates --new-tokens tokens for each of --prompts conversations, greedily,
with every end-of-turn token biased by -100 so each completion has exactly that many tokens:

  (a) sequential: one request at a time through an hf provider that does not wait for company
      (batch_wait_ms=0), i.e. plain one-conversation model.generate calls;
  (b) coalesced: all conversations submitted at once as separate agenerate calls to the hf provider
      (max_batch_size 64, batch_wait_ms 5), which turns them into batches;
  (c) served: `userloop serve` in a subprocess, and the openai provider sending every conversation
      as its own concurrent HTTP request.

Workloads: ``short`` conversations have one user turn (about 35 prompt tokens), ``mixed`` ones one to
three turns of growing length (32-250 prompt tokens). Each mode runs once to warm up, then --repeats times; the median run is reported, in generated tokens
per second and as a multiple of (a). Completions of (b) and (c) are checked against (a).

The runs repeat the same prompts, so with the hf provider's prefix cache on (its default) every run after
the warm-up finds each prompt's states cached, as a guardrail resample round would: --prefix-cache-mb 0
turns it off for (a) and (b), so each run prefills every prompt (a conversation's first call). (c) runs
`userloop serve` with its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx

from userloop.models import GenerationParams, load_model
from userloop.models.tiny import build_tiny_chat_model

TOPICS = ("a poem about the sea", "fixing a Python function that returns None", "a quick dinner recipe with rice",
          "the capital of France", "an email to my landlord about the heater", "machine learning for a student",
          "apples, explained to a five year old", "a shorter version with a title")


def prompts(count: int, workload: str) -> list[list[dict]]:
    """``count`` conversations: ``short`` ones are one user turn (about 35 prompt tokens); ``mixed`` ones
    have one to three user turns of growing length (32 to 250 prompt tokens, 112 on average)."""
    conversations = []
    for i in range(count):
        turns = [{"role": "user", "content": f"Hello! Can you help me with {TOPICS[i % len(TOPICS)]}?"}]
        for extra in range(i % 3 if workload == "mixed" else 0):
            turns += [{"role": "assistant", "content": f"Sure, here is part {extra + 1}."},
                      {"role": "user", "content": "Thanks, that works. Now make it better, please. " * (1 + i % 4)}]
        conversations.append(turns)
    return conversations


async def sequential(model, conversations, params):
    return [(await model.agenerate([c], params))[0] for c in conversations]


async def coalesced(model, conversations, params):
    return [r[0] for r in await asyncio.gather(*(model.agenerate([c], params) for c in conversations))]


async def served(model, conversations, params):
    return await model.agenerate(conversations, params)


async def closing(run, model, conversations, params):
    try:
        return await run(model, conversations, params)
    finally:
        await model.aclose()  # connections and the batching worker belong to this event loop


def measure(run, model, conversations, params, repeats: int) -> dict:
    """Warm up once, then time ``repeats`` runs; the median run's seconds, tokens and texts."""
    asyncio.run(closing(run, model, conversations, params))
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        completions = asyncio.run(closing(run, model, conversations, params))
        runs.append((time.perf_counter() - started, completions))
    seconds, completions = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    return {"seconds": seconds, "tokens": sum(c.completion_tokens for c in completions),
            "texts": [c.text for c in completions], "all_seconds": [r[0] for r in runs]}


def start_server(path: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "userloop.cli", "serve", f"hf:{path}", "--port", str(port), "--model-name", "bench"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"userloop serve exited: {process.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("userloop serve did not start within 120 s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", choices=("short", "mixed"), default=["short", "mixed"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads here and in the server (default: torch's choice)")
    parser.add_argument("--prefix-cache-mb", type=float, default=None,
                        help="hf prefix cache budget of (a) and (b) (0: off; default: the provider's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # on a shared machine, fewer threads than cores avoid oversubscription
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the server's process

    folder = Path(tempfile.mkdtemp(prefix="userloop-bench-"))
    path = build_tiny_chat_model(folder / "model", hidden_size=256, layers=4, heads=8)
    cache_option = {} if args.prefix_cache_mb is None else {"prefix_cache_mb": args.prefix_cache_mb}
    one_at_a_time = load_model(f"hf:{path}", batch_wait_ms=0, **cache_option)
    batching = load_model(f"hf:{path}", **cache_option)
    params = GenerationParams(max_new_tokens=args.new_tokens, temperature=0,
                              logit_bias={token: -100 for token in batching.stop_ids})
    port = free_port()
    server = start_server(path, port)
    client = load_model(f"openai:bench@http://127.0.0.1:{port}/v1", max_concurrency=args.prompts)
    modes = [("(a) one request at a time, hf provider", sequential, one_at_a_time),
             ("(b) coalescing hf provider, all submitted at once", coalesced, batching),
             (f"(c) userloop serve + openai provider, {args.prompts} concurrent requests", served, client)]
    load = os.getloadavg()
    rows = ["| workload | mode | seconds | generated tokens | tokens/s | vs (a) | same text as (a) |",
            "|---|---|---|---|---|---|---|"]
    timings = []
    try:
        for workload in args.workloads:
            conversations = prompts(args.prompts, workload)
            mean_prompt = sum(len(batching.prompt_ids(c, 1)) for c in conversations) / len(conversations)
            base = None
            for name, run, model in modes:
                print(f"{workload}: {name} ...", file=sys.stderr, flush=True)
                result = measure(run, model, conversations, params, args.repeats)
                base = base or result
                rate = result["tokens"] / result["seconds"]
                same = sum(t == b for t, b in zip(result["texts"], base["texts"]))
                rows.append(f"| {workload} ({mean_prompt:.0f} prompt tokens) | {name} | {result['seconds']:.2f} | "
                             f"{result['tokens']:,} | {rate:,.0f} | "
                             f"{rate / (base['tokens'] / base['seconds']):.1f}x | {same}/{len(conversations)} |")
                timings.append(f"{workload} {name[:3]} " + ", ".join(f"{s:.2f}" for s in result["all_seconds"]))
    finally:
        server.terminate()
        server.wait(timeout=30)

    import torch

    print(f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average before {load[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}. Date: {date.today()}. Prefix cache of (a) and (b): "
          f"{'provider default' if args.prefix_cache_mb is None else f'{args.prefix_cache_mb} MB'}.")
    print(f"{args.prompts} prompts x {args.new_tokens} new tokens, greedy, median of {args.repeats} runs "
          f"(all runs, seconds: {'; '.join(timings)})\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
