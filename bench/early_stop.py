"""Early stop, measured: each compile with every sample drawn (--no-early-stop) and with the
decision-preserving early stop (the default), in one invocation, and the oracle.

    python bench/early_stop.py --json early_stop.json

  coin32, coin200  examples/coin_flip_sc.s2 (the README's main job) on 32 and 200 coin_flip inputs
  cot_sc           programs/cot_sc.s2 on the gsm8k fixture (5 inputs, 10 samples of up to 512 tokens)
  bsm              programs/bsm.s2 with its swap on the oasst2 fixture (greedy: nothing is sampled;
                   a swapped copy runs only where its original's verdict reads it)

Each run gets a fresh vLLM engine (the embedded model), no call cache, and the same data; wall
time leaves out the engine's start-up. Reported per run: generated tokens, engine calls and wall
seconds, each per kept row, and the md5 of train.jsonl and curation.jsonl (the two must match).

The oracle, from the traces of the run that drew every sample: per sampled call, the fewest
samples k whose own decisions, as if the call had drawn only k (the vote over them, the keep
rule over them), equal the decisions all n samples made. It knows the samples it does not draw,
so no stopping rule can save more; the table gives early stop's saving as a share of its saving.
The lossless bound: the fewest samples after which no undrawn sample, whatever it says or if it
fails, could change those decisions (early stop drawn one sample at a time; waves may overshoot
it). No lossless rule can save more. The same traces also replay the early-stop rule itself,
wave by wave, which must stop where the early-stop run stopped (a check that the run did what
the rule says).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import s2c
from s2c.compiler.early_stop import EarlyStop, decided, early_stops, key, next_wave
from s2c.compiler.library import majority_holds, vote_counts
from s2c.distill.build import DistillSettings
from s2c.runtime.store import RunStore

REPO = Path(__file__).resolve().parents[1]
JOBS = {
    "coin32": ("examples/coin_flip_sc.s2", "coin_flip", 32),
    "coin200": ("examples/coin_flip_sc.s2", "coin_flip", 200),
    "cot_sc": ("programs/cot_sc.s2", f"gsm8k:{REPO / 'tests/fixtures/data/gsm8k_sample.jsonl'}", None),
    "bsm": ("programs/bsm.s2", f"oasst2:{REPO / 'tests/fixtures/data/oasst2_sample.jsonl'}", None),
}


def compile_once(program: str, data: s2c.Data, out: Path, early_stop: bool) -> dict:
    settings = s2c.RunSettings(cache=None, progress=False)
    with s2c.Engine("vllm") as engine:
        t0 = time.perf_counter()
        res = s2c.distill(REPO / program, data, engine, out=out, settings=settings,
                          distill=DistillSettings(early_stop=early_stop))
        wall = time.perf_counter() - t0 - res.summary.engine_startup_seconds
    s = res.summary
    kept = res.report["kept"]
    return {
        "early_stop": early_stop, "inputs": res.report["inputs"], "kept": kept,
        "generated_tokens": s.generated_tokens, "engine_calls": s.engine_calls, "samples": s.samples,
        "not_drawn": sum(n.not_drawn for n in s.nodes.values()), "copies_not_run": s.copies_skipped,
        "wall_seconds": round(wall, 1),
        "tokens_per_kept_row": round(s.generated_tokens / max(1, kept), 1),
        "calls_per_kept_row": round(s.engine_calls / max(1, kept), 2),
        "seconds_per_kept_row": round(wall / max(1, kept), 2),
        "train_md5": md5(out / "train.jsonl"), "curation_md5": md5(out / "curation.jsonl"),
        "out": str(out),
    }


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def replay(program: str, full_out: Path, stopped_out: Path) -> dict:
    """The oracle's and the rule's stopping points, replayed on the full run's samples; and where
    the early-stop run really stopped."""
    cp = s2c.Program.load(REPO / program).checked
    plans = {nid: p for nid, p in early_stops(cp).items() if isinstance(p, EarlyStop)}
    full = RunStore.open(full_out / "run", cp)
    stopped = RunStore.open(stopped_out / "run", cp)
    out = {"calls": 0, "tokens_all": 0, "tokens_rule": 0, "tokens_bound": 0, "tokens_oracle": 0, "rule_matches_run": 0}
    for res in full.all():
        for nid, plan in plans.items():
            inst = res.trace.nodes[nid]["instances"][0]
            tokens = inst["sample_tokens"]
            n = len(tokens)
            keys = {v: [key(inst["completions"][i] if v == plan.node else res.state.computed(v, (i,)))
                        for i in range(n)] for v in plan.values}
            rule = _rule_stop(plan, keys, n)
            bound = next(d for d in range(n + 1) if decided(plan, {v: k[:d] for v, k in keys.items()}, n - d))
            oracle = _oracle_stop(plan, keys, n)
            ran = stopped.get(res.id).trace.nodes[nid]["instances"][0]
            out["calls"] += 1
            out["tokens_all"] += sum(tokens)
            out["tokens_rule"] += sum(tokens[:rule])
            out["tokens_bound"] += sum(tokens[:bound])
            out["tokens_oracle"] += sum(tokens[:oracle])
            out["rule_matches_run"] += len(ran["completions"]) == rule and ran["completions"] == inst["completions"][:rule]
    return out


def _rule_stop(plan: EarlyStop, keys: dict, n: int) -> int:
    d = 0
    while d < n and not decided(plan, {v: k[:d] for v, k in keys.items()}, n - d):
        d += next_wave(plan, {v: k[:d] for v, k in keys.items()}, n - d)
    return d


def _outcome(plan: EarlyStop, keys: dict, k: int):
    """What the first k samples decide, as if the call had drawn k: each vote's winner, each keep."""
    def vote(ks):
        valid = [x for x in ks if x is not None]
        return vote_counts(valid)[0] if valid else None

    def keep(ks, share):
        valid = [x for x in ks if x is not None]
        return bool(valid) and majority_holds(valid, share)
    return ([vote(keys[v][:k]) for v in plan.votes], [keep(keys[v][:k], s) for v, s in plan.majorities])


