#!/usr/bin/env bash
# The runs behind docs/leaderboard.md: two tiny simulators of the same size, trained on the default testbed
# (a user LM trained by flipping; an assistant prompted to play the user), scored with `userloop eval-sim`
# on the testbed and on the OpenAssistant trees of ../shared/data.
#
# Usage (from the repository root): bash benchmarks/leaderboard.sh [OUT]   (default OUT: /tmp/leaderboard)
# Environment: USERLOOP (default .venv/bin/userloop), SHARED (default ../shared/data).
# Each step prints the load (uptime) and its wall time; every output folder lands under OUT, never in the repo.
set -euo pipefail

OUT=${1:-/tmp/leaderboard}
USERLOOP=${USERLOOP:-.venv/bin/userloop}
SHARED=${SHARED:-../shared/data}
mkdir -p "$OUT"

step() {  # step NAME COMMAND...: run and time one step, logging to OUT/NAME.log
  local name=$1; shift
  echo "== $name: $*"; uptime
  local start=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: $((SECONDS - start)) s"; uptime
}

# 1. The two simulators: the default training config (scratch tokenizer and Llama, 300 updates) on the
#    default testbed's train split; `train assistant` is the same model with the loss on assistant turns.
step train_userlm "$USERLOOP" train user-lm --out "$OUT/userlm"
step train_assistant "$USERLOOP" train assistant --out "$OUT/assistant"

# 2. Real conversations: the OASST trees, half the users in train (the naturalness detector trains on it),
#    half in test (evaluated). The simulators never see OASST: it is out of domain for both.
step prepare_oasst "$USERLOOP" data prepare "$SHARED/oasst/en_100_tree.jsonl" --splits 50/0/50 --out "$OUT/oasst"

# 3. eval-sim (guardrails off: the raw simulators). Testbed: its own test split and the testbed-fact probes;
#    OASST: the paper's probes (CommonsenseQA for role adherence, NQ-open for intent adherence).
SIMS=(--sim "userlm=hf:$OUT/userlm" --sim "prompted-assistant=prompted:hf:$OUT/assistant")
step eval_testbed "$USERLOOP" eval-sim "${SIMS[@]}" --max-conversations 200 --n-probes 100 --out "$OUT/eval_testbed"
step eval_oasst "$USERLOOP" eval-sim "${SIMS[@]}" --data "$OUT/oasst" --max-conversations 200 --n-probes 100 \
  --role-probes "$SHARED/commonsenseqa/dev_rand_split.jsonl" --intent-probes "$SHARED/nq_open/NQ-open.dev.jsonl" \
  --out "$OUT/eval_oasst"
