"""Benchmark the lock-step simulation engine against a one-conversation-at-a-time loop.

    python benchmarks/simulate.py [--conversations 256] [--max-turns 6] [--baseline-conversations 256]
                                  [--user-model DIR --assistant-model DIR] [--prefix-cache-mb MB]
                                  [--max-batch-tokens N]

Builds two tiny random local checkpoints (a UserLM look-alike as the user, a Llama-3-style chat model
as the assistant; hidden --hidden, --layers layers) unless trained ones are given, writes --conversations
open scenarios (32 intents x N samples), then:

  (b) lock-step: `userloop simulate` (runs.simulate: the engine, the run folder, classification,
      records written as they finish), all conversations live at once;
  (a) one at a time: the same engine and settings with one conversation live (concurrency 1), each to
      its end before the next starts, the way lost_in_conversation runs; hf models that do not wait
      for company (batch_wait_ms=0).

Both use the same models, seeds, sampling settings and token limits, so (a) simulates the same
conversations as (b) (the script counts those that came out identical). (a) may run on the first
--baseline-conversations only (its rate is per conversation, so a sample of conversations gives it);
the table says how many ran. Reported: conversations/s, turns/s (user turns + assistant replies),
the speed-ups, (b)'s orchestration overhead (wall time outside awaited model, classifier and scoring
calls) from its summary.json, and each model's prefix-cache use (prompt tokens reused).
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

import userloop.models as models_module
from userloop.models import GenerationParams, load_model
from userloop.models.tiny import build_tiny_chat_model
from userloop.simulate.answer_check import score_reply
from userloop.simulate.engine import Job, SimulationEngine, pending_jobs
from userloop.simulate.records import SimulatedConversation
from userloop.simulate.reply_kinds import load_reply_classifier
from userloop.simulate.runs import RECORDS, SimulationConfig, read_records, simulate
from userloop.simulate.scenarios import load_scenarios
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


async def one_at_a_time(engine: SimulationEngine, jobs: list[Job]) -> list[SimulatedConversation]:
    """The engine with one conversation live at a time: each to its end before the next starts."""
    records: list[SimulatedConversation] = []
    try:
        await engine.run(jobs, records.append)
    finally:
        await engine.user.model.aclose()
        await engine.assistant.aclose()
    return records


def same_conversations(records: list[SimulatedConversation], others: list[SimulatedConversation]) -> int:
    """How many of ``records`` have exactly the messages (texts and roles) of the same conversation in ``others``."""
    def texts(record: SimulatedConversation) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in record.messages]

    by_key = {r.key: texts(r) for r in others}
    return sum(by_key.get(r.key) == texts(r) for r in records)


def cache_line(name: str, model) -> str:
    cache = model.prefix_cache
    if cache is None:
        return f"{name}: prefix cache off; generate calls by rows {dict(sorted(model.batch_size_counts.items()))}"
    share = cache.reused_tokens / cache.looked_up_tokens if cache.looked_up_tokens else 0.0
    return (f"{name}: {cache.reused_tokens:,} of {cache.looked_up_tokens:,} prompt tokens reused ({share:.0%}), "
            f"{len(cache)} entries, {cache.nbytes / 2**20:.1f} MB; generate calls {sum(model.batch_size_counts.values())}")


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
    parser.add_argument("--prefix-cache-mb", type=float, default=None,
                        help="hf prefix cache budget for both modes' models (0: off; default: the provider's)")
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="hf padded tokens per generate call for both modes' models (0: no limit; default: the provider's)")
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
    model_options = {} if args.prefix_cache_mb is None else {"prefix_cache_mb": args.prefix_cache_mb}
    if args.max_batch_tokens is not None:
        model_options["max_batch_tokens"] = args.max_batch_tokens
    loaded = {}

    def load_with_model_options(spec: str, **options):
        """runs.simulate loads its models through userloop.models.load_model: this adds --prefix-cache-mb and
        --max-batch-tokens."""
        loaded[spec] = load_model(spec, **options, **model_options)
        return loaded[spec]

    load = os.getloadavg()
    print("(b) lock-step engine ...", file=sys.stderr, flush=True)
    models_module.load_model = load_with_model_options
    try:
        started = time.perf_counter()
        summary = simulate(config, folder / "run").summary
        lockstep_s = time.perf_counter() - started
    finally:
        models_module.load_model = load_model
    t = summary["timings"]
    lockstep_records, _ = read_records(folder / "run" / RECORDS)

    print("(a) one conversation at a time ...", file=sys.stderr, flush=True)
    user_model, assistant = (load_model(spec, batch_wait_ms=0, **model_options)
                             for spec in (config.user, config.assistant))
    simulator = UserSimulator(user_model, params=GenerationParams(
        max_new_tokens=config.user_max_new_tokens, temperature=config.user_temperature, top_p=config.user_top_p))
    engine = SimulationEngine(assistant, simulator, load_reply_classifier(config.classifier), score_reply,
                              assistant_params=GenerationParams(max_new_tokens=config.assistant_max_new_tokens,
                                                                temperature=config.assistant_temperature),
                              max_user_turns=config.max_user_turns, seed=config.seed, concurrency=1)
    baseline = pending_jobs(load_scenarios(scenario_file), config.n, set())[:args.baseline_conversations]
    baseline_records = asyncio.run(one_at_a_time(engine, baseline))
    base = engine.timings

    base_rate, lock_rate = base.conversations / base.wall_s, t["conversations"] / t["wall_s"]
    base_turns_rate = base.turns / base.wall_s
    print(f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), load average before {load[0]:.2f}, after "
          f"{os.getloadavg()[0]:.2f}. Date: {date.today()}.")
    print(f"{args.conversations} open scenarios, up to {args.max_turns} user turns, user {args.user_tokens} / assistant "
          f"{args.assistant_tokens} new tokens, models {args.user_model or f'random hidden {args.hidden}'} / "
          f"{args.assistant_model or f'random hidden {args.hidden}'}, concurrency {args.concurrency}, max batch size "
          f"{args.max_batch_size or 'default (64)'}, prefix cache "
          f"{'default' if args.prefix_cache_mb is None else f'{args.prefix_cache_mb} MB'}, max batch tokens "
          f"{'default' if args.max_batch_tokens is None else args.max_batch_tokens}\n")
    print("| mode | conversations | turns | seconds | conversations/s | turns/s | vs (a) | turns/s vs (a) | overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| (a) one at a time | {base.conversations} | {base.turns:,} | {base.wall_s:.1f} | {base_rate:.2f} | "
          f"{base_turns_rate:.1f} | 1.0x | 1.0x | - |")
    print(f"| (b) lock-step engine | {t['conversations']} | {t['turns']:,} | {t['wall_s']:.1f} | {lock_rate:.2f} | "
          f"{t['turns_per_s']:.1f} | {lock_rate / base_rate:.1f}x | {t['turns_per_s'] / base_turns_rate:.1f}x | "
          f"{t['overhead_share']:.1%} |")
    print(f"\n(a) conversations identical to (b)'s: {same_conversations(baseline_records, lockstep_records)} of "
          f"{len(baseline_records)}")
    print(f"(b) seconds by phase: {t['by_phase_s']}; steps {t['steps']}; simulate() total {lockstep_s:.1f} s "
          f"(with model loading); guardrail resamples {summary['overall']['guardrail_events']['resample']:,}, "
          f"end reasons {summary['overall']['end_reasons']}")
    print(f"(a) seconds by phase: { {k: round(v, 1) for k, v in base.phases.items()} }")
    for name, model in (("(b) user", loaded[config.user]), ("(b) assistant", loaded[config.assistant]),
                        ("(a) user", user_model), ("(a) assistant", assistant)):
        print(cache_line(name, model))


if __name__ == "__main__":
    main()
