"""Benchmark flipping: tokens per epoch of the per-turn scheme (the paper's K+1 samples) vs packing.

    python benchmarks/flip_tokens.py [--shared ../shared/data] [--vocab-size 2048] [--max-length 2048]

Datasets: the default testbed's train split (prepared), and from the shared data folder the OASST
en_100 trees (every thread of every tree) and the 30-conversation WildChat-layout sample, read with
userloop's readers. Conversations without an intent get the offline intent
(``userloop.userlm.intents.offline_intent``). For each dataset a byte-level BPE tokenizer of
--vocab-size tokens is trained on its text (as ``userloop train user-lm`` does from scratch), then
both schemes flip it; both put the loss on the same target tokens (checked), so the ratio of tokens
per epoch is the compute the packed scheme saves.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

from userloop.data.readers import read_conversations
from userloop.testbed.default import default_data
from userloop.userlm.flip import flip, read_split
from userloop.userlm.intents import offline_intent
from userloop.userlm.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]


def with_intents(conversations):
    for conv in conversations:
        conv.intent = conv.intent or offline_intent(conv)
    return conversations


def datasets(shared: Path) -> dict[str, list]:
    train, _ = read_split(default_data(prepared=True), "train")
    return {
        "testbed train split (2,000 users, seed 0)": train,
        "OASST en_100 trees (all threads)": with_intents(list(read_conversations([str(shared / "oasst" / "en_100_tree.jsonl")]))),
        "WildChat-layout sample": with_intents(list(read_conversations([str(shared / "wildchat" / "sample.jsonl")]))),
    }


def texts(conversations):
    for conv in conversations:
        yield conv.intent
        yield from (m.content for m in conv.messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--max-length", type=int, default=2048)
    args = parser.parse_args()

    print(f"{date.today()}, {platform.processor() or platform.machine()}, vocab {args.vocab_size}, max length {args.max_length}\n")
    print("| data | conversations | user turns per conversation | samples per_turn / packed | tokens per epoch, per_turn "
          "| tokens per epoch, packed | ratio | target tokens (both) | targets beyond max length | flip seconds, per_turn / packed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, conversations in datasets(args.shared).items():
        tokenizer = train_tokenizer(texts(conversations), args.vocab_size)
        timings, results = {}, {}
        for scheme in ("per_turn", "packed"):
            started = time.perf_counter()
            results[scheme] = flip(conversations, tokenizer, scheme, args.max_length)[1]
            timings[scheme] = time.perf_counter() - started
        per_turn, packed = results["per_turn"], results["packed"]
        assert per_turn.target_tokens == packed.target_tokens
        turns = sum(c.n_user_turns for c in conversations) / len(conversations)
        print(f"| {name} | {len(conversations):,} | {turns:.2f} | {per_turn.samples:,} / {packed.samples:,} "
              f"| {per_turn.tokens:,} | {packed.tokens:,} | {per_turn.tokens / packed.tokens:.2f}x | {packed.target_tokens:,} "
              f"| {packed.targets_dropped_by_max_length:,} | {timings['per_turn']:.1f} / {timings['packed']:.1f} |")


if __name__ == "__main__":
    main()
