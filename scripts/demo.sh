#!/usr/bin/env bash
# The whole story on the embedded model, on a CPU, in under 30 minutes (README, "The end-to-end
# demonstration"; docs/results.md for how the task was chosen): compile a one-step-per-call
# System-2 program on majority vote into System-1 data, train a LoRA adapter on it, and evaluate
# System 1, System 2 and the distilled System 1 on the 500 held-out test inputs, with 95 % CIs and
# paired tests. The distilled System 1 is evaluated merged into its base (--merge-adapters: the model
# `s2c export` ships; vLLM's LoRA path is ~8x slower on CPU). Everything lands in runs/demo/
# (results.json, results.png, the table on stderr).
# The calls are cached in runs/demo/calls.sqlite, not the user's cache, so that a first run pays
# for every call and a second run of the script reuses them.
set -euo pipefail
cd "$(dirname "$0")/.."
S2C=${S2C:-.venv/bin/s2c}
OUT=${OUT:-runs/demo}
PROGRAM=${PROGRAM:-examples/majority_steps.s2}
DATA=${DATA:-majority_vote}
TRAIN=${TRAIN:-400}   # System-2 runs to compile from (two epochs: 100 steps of 8 rows, at lr 1e-3)
TEST=${TEST:-500}     # held-out inputs to evaluate on (the whole test split)
SEED=${SEED:-0}       # training seed
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "demo: $1 done at $(( $(date +%s) - start )) s" >&2; }
$S2C compile "$PROGRAM" --data "$DATA:train" --limit "$TRAIN" --out "$OUT/data" --chunk-size 256 \
    --cache "$OUT/calls.sqlite"
stamp compile
$S2C train "$OUT/data" --epochs 2 --batch-size 8 --lr 1e-3 --max-length 256 --seed "$SEED" --out "$OUT/train"
stamp train
$S2C eval "$PROGRAM" --data "$DATA:test" --limit "$TEST" --adapter "$OUT/train" --merge-adapters \
    --max-tokens 32 --chunk-size 256 --cache "$OUT/calls.sqlite" --out "$OUT/eval"
stamp eval
echo "demo: $(( $(date +%s) - start )) s in all on $(nproc) cores; results in $OUT/eval/results.json" >&2
