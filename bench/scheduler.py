"""s2c vs a naive loop vs a hand-written batched script, on the same inputs, one vLLM engine.

    python bench/scheduler.py --inputs 64 --max-tokens 32 --programs bsm rar_2step

Three ways, same prompts (rendered from the same .s2 templates), same sampling, the same
vllm.LLM, prefix cache reset between ways:
  s2c        the Executor (dataflow, engine chunks of --chunk requests, no call cache)
  naive      each example's calls one after another, one request per LLM call
  batched    a hand-written script: each stage's prompts for all examples in one LLM.chat call
Reports wall time, calls, generated tokens, tokens/s and the ratios, as JSON lines.
--max-tokens caps every call's budget so the naive way finishes on a CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

from s2c.compiler import ir
from s2c.compiler.pipeline import load_program
from s2c.compiler.templates import render
from s2c.data import load_source
from s2c.runtime.cache import CallCache
from s2c.runtime.engines import make_engine
from s2c.runtime.engines.base import Message, Request
from s2c.runtime.executor import Executor, RunOptions
from s2c.runtime.values import ExampleValues


def capped(cp: ir.CheckedProgram, max_tokens: int) -> ir.CheckedProgram:
    for node in cp.llm_nodes():
        node.sampling = dataclasses.replace(node.sampling, max_tokens=min(node.sampling.max_tokens, max_tokens))
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


def reset(engine):
    for llm in engine._llms.values():
        llm.reset_prefix_cache()


def way_s2c(cp, rows, engine, chunk):
    """The executor streaming into the engine (window of `chunk` requests), no call cache."""
    ex = Executor(cp, engine, cache=CallCache(None), options=RunOptions(window=chunk))
    totals = ex.run(rows)
    calls = sum(s.engine_calls for s in ex.stats.values())
    tokens = sum(s.generated_tokens for s in ex.stats.values())
    return calls, tokens, totals


class _Counting:
    """Wraps the engine to count calls and tokens for the hand-written ways."""

    def __init__(self, engine):
        self.engine, self.calls, self.tokens = engine, 0, 0

    def generate(self, reqs):
        out = self.engine.generate(reqs)
        self.calls += len(reqs)
        self.tokens += sum(c.completion_tokens for r in out if isinstance(r, list) for c in r)
        return out


def _stage_requests(cp, node, vals: ExampleValues):
    """The requests one node needs for one example, rendered like s2c renders them."""
    insts = vals.instances(node)
    reqs = []
    for p in insts:
        v = vals.template_vars(node, p)
        prompt = render(node.prompt.value, v)
        reqs.append((p, Request(messages=(Message("user", prompt),), sampling=node.sampling)))
    return reqs


def _run_transforms(cp, vals, upto_rank, order):
    for nid in order:
        node = cp.nodes[nid]
        if node.kind == "transform" and nid not in vals.store:
            try:
                for p in vals.instances(node):
                    vals.set(nid, p, vals.eval(node.expr, p, node.loops, nid))
            except KeyError:
                pass  # needs an LLM node not run yet


def way_naive(cp, rows, engine, order):
    eng = _Counting(engine)
    for _, row in rows:
        vals = ExampleValues(cp, row)
        for nid in order:
            node = cp.nodes[nid]
            if node.kind == "llm":
                for p, req in _stage_requests(cp, node, vals):  # one call at a time
                    (res,) = eng.generate([req])
                    texts = [c.text for c in res]
                    vals.set(nid, p, texts if node.sampling.n > 1 else texts[0])
            else:
                for p in vals.instances(node):
                    vals.set(nid, p, vals.eval(node.expr, p, node.loops, nid))
    return eng.calls, eng.tokens


def way_batched(cp, rows, engine, order):
    """What a careful person writes by hand: stage by stage, all examples' prompts at once."""
    eng = _Counting(engine)
    allvals = [ExampleValues(cp, row) for _, row in rows]
    for nid in order:
        node = cp.nodes[nid]
        if node.kind == "llm":
            batch, where = [], []
            for k, vals in enumerate(allvals):
                for p, req in _stage_requests(cp, node, vals):
                    batch.append(req)
                    where.append((k, p))
            for (k, p), res in zip(where, eng.generate(batch)):
                texts = [c.text for c in res]
                allvals[k].set(nid, p, texts if node.sampling.n > 1 else texts[0])
        else:
            for vals in allvals:
                for p in vals.instances(node):
                    vals.set(nid, p, vals.eval(node.expr, p, node.loops, nid))
    return eng.calls, eng.tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", nargs="+", default=["bsm", "rar_2step"])
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--ways", nargs="+", default=["s2c", "batched", "naive"])
    a = ap.parse_args()
    engine = make_engine("vllm", None)
    try:
        for name in a.programs:
            cp = capped(load_program(f"{name}.s2"), a.max_tokens)
            order = [n for n in cp.nodes if cp.nodes[n].kind != "input"]
            rows = inputs_for(name, a.inputs)
            times = {}
            for way in a.ways:
                reset(engine)
                t0 = time.perf_counter()
                if way == "s2c":
                    calls, tokens, _ = way_s2c(cp, rows, engine, a.chunk)
                elif way == "naive":
                    calls, tokens = way_naive(cp, rows, engine, order)
                else:
                    calls, tokens = way_batched(cp, rows, engine, order)
                dt = time.perf_counter() - t0
                times[way] = dt
                print(json.dumps({"program": name, "way": way, "inputs": len(rows), "max_tokens": a.max_tokens,
                                  "seconds": round(dt, 1), "calls": calls, "generated_tokens": tokens,
                                  "tokens_per_second": round(tokens / dt, 1)}), flush=True)
            if "s2c" in times:
                print(json.dumps({"program": name, "ratios": {
                    f"s2c/{w}": round(times["s2c"] / times[w], 3) for w in times if w != "s2c"}}), flush=True)
    finally:
        engine.close()


if __name__ == "__main__":
    main()
