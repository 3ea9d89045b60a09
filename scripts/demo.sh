#!/usr/bin/env bash
# The whole story on the embedded model, on a CPU, in under 30 minutes (README, "The end-to-end
# demonstration"): compile a self-consistent System-2 program on coin flip into System-1 data,
# train a LoRA adapter on it, and evaluate System 1, System 2 and the distilled System 1 on
# held-out inputs. Everything lands in runs/demo/ (results.json, results.png, the table on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
S2C=${S2C:-.venv/bin/s2c}
OUT=${OUT:-runs/demo}
TRAIN=${TRAIN:-120}   # System-2 runs to compile from
TEST=${TEST:-60}      # held-out inputs to evaluate on
start=$(date +%s)
$S2C compile examples/coin_flip_sc.s2 --data coin_flip:train --limit "$TRAIN" --out "$OUT/data" --chunk-size 256
$S2C train "$OUT/data" --epochs 3 --batch-size 8 --max-length 128 --out "$OUT/train"
$S2C eval examples/coin_flip_sc.s2 --data coin_flip:test --limit "$TEST" --adapter "$OUT/train" \
    --max-tokens 32 --chunk-size 256 --out "$OUT/eval"
echo "demo: $(( $(date +%s) - start )) s in all; results in $OUT/eval/results.json" >&2
