"""Benchmark the lock-step simulation engine against a one-conversation-at-a-time loop.

    python benchmarks/simulate.py [--conversations 256] [--max-turns 6] [--baseline-conversations 256]

Builds two tiny random local checkpoints (a UserLM look-alike as the user, a Llama-3-style chat model
as the assistant; hidden --hidden, --layers layers), writes --conversations open scenarios (32 intents
x N samples), then:

  (a) one at a time: for each conversation in turn, the user turn (UserSimulator with the model
      card's guardrails) then the assistant reply, until the user ends or --max-turns user turns,
      the way lost_in_conversation runs; hf models that do not wait for company (batch_wait_ms=0);
  (b) lock-step: `userloop simulate` (runs.simulate: the engine, the run folder, classification,
      records written as they finish), all conversations live at once.

Both use the same models, sampling settings and token limits. (a) may run on the first
--baseline-conversations only (its rate is per conversation, so a sample of conversations gives it);
the table says how many ran. Reported: conversations/s, turns/s (user turns + assistant replies),
the speed-up, and (b)'s orchestration overhead (wall time outside awaited model, classifier and
scoring calls) from its summary.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from userloop.models import GenerationParams, load_model
from userloop.models.tiny import build_tiny_chat_model
from userloop.simulate.runs import SimulationConfig, simulate
from userloop.userlm.simulator import UserSimulator
from userloop.userlm.template import build_userlm_lookalike

TOPICS = ("write a poem about the sea", "fix a Python function that returns None", "cook a quick dinner with rice",
          "learn the capital of France", "email a landlord about a broken heater", "learn machine learning",
          "explain apples to a five year old", "shorten a text and add a title")
STYLES = ("briefly", "in detail", "step by step", "politely")


def scenarios(count: int) -> list[dict]:
    """``count`` open scenarios over 32 intents (8 topics x 4 styles), cycled."""
    intents = [f"You are a user chatting with an assistant language model. You want to {topic}, {style}."
               for topic in TOPICS for style in STYLES]
    return [{"id": f"s{i}", "kind": "open", "intent": intents[i % len(intents)]} for i in range(count)]


async def one_at_a_time(simulator: UserSimulator, assistant, intents: list[str], max_turns: int,
                        params: GenerationParams) -> int:
    """Each conversation to its end before the next starts; returns the number of turns generated."""
    turns = 0
    try:
        for intent in intents:
            history: list[dict] = []
            for _ in range(max_turns):
                [turn] = await simulator.anext_turns([intent], [history])
                turns += 1
                if turn.ended:
                    break
                history.append({"role": "user", "content": turn.text})
                [reply] = await assistant.agenerate([history], params)
                turns += 1
                history.append({"role": "assistant", "content": reply.text})
    finally:
        await simulator.model.aclose()
        await assistant.aclose()
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=256)
    parser.add_argument("--baseline-conversations", type=int, default=256)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--user-tokens", type=int, default=24, help="max new tokens per user-turn sample")
    parser.add_argument("--assistant-tokens", type=int, default=32, help="max new tokens per assistant reply")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--max-batch-size", type=int, default=None, help="hf rows per batch (default: the provider's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--user-model", type=Path, default=None,
                        help="a trained user LM folder (e.g. from 'userloop train user-lm') instead of a random look-alike")
    parser.add_argument("--assistant-model", type=Path, default=None,
                        help="a trained assistant folder (e.g. from 'userloop train assistant') instead of a random one")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared machine, fewer threads than cores avoid oversubscription

    folder = Path(tempfile.mkdtemp(prefix="userloop-simulate-bench-"))
    user_path = args.user_model or build_userlm_lookalike(folder / "user", hidden_size=args.hidden, layers=args.layers)
    assistant_path = args.assistant_model or build_tiny_chat_model(folder / "assistant", hidden_size=args.hidden,
                                                                   layers=args.layers)
    for path in {user_path, assistant_path} - {args.user_model, args.assistant_model}:
        # six turns of random text outgrow the random tiny models' 512 positions
        config_file = path / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "max_position_embeddings": 2048}))
    rows = scenarios(args.conversations)
    scenario_file = folder / "scenarios.jsonl"
    scenario_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = SimulationConfig(assistant=f"hf:{assistant_path}", user=f"hf:{user_path}", scenarios=str(scenario_file),
                              max_user_turns=args.max_turns, assistant_max_new_tokens=args.assistant_tokens,
                              user_max_new_tokens=args.user_tokens, concurrency=args.concurrency,
                              max_batch_size=args.max_batch_size)
    load = os.getloadavg()

    print("(b) lock-step engine ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    summary = simulate(config, folder / "run").summary
    lockstep_s = time.perf_counter() - started
    t = summary["timings"]

    print("(a) one conversation at a time ...", file=sys.stderr, flush=True)
    simulator = UserSimulator(load_model(f"hf:{user_path}", batch_wait_ms=0),
                              params=GenerationParams(max_new_tokens=args.user_tokens, temperature=1.0, top_p=0.8, seed=0))
    assistant = load_model(f"hf:{assistant_path}", batch_wait_ms=0)
    baseline = rows[:args.baseline_conversations]
    started = time.perf_counter()
    baseline_turns = asyncio.run(one_at_a_time(simulator, assistant, [r["intent"] for r in baseline], args.max_turns,
                                               GenerationParams(max_new_tokens=args.assistant_tokens, seed=0)))
    baseline_s = time.perf_counter() - started

    base_rate, lock_rate = len(baseline) / baseline_s, t["conversations"] / t["wall_s"]
    cpu = os.cpu_count()
    print(f"Machine: {cpu} cores ({platform.machine()}), Python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}. "
          f"Date: {date.today()}.")
    print(f"{args.conversations} open scenarios, up to {args.max_turns} user turns, user {args.user_tokens} / assistant "
          f"{args.assistant_tokens} new tokens, tiny models hidden {args.hidden}, {args.layers} layers, concurrency "
          f"{args.concurrency}, max batch size {args.max_batch_size or 'default (64)'}\n")
    print("| mode | conversations | turns | seconds | conversations/s | turns/s | vs (a) | overhead |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| (a) one at a time | {len(baseline)} | {baseline_turns:,} | {baseline_s:.1f} | {base_rate:.2f} | "
          f"{baseline_turns / baseline_s:.1f} | 1.0x | - |")
    print(f"| (b) lock-step engine | {t['conversations']} | {t['turns']:,} | {t['wall_s']:.1f} | {lock_rate:.2f} | "
          f"{t['turns_per_s']:.1f} | {lock_rate / base_rate:.1f}x | {t['overhead_share']:.1%} |")
    print(f"\n(b) seconds by phase: {t['by_phase_s']}; steps {t['steps']}; simulate() total {lockstep_s:.1f} s "
          f"(with model loading); guardrail resamples {summary['overall']['guardrail_events']['resample']:,}, "
          f"end reasons {summary['overall']['end_reasons']}")


if __name__ == "__main__":
    main()
