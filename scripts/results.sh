#!/usr/bin/env bash
# The longer companion of scripts/demo.sh (docs/results.md, "scripts/results.sh"), about an hour on
# 2 cores:
#   1. majority vote, examples/majority_steps.s2 (the demo's task): three training seeds of the
#      distilled System 1 (mean and spread), and the papers' curation ablations, unfiltered
#      (--curation none) and gold-filtered (--curation gold);
#   2. a second method, chain of thought with self-consistency (examples/coin_flip_sc.s2) on coin
#      flip, where curation decides what System 1 learns: its keep rule (majority >= 60 %),
#      unfiltered and gold-filtered, each trained and evaluated.
# An ablation whose rows are byte-identical to the program-curated rows is not trained again (the
# curation table says so). Adapters are evaluated merged (--merge-adapters, as scripts/demo.sh).
# Everything lands in runs/results/; the tables are printed at the end and written to
# runs/results/tables.md. CACHE=runs/demo/calls.sqlite reuses the demo's System-2 calls.
set -euo pipefail
cd "$(dirname "$0")/.."
S2C=${S2C:-.venv/bin/s2c}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/results}
CACHE=${CACHE:-$OUT/calls.sqlite}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "results: $1 done at $(( $(date +%s) - start )) s" >&2; }
compile() {  # NAME PROGRAM DATA LIMIT CURATION
    $S2C compile "$2" --data "$3:train" --limit "$4" --curation "$5" --out "$OUT/$1" --chunk-size 256 \
        --cache "$CACHE" --no-progress
}
train() {  # DATASET SEED STEPS-ARGS...
    local data=$1 seed=$2; shift 2
    $S2C train "$OUT/$data" --batch-size 8 --lr 1e-3 --max-length 256 --seed "$seed" "$@" --out "$OUT/train-$data-$seed"
}
same_rows() { cmp -s "$OUT/$1/train.jsonl" "$OUT/$2/train.jsonl"; }

# 1. majority vote: 400 System-2 runs, three seeds, two ablations
for c in program none gold; do compile "majority-$c" examples/majority_steps.s2 majority_vote 400 "$c"; done
stamp "majority compile"
adapters=()
for seed in 0 1 2; do
    train majority-program "$seed" --epochs 2
    adapters+=(--adapter "seed $seed=$OUT/train-majority-program-$seed")
done
for c in none gold; do
    if same_rows "majority-$c" majority-program; then  # the tables say so; seed 0's adapter stands for it
        echo "results: majority-$c rows are byte-identical to majority-program's: not trained again" >&2
    else
        train "majority-$c" 0 --epochs 2
        adapters+=(--adapter "$c=$OUT/train-majority-$c-0")
    fi
done
stamp "majority train"
$S2C eval examples/majority_steps.s2 --data majority_vote:test --limit 500 "${adapters[@]}" --merge-adapters \
    --max-tokens 32 --chunk-size 256 --cache "$CACHE" --no-progress --out "$OUT/eval-majority"
stamp "majority eval"

# 2. coin flip, chain of thought with self-consistency: curation as written, none, gold
for c in program none gold; do compile "coin-$c" examples/coin_flip_sc.s2 coin_flip 160 "$c"; done
stamp "coin compile"
adapters=()
for c in program none gold; do
    train "coin-$c" 0 --epochs 3
    adapters+=(--adapter "$c=$OUT/train-coin-$c-0")
done
stamp "coin train"
$S2C eval examples/coin_flip_sc.s2 --data coin_flip:test --limit 100 "${adapters[@]}" --merge-adapters \
    --max-tokens 32 --chunk-size 256 --cache "$CACHE" --no-progress --out "$OUT/eval-coin"
stamp "coin eval"

$PY scripts/results_tables.py "$OUT" | tee "$OUT/tables.md"
echo "results: $(( $(date +%s) - start )) s in all on $(nproc) cores; tables in $OUT/tables.md" >&2
