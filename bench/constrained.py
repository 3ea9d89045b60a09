"""Constrained decoding, measured: each program against its variant whose answers always parse.

    python bench/constrained.py --coin-inputs 32 --dev-inputs 64 --bsm-inputs 8

  coin_flip  examples/coin_flip_sc.s2 (the README's job) vs examples/coin_flip_sc_constrained.s2,
             compiled on --coin-inputs coin_flip inputs; then each System 2 run on --dev-inputs
             inputs of the validation split (the dev split) for its accuracy against gold
  bsm        programs/bsm.s2 vs examples/bsm_constrained.s2, compiled on the oasst2 fixture

Each program gets a fresh vLLM engine (the embedded model, the engine's default dtype, seed 0),
no call cache, and the same data. Reported per program: the unparsed share of the parsed answers
(the CoT samples' yes/no, BSM's verdicts, over the original and perturbed inputs), generated
tokens, kept rows and kept rows per 1,000 generated tokens, wall time without the engine's
start-up, and the dev accuracy. A markdown table goes to stdout, the figures to --json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import s2c

REPO = Path(__file__).resolve().parents[1]
OASST2 = f"oasst2:{REPO / 'tests/fixtures/data/oasst2_sample.jsonl'}"

# (label, program, the node whose values are the parsed answers, data)
COIN = [("coin_flip_sc (README job)", "examples/coin_flip_sc.s2", "sample"),
        ("coin_flip_sc_constrained", "examples/coin_flip_sc_constrained.s2", "sample")]
BSM = [("bsm", "programs/bsm.s2", "verdict"), ("bsm_constrained", "examples/bsm_constrained.s2", "verdict")]


def measure(label: str, program: str, answer_node: str, data: s2c.Data, dev: s2c.Data | None, work: Path) -> dict:
    settings = s2c.RunSettings(cache=None, progress=False)
    with s2c.Engine("vllm") as engine:
        t0 = time.perf_counter()
        result = s2c.distill(REPO / program, data, engine, out=work / label / "compile", settings=settings)
        wall = time.perf_counter() - t0 - result.summary.engine_startup_seconds
        summary = result.summary
        answers = summary.nodes[answer_node]
        instances = _instances(result.out / "run", answer_node)
        bad = sum(answers.unparsed.values()) + sum(answers.failed.values())
        row = {
            "program": label, "inputs": summary.examples, "answers": instances,
            "unparsed_answers": bad, "unparsed_share": bad / instances if instances else None,
            "generated_tokens": sum(s.generated_tokens for s in summary.nodes.values()),
            "engine_calls": sum(s.engine_calls for s in summary.nodes.values()),
            "kept_rows": result.report["kept"], "wall_seconds": round(wall, 1),
        }
        row["kept_per_1k_tokens"] = round(1000 * row["kept_rows"] / row["generated_tokens"], 2)
        if dev is not None:
            outcome = s2c.run(REPO / program, dev, engine, out=work / label / "dev", settings=settings)
            records = list(outcome.records())
            right = sum(str(r["final"]).strip().lower() == str(r["gold_answer"]).strip().lower() for r in records)
            row.update(dev_inputs=len(records), dev_accuracy=round(right / len(records), 3),
                       dev_unparsed=sum(r["status"] == "unparsed" for r in records))
    return row


def _instances(run_dir: Path, node: str) -> int:
    """How many values `node` had over the run's examples (each sample of a fan-out counts)."""
    import sqlite3

    from s2c.runtime.store import RunStore

    n = 0
    for record in RunStore.open(run_dir).traces():
        n += len(record.nodes.get(node, {}).get("instances", [])) or 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coin-inputs", type=int, default=32)
    ap.add_argument("--dev-inputs", type=int, default=64)
    ap.add_argument("--bsm-inputs", type=int, default=8)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="s2c-bench-constrained-") as tmp:
        work = Path(tmp)
        coin = s2c.Data("coin_flip", limit=args.coin_inputs)
        dev = s2c.Data("coin_flip", split="validation", limit=args.dev_inputs)
        for label, program, node in COIN:
            rows.append(measure(label, program, node, coin, dev, work))
            print(json.dumps(rows[-1]), flush=True)
        if args.bsm_inputs:
            for label, program, node in BSM:
                rows.append(measure(label, program, node, s2c.Data(OASST2, limit=args.bsm_inputs), None, work))
                print(json.dumps(rows[-1]), flush=True)
    print()
    print("| program | inputs | answers parsed | unparsed | generated tokens | engine calls | kept rows "
          "| kept / 1k tokens | wall (s) | dev accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = f"{r['dev_accuracy']:.1%} of {r['dev_inputs']}" if "dev_accuracy" in r else "-"
        print(f"| {r['program']} | {r['inputs']} | {r['answers']} | {r['unparsed_answers']} ({r['unparsed_share']:.0%}) "
              f"| {r['generated_tokens']:,} | {r['engine_calls']} | {r['kept_rows']} | {r['kept_per_1k_tokens']} "
              f"| {r['wall_seconds']} | {acc} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