def _oracle_stop(plan: EarlyStop, keys: dict, n: int) -> int:
    final = _outcome(plan, keys, n)
    return next(k for k in range(1, n + 1) if _outcome(plan, keys, k) == final)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", nargs="*", default=list(JOBS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--work", default=None, help="where the compiled folders go (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="s2c-early-stop-"))
    results = {}
    for job in args.jobs:
        program, spec, limit = JOBS[job]
        data = s2c.Data(spec, limit=limit)
        off = compile_once(program, data, work / job / "off", False)
        on = compile_once(program, data, work / job / "on", True)
        results[job] = {"off": off, "on": on, "oracle": replay(program, Path(off["out"]), Path(on["out"]))}
        print(json.dumps({job: results[job]}, indent=1), flush=True)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def table(results: dict) -> str:
    lines = ["| job | early stop | kept | samples not drawn | copies not run | generated tokens | per kept row | "
             "engine calls | per kept row | wall s | per kept row | train.jsonl md5 | curation.jsonl md5 |",
             "|" + "---|" * 13]
    for job, r in results.items():
        for side in ("off", "on"):
            x = r[side]
            lines.append(f"| {job} | {'on' if x['early_stop'] else 'off'} | {x['kept']}/{x['inputs']} | "
                         f"{x['not_drawn']} | {x['copies_not_run']} | "
                         f"{x['generated_tokens']:,} | {x['tokens_per_kept_row']:,} | {x['engine_calls']:,} | "
                         f"{x['calls_per_kept_row']} | {x['wall_seconds']} | {x['seconds_per_kept_row']} | "
                         f"`{x['train_md5'][:12]}` | `{x['curation_md5'][:12]}` |")
    lines += ["", "| job | sampled calls | tokens, all samples | early stop (replayed) | lossless bound | oracle | "
                  "saving | bound's saving | oracle's saving | share of the oracle's | the run stopped where the rule says |",
              "|" + "---|" * 11]
    for job, r in results.items():
        o = r["oracle"]
        if not o["calls"]:
            lines.append(f"| {job} | 0 | - | - | - | - | - | - | - | - | - |")
            continue
        saved, best = o["tokens_all"] - o["tokens_rule"], o["tokens_all"] - o["tokens_oracle"]
        bound = o["tokens_all"] - o["tokens_bound"]
        lines.append(f"| {job} | {o['calls']} | {o['tokens_all']:,} | {o['tokens_rule']:,} | {o['tokens_bound']:,} | "
                     f"{o['tokens_oracle']:,} | {saved / o['tokens_all']:.1%} | {bound / o['tokens_all']:.1%} | "
                     f"{best / o['tokens_all']:.1%} | "
                     f"{saved / best if best else 1:.1%} | {o['rule_matches_run']}/{o['calls']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
