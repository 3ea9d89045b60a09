"""s2c vs a hand-written per-stage script vs a naive loop, on the same inputs, one vLLM engine.

    python bench/scheduler.py --inputs 64 --max-tokens 64 --programs bsm rar_2step --repeats 3 \
        --block-size 32 --plot 'docs/img/scheduler-load-{program}.png' --traces /tmp/traces.json

Same prompts (rendered from the same .s2 templates), same greedy sampling, the same vllm.LLM,
its prefix cache reset before every run:
  s2c        the Executor: each example's next calls join the engine's batch as soon as their
             own inputs are done (a window of --window requests, no call cache)
  batched    a hand-written script: stage by stage, every example's prompts of a stage in one
             batch, and the next stage starts when the whole batch is back
  naive      each example's calls one after another (--naive, once per program: slow)
s2c and batched run --repeats times each, interleaved (their order alternates), and are judged
by their medians. Reported per run: wall time, calls, generated tokens, the prefix-cache hit
rate per node (prompt tokens vLLM's prefix cache served), the prompt tokens left to prefill,
how many examples' outputs and how many calls' texts differ from the first batched run's on the
same inputs and seeds (the per-stage batches are the chunked path); and a load
trace (requests vLLM is running, sampled every 0.1 s on a thread: runtime/load.py) that --plot
draws for the last run of each way, one PNG per program.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections import defaultdict

from s2c.compiler import ir
from s2c.compiler.pipeline import load_program
from s2c.compiler.system1 import render_request
from s2c.data import load_source
from s2c.runtime.cache import CallCache
from s2c.runtime.engines import make_engine
from s2c.runtime.executor import Executor, RunOptions
from s2c.runtime.load import LoadSampler
from s2c.runtime.plan import Plan
from s2c.runtime.values import ExampleValues, to_json


def capped(cp: ir.CheckedProgram, max_tokens: int, seed: int) -> ir.CheckedProgram:
    """Every call's budget capped; sampled calls seeded, so that the ways can be compared."""
    for node in cp.llm_nodes():
        s = node.sampling
        node.sampling = dataclasses.replace(s, max_tokens=min(s.max_tokens, max_tokens),
                                            seed=s.seed if s.seed is not None or s.temperature <= 0 else seed)
    return cp


def inputs_for(name: str, n: int) -> list[tuple[str, dict]]:
    rows = load_source("coin_flip:test", limit=n).rows
    if name == "bsm":  # a judge needs two responses: a right and a wrong one, in varying order
        out = []
        for i, r in enumerate(rows):
            good, bad = f"The answer is {r['answer']}.", f"The answer is {'no' if r['answer'] == 'yes' else 'yes'}."
            a, b = (good, bad) if i % 2 else (bad, good)
            out.append((r["id"], {"question": r["question"], "response_a": a, "response_b": b}))
        return out
    return [(r["id"], {"question": r["question"]}) for r in rows]


class Outputs:
    """Stands in for the run store: keeps each example's outputs and LLM texts for comparing."""

    def __init__(self, cp):
        self.llm = {n.id for n in cp.llm_nodes()}
        self.outputs, self.texts = {}, {}

    def add(self, seq, ex_id, source, variant, status, record, state, tag=None):
        self.outputs[ex_id] = record["outputs"]
        self.texts[ex_id] = {nid: {tuple(p): v for p, v in inst} for nid, inst in state.items() if nid in self.llm}


def way_s2c(cp, rows, engine, window):
    """The executor streaming into the engine, no call cache."""
    kept = Outputs(cp)
    ex = Executor(cp, engine, cache=CallCache(None), options=RunOptions(window=window), store=kept)
    ex.run(rows)
    prefix = {nid: (s.prefix_cached_tokens, s.engine_prompt_tokens) for nid, s in ex.stats.items() if s.engine_calls}
    calls = sum(s.engine_calls for s in ex.stats.values())
    tokens = sum(s.generated_tokens for s in ex.stats.values())
    return calls, tokens, prefix, kept.outputs, kept.texts


def _stage(cp, node, vals: ExampleValues):
    """One node's requests for one example, rendered as s2c renders them."""
    return [(p, render_request(node, vals.template_vars(node, p))) for p in vals.instances(node)]


def _by_hand(cp, rows, engine, order, batch_of):
    """Run the program by hand; `batch_of(node, allvals)` yields the groups sent together."""
    plan = Plan(cp)
    allvals = [ExampleValues(plan, row) for _, row in rows]
    calls = tokens = 0
    prefix = defaultdict(lambda: [0, 0])
    for nid in order:
        node = cp.nodes[nid]
        if node.kind != "llm":
            for vals in allvals:
                for p in vals.instances(node):
                    vals.set(nid, p, vals.eval(node.expr, p, node.loops, nid))
            continue
        for group in batch_of(node, allvals):
            results = engine.generate([req for _, _, req in group])
            for (k, p, _), res in zip(group, results):
                texts = [c.text for c in res]
                allvals[k].set(nid, p, texts if node.sampling.n > 1 else texts[0])
                calls += 1
                tokens += sum(c.completion_tokens for c in res)
                prefix[nid][0] += res[0].cached_tokens
                prefix[nid][1] += res[0].prompt_tokens
    outputs = {ex_id: to_json({o: vals.lookup(ref, (), ()) for o, ref in cp.outputs.items()})
               for (ex_id, _), vals in zip(rows, allvals)}
    texts = {ex_id: {n.id: dict(vals.store.get(n.id, {})) for n in cp.llm_nodes()}
             for (ex_id, _), vals in zip(rows, allvals)}
    return calls, tokens, {k: tuple(v) for k, v in prefix.items()}, outputs, texts


