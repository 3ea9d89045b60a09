"""s2c's own scheduling overhead and memory: BSM over N inputs on a zero-latency engine.

    python bench/overhead.py --inputs 10000 100000 1000000 [--cache] [--dspy 2000]

Everything but the model is real: rows streamed in, rendering, cache keys (with --cache), the
dataflow, transforms, traces and the run store on disk. Each size runs in a fresh process, so
its peak RSS is its own. Reports LLM calls scheduled per second and peak RSS; with --dspy N, the
same program in DSPy on a zero-latency LM (bench/dspy_bsm.py, in bench/.venv-dspy made by
bench/setup_dspy.sh) runs in the same invocation, for reference.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAN = "1. Helpfulness: is it helpful\n2. Accuracy: is it right\n3. Relevance\n4. Clarity\n5. Depth"
HERE = Path(__file__).parent
KEY = 160  # characters of a BSM prompt that tell its three templates apart


def zero_latency_bsm():
    """BSM's checked program and an engine that answers its three prompts instantly."""
    from s2c.compiler.pipeline import load_program
    from s2c.runtime.engines.base import BatchStream, Completion

    class ZeroLatency(BatchStream):
        """Answers instantly with fixed text; counts requests."""

        name = "zero"
        requests = 0

        def model_id(self, role="default"):
            return "zero"

        def generate(self, requests):
            self.requests += len(requests)
            return [[REPLY[r.messages[-1].content[:KEY]]] * r.sampling.n for r in requests]

    cp = load_program("bsm.s2")
    # the reply by prompt (branch, solve, merge), told apart by their fixed first words
    REPLY = {cp.nodes[n].prompt.value[:KEY]: Completion(text, 100, 5)
             for n, text in (("branch", PLAN), ("solve", "7\n5"), ("merge", "[[A]]"))}
    assert len(REPLY) == 3
    return cp, ZeroLatency()


def bsm_rows(n: int):
    return ((f"q{i}", {"question": f"Question number {i}?", "response_a": f"a {i}", "response_b": f"b {i}"})
            for i in range(n))


def bench(n: int, cache: bool, window: int) -> dict:
    from s2c.runtime.cache import CallCache
    from s2c.runtime.executor import Executor, RunOptions
    from s2c.runtime.store import RunStore

    cp, eng = zero_latency_bsm()
    rows = bsm_rows(n)
    tmp = Path(tempfile.mkdtemp())
    (tmp / "run").mkdir()
    store = RunStore.create(tmp / "run", cp, {})
    ex = Executor(cp, eng, cache=CallCache(tmp / "c.sqlite" if cache else None), options=RunOptions(window=window),
                  store=store)
    t0, cpu0 = time.perf_counter(), time.process_time()
    totals = ex.run(rows)
    store.close()
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert totals.ok == n and eng.requests == 7 * n and len(RunStore.open(tmp / "run")) == n
    store_mb = round((tmp / "run" / "run.sqlite").stat().st_size / 2**20)
    shutil.rmtree(tmp)  # 7.8 GB at 1M inputs
    return {"system": "s2c", "inputs": n, "cache": cache, "window": window, "calls": eng.requests,
            "seconds": round(dt, 2), "calls_per_second": round(eng.requests / dt),
            "cpu_seconds": round(cpu, 2),  # steadier than wall time when the VM's disk writeback stalls
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "store_mb": store_mb}


def in_fresh_process(args: list[str]) -> dict:
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--cache", action="store_true", help="with the SQLite call cache (default: off)")
    ap.add_argument("--window", type=int, default=512, help="requests in the engine at once")
    ap.add_argument("--dspy", type=int, default=0, metavar="N", help="also DSPy over N inputs (call and batch)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child process: one size
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(bench(a.one, a.cache, a.window)))
        raise SystemExit(0)
    for n in a.inputs:
        print(json.dumps(in_fresh_process([sys.executable, __file__, "--one", str(n), "--window", str(a.window)]
                                          + (["--cache"] if a.cache else []))), flush=True)
    if a.dspy:
        py = HERE / ".venv-dspy" / "bin" / "python"
        if not py.exists():
            raise SystemExit("no bench/.venv-dspy: run bash bench/setup_dspy.sh first")
        for mode in ("call", "batch"):
            print(json.dumps(in_fresh_process([str(py), str(HERE / "dspy_bsm.py"), "--inputs", str(a.dspy),
                                               "--mode", mode])), flush=True)
