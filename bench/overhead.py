"""s2c's own scheduling overhead: BSM over N inputs on a zero-latency fake engine.

    python bench/overhead.py --inputs 10000 [--cache]

Reports LLM calls scheduled per second (target >= 20,000/s) and peak memory as inputs grow.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from s2c.compiler.pipeline import load_program
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.base import Completion
from s2c.runtime.executor import Executor

PLAN = "1. Helpfulness: is it helpful\n2. Accuracy: is it right\n3. Relevance\n4. Clarity\n5. Depth"


class ZeroLatency:
    """Answers instantly with fixed text; counts requests."""

    name = "zero"

    def __init__(self):
        self.requests = 0

    def model_id(self, role="default"):
        return "zero"

    def generate(self, requests):
        self.requests += len(requests)
        out = []
        for r in requests:
            text = r.messages[-1].content
            reply = PLAN if "Evaluation Plan" in text else ("[[A]]" if "[Evaluation of" in text else "7\n5")
            out.append([Completion(reply, 100, 5)] * r.sampling.n)
        return out

    def close(self):
        pass


def bench(n: int, cache: bool, chunk: int) -> dict:
    cp = load_program("bsm.s2")
    rows = [(f"q{i}", {"question": f"Question number {i}?", "response_a": f"a {i}", "response_b": f"b {i}"})
            for i in range(n)]
    def once(trace_memory: bool):
        eng = ZeroLatency()
        cc = CallCache(Path(tempfile.mkdtemp()) / "c.sqlite" if cache else None)
        if trace_memory:
            tracemalloc.start()
        t0 = time.perf_counter()
        results = Executor(cp, eng, cache=cc, chunk_size=chunk).run(rows)
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
        tracemalloc.stop()
        assert all(r.ok for r in results) and eng.requests == 7 * n
        return eng, dt, peak

    eng, dt, _ = once(False)  # the rate, without tracemalloc's 2-3x slowdown
    _, _, peak = once(True)  # the memory
    return {"inputs": n, "cache": cache, "chunk": chunk, "calls": eng.requests, "seconds": round(dt, 2),
            "calls_per_second": round(eng.requests / dt), "peak_python_mb": round(peak / 2**20, 1),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--chunk", type=int, default=512)
    a = ap.parse_args()
    for n in a.inputs:
        print(json.dumps(bench(n, a.cache, a.chunk)))
