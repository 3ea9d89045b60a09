"""The long fuzz profile: N generated programs through `s2c check`, in-process.

    .venv/bin/python scripts/fuzz.py                      # 100,000 cases
    .venv/bin/python scripts/fuzz.py --cases 2000 --out /tmp/fuzz   # OUT: /tmp/s2c-fuzz by default

The cases and the property are tests/fuzz_programs.py's, as in the fast profile
(tests/test_fuzz_programs.py). Cases are drawn by hypothesis in batches, batch k with seed
SEED + k, so a run is reproducible and memory stays flat; no shrinking, no example database.
A failure does not stop the run: failures are grouped by signature (exception type and the
innermost frame in s2c's code), the first case of each saved to OUT/failure-N.s2. Prints the
cases, the failures, the p50/p99/max check time, and saves the slowest case to OUT/slowest.s2.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzz_programs as fz
from hypothesis import HealthCheck, Phase, given, seed, settings


def _text(case) -> str:
    """A case as one text: the program, then any other file it comes with."""
    if isinstance(case, str):
        return case
    main, files = case
    return main + "".join(f"\n# ---- {name}\n{body}" for name, body in files.items())


class Stats:
    def __init__(self, out: Path):
        self.out = out
        self.times: list[float] = []
        self.failures: dict[str, list] = {}  # signature -> [count, number, first case]
        self.slowest = (0.0, "")

    def add(self, case, out: fz.Outcome):
        self.times.append(out.seconds)
        if out.seconds > self.slowest[0]:
            self.slowest = (out.seconds, _text(case))
        if not out.failed:
            return
        if out.signature not in self.failures:  # saved at once: a long run may be stopped
            n = len(self.failures) + 1
            detail = "".join(traceback.format_exception(out.error)) if out.error else \
                "\n".join(out.problems) + "\n\n" + out.stderr
            (self.out / f"failure-{n}.s2").write_bytes(_text(case).encode("utf-8", "surrogateescape"))
            (self.out / f"failure-{n}.txt").write_text(f"{out.signature}\n\n{detail}", encoding="utf-8")
            self.failures[out.signature] = [0, n, case]
        self.failures[out.signature][0] += 1

    def quantile(self, q: float) -> float:
        xs = sorted(self.times)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def run_batch(stats: Stats, folder: Path, strategy, n: int, batch_seed: int):
    @seed(batch_seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def one(case):
        stats.add(case, fz.run_case(case, folder))

    one()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2_000, help="cases per hypothesis run (one seed each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None, help="stop after the batch that passes this")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "s2c-fuzz",
                    help="where failures, the slowest case and summary.json go (default: %(default)s)")
    args = ap.parse_args(argv)

    folder = fz.workspace(args.out / "work")
    stats, start, k = Stats(args.out), time.time(), 0
    strategy = fz.programs()
    while len(stats.times) < args.cases:
        run_batch(stats, folder, strategy, min(args.batch, args.cases - len(stats.times)), args.seed + k)
        k += 1
        elapsed = time.time() - start
        print(f"{len(stats.times):,} cases, {sum(c for c, _, _ in stats.failures.values()):,} failures, "
              f"p99 {stats.quantile(0.99) * 1000:.1f} ms, {elapsed / 60:.1f} min", file=sys.stderr, flush=True)
        if args.minutes is not None and elapsed > args.minutes * 60:
            break

    summary = {
        "cases": len(stats.times), "batches": k, "seed": args.seed, "wall_seconds": round(time.time() - start, 1),
        "failures": sum(c for c, _, _ in stats.failures.values()),
        "signatures": {sig: {"cases": c, "first": f"failure-{n}.s2"}
                       for sig, (c, n, _) in sorted(stats.failures.items(), key=lambda kv: -kv[1][0])},
        "check_seconds": {"p50": round(stats.quantile(0.50), 4), "p99": round(stats.quantile(0.99), 4),
                          "max": round(stats.slowest[0], 4)},
    }
    (args.out / "slowest.s2").write_bytes(stats.slowest[1].encode("utf-8", "surrogateescape"))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    print(f"slowest case ({stats.slowest[0]:.3f} s): {args.out / 'slowest.s2'}")
    return 1 if stats.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
