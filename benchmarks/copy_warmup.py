"""Can the preset's user-LM architecture learn to copy from its context in minutes? A synthetic induction test.

    python benchmarks/copy_warmup.py [--steps 2500] [--learning-rate 1e-3] [--top-id 256] [--batch 32] [--length 128]

The small preset user LM (docs/validity.md) does not copy the problem's numbers from its intent: the intent does
not lower its loss on the digits it says. Copying a span seen earlier needs an induction circuit (a head that
attends to the token after an earlier occurrence of the current one). This trains the preset's architecture
(a Llama of hidden size 256, 4 layers, 4 heads, 2 key/value heads, vocabulary 2,048), from scratch, on the purest
copying task there is: a source of random tokens (ids 20..``--top-id``), then spans of it repeated after random
filler, the loss on each span's tokens after its first. A model that copies gets a loss near 0 there; one that
only learns which tokens the source holds gets about log(source length); one that learns nothing,
log(number of ids). Prints one JSON line every ``--every`` updates (loss, seconds) and the reference levels.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

SOURCE_START, SOURCE_END, FILLER_START, FILLER_END = 1, 2, 3, 4  # marker ids, below the random tokens' range


def copy_batch(rng: random.Random, size: int, length: int, sources: tuple[int, int], top_id: int):
    """``size`` sequences of ``length`` ids: a random source, then (filler, span of the source) until full;
    labels are the span tokens after each span's first (-100 elsewhere)."""
    import torch

    sequences, labels = [], []
    for _ in range(size):
        n = rng.randint(*sources)
        source = [rng.randint(20, top_id) for _ in range(n)]
        ids, targets = [SOURCE_START, *source, SOURCE_END], [-100] * (n + 2)
        while len(ids) < length:
            start = rng.randint(0, n - 4)
            span_length = rng.randint(4, min(32, n - start))
            filler = [rng.randint(20, top_id) for _ in range(rng.randint(4, 40))]
            ids += [FILLER_START, *filler, FILLER_END]
            targets += [-100] * (len(filler) + 2)
            span = source[start:start + span_length]
            ids += span
            targets += [-100, *span[1:]]
        sequences.append(ids[:length])
        labels.append(targets[:length])
    return torch.tensor(sequences), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--top-id", type=int, default=256, help="random tokens are ids 20..TOP_ID")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--source", type=int, nargs=2, default=[16, 48], metavar=("MIN", "MAX"), help="source length range")
    parser.add_argument("--every", type=int, default=100, help="print the loss every N updates")
    parser.add_argument("--no-bf16", action="store_true", help="float32 (bf16 autocast is slower on CPUs without AVX512-BF16/AMX)")
    args = parser.parse_args()
    if not 24 <= args.top_id < 2048 or args.source[0] < 4 or args.length <= args.source[1] + 2:
        parser.error("--top-id must be in [24, 2047], the source at least 4 tokens and --length longer than the source")

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    rng = random.Random(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                                         tie_word_embeddings=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    print(json.dumps({"uniform": round(math.log(args.top_id - 19), 3),
                      "bag_of_source": round(math.log(sum(args.source) / 2), 3)}), flush=True)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        ids, labels = copy_batch(rng, args.batch, args.length, tuple(args.source), args.top_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.no_bf16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % args.every == 0:
            print(json.dumps({"step": step, "loss": round(loss.item(), 3),
                              "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