def way_batched(cp, rows, engine, order):
    """What a careful person writes by hand: each stage's prompts for all examples at once."""
    def stage(node, allvals):
        yield [(k, p, req) for k, vals in enumerate(allvals) for p, req in _stage(cp, node, vals)]
    return _by_hand(cp, rows, engine, order, stage)


def way_naive(cp, rows, engine, order):
    """One call at a time, nothing batched (stage by stage: with one call in the engine at a
    time the order does not change the time, and the code is the batched way's)."""
    def one_by_one(node, allvals):
        for k, vals in enumerate(allvals):
            for p, req in _stage(cp, node, vals):
                yield [(k, p, req)]
    return _by_hand(cp, rows, engine, order, one_by_one)


def differ(a_out, a_texts, b_out, b_texts) -> dict:
    outs = sum(a_out[k] != b_out.get(k) for k in a_out)
    calls = sum(v != b_texts.get(k, {}).get(nid, {}).get(p)
                for k, nodes in a_texts.items() for nid, inst in nodes.items() for p, v in inst.items())
    return {"outputs_differ": outs, "call_texts_differ": calls}


def plot(traces: dict, path: str, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for way, trace in traces.items():
        ax.step([t for t, _, _ in trace], [r for _, r, _ in trace], where="post", label=f"{way}: running")
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests in vLLM's running batch")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", nargs="+", default=["bsm", "rar_2step"])
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--window", type=int, default=1024, help="s2c: requests in the engine at once")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive", action="store_true", help="also the naive way, once per program (slow)")
    ap.add_argument("--block-size", type=int, default=None, help="vLLM's KV block size (prefix-cache granularity)")
    ap.add_argument("--seed", type=int, default=1234, help="the seed of every sampled call (both ways)")
    ap.add_argument("--plot", default=None, help="PNG per program ({program} in the path): the last runs' load traces")
    ap.add_argument("--traces", default=None, help="JSON: every run's load trace")
    a = ap.parse_args()
    engine = make_engine("vllm", None, **({"block_size": a.block_size} if a.block_size else {}))
    all_traces = {}
    try:
        for name in a.programs:
            cp = capped(load_program(f"{name}.s2"), a.max_tokens, a.seed)
            order = [n for n in cp.nodes if cp.nodes[n].kind != "input"]
            rows = inputs_for(name, a.inputs)
            ways = {"s2c": lambda: way_s2c(cp, rows, engine, a.window),
                    "batched": lambda: way_batched(cp, rows, engine, order),
                    "naive": lambda: way_naive(cp, rows, engine, order)}
            plan = [w for r in range(a.repeats) for w in (("s2c", "batched") if r % 2 == 0 else ("batched", "s2c"))]
            plan += ["naive"] if a.naive else []
            seconds, last, kept = defaultdict(list), {}, []
            for i, way in enumerate(plan):
                for llm in engine._llms.values():
                    llm.reset_prefix_cache()
                trace = []
                with LoadSampler(engine, lambda t, _, running, waiting: trace.append((t, running, waiting)), 0.1):
                    t0 = time.perf_counter()
                    calls, tokens, prefix, outputs, texts = ways[way]()
                    dt = time.perf_counter() - t0
                seconds[way].append(dt)
                last[way] = trace
                all_traces[f"{name}/{way}/{i}"] = trace
                kept.append((i, way, outputs, texts))
                line = {"program": name, "way": way, "run": i, "inputs": len(rows), "max_tokens": a.max_tokens,
                        "seconds": round(dt, 1), "calls": calls, "generated_tokens": tokens,
                        "tokens_per_second": round(tokens / dt, 1),
                        "prefix_cache_hit_rate": {nid: round(c / p, 3) if p else None for nid, (c, p) in prefix.items()},
                        "prompt_tokens": sum(p for _, p in prefix.values()),
                        "prompt_tokens_computed": sum(p - c for c, p in prefix.values()),  # prefill not served by the cache
                        "peak_running": max((r for _, r, _ in trace), default=0),
                        "mean_running": round(statistics.fmean(r for _, r, _ in trace), 1) if trace else None}
                print(json.dumps(line), flush=True)
            ref = next(((o, t) for _, w, o, t in kept if w == "batched"), None)  # none with --repeats 0
            if ref is not None:
                print(json.dumps({"program": name, "differ_from_first_batched_run": {
                    f"{w}/{i}": differ(o, t, *ref) for i, w, o, t in kept}}), flush=True)
            med = {w: statistics.median(v) for w, v in seconds.items()}
            print(json.dumps({"program": name, "medians": {w: round(v, 1) for w, v in med.items()},
                              "ratios": {f"s2c/{w}": round(med["s2c"] / v, 3) for w, v in med.items()
                                         if w != "s2c" and "s2c" in med}}),
                  flush=True)
            if a.plot:
                plot({w: last[w] for w in ("s2c", "batched") if w in last}, a.plot.format(program=name),
                     f"{name}, {len(rows)} inputs, max_tokens {a.max_tokens}: vLLM's running batch")
    finally:
        engine.close()
    if a.traces:
        with open(a.traces, "w") as f:
            json.dump(all_traces, f)


if __name__ == "__main__":
    main()
