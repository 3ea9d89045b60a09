"""What writing one finished example to the run store costs: BSM's records, replayed.

    python bench/store_write.py [--inputs 5000] [--repeat 5]

Runs BSM over N inputs on the zero-latency engine (bench/overhead.py) and keeps every record the
executor hands the store, in the order it did; then writes them into a fresh run store `repeat`
times and reports CPU microseconds per example (min and median over the repeats), beside the
encoding alone, the file's size, and the time to read every example back in input order. CPU
time rather than wall time: the page cache's writeback on this VM moves wall time by +-20 %.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from overhead import bsm_rows, zero_latency_bsm


def capture(n: int) -> tuple:
    from s2c.runtime.executor import Executor, RunOptions

    class Capture:  # the executor's store: anything with .add(...)
        def __init__(self):
            self.records: list[tuple] = []

        def add(self, *record):
            self.records.append(record)

    cp, eng = zero_latency_bsm()
    store = Capture()
    Executor(cp, eng, options=RunOptions(), store=store).run(bsm_rows(n))
    return cp, store.records


def per_example(seconds: float, n: int) -> float:
    return round(seconds / n * 1e6, 1)


if __name__ == "__main__":
    from s2c.runtime import store as run_store
    from s2c.runtime.store import RunStore, _encode

    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    cp, records = capture(a.inputs)
    n = len(records)
    t0 = time.process_time()
    for r in records:
        _encode(r[5]), _encode(r[6])
    encode = per_example(time.process_time() - t0, n)
    writes, reads = [], []
    for _ in range(a.repeat):
        tmp = Path(tempfile.mkdtemp())
        store = RunStore.create(tmp, cp, {})
        t0 = time.process_time()
        for r in records:
            store.add(*r)
        store.close()
        writes.append(per_example(time.process_time() - t0, n))
        mb = round((tmp / "run.sqlite").stat().st_size / 2**20)
        t0 = time.process_time()
        reader = RunStore.open(tmp, cp)
        assert sum(1 for _ in reader.all()) == n
        reader.close()
        reads.append(per_example(time.process_time() - t0, n))
        shutil.rmtree(tmp)
    print(json.dumps({"examples": n, "page_size": getattr(run_store, "PAGE_SIZE", 4096), "encode_us": encode,
                      "write_us_min": min(writes), "write_us_median": statistics.median(writes),
                      "read_us_median": statistics.median(reads), "store_mb": mb, "writes": writes}))
