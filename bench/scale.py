"""Scale-out on this machine: one vLLM engine against `--engine ray --replicas 1|2` and `--shards 2`
on a local two-node Ray cluster (tests/helpers/ray_cluster.py), the same program and rows each
time. Reports wall time, the engines' start-up and the calls' seconds, and how many call
outputs differ from the single engine's: in normal batched settings bf16 numerics change with
batch shape; `--deterministic` (greedy as shipped, plus `max_num_seqs=1` and no prefix caching)
is the setting in which they must all be equal. `--compile` runs `s2c compile` instead of
`s2c run` and also compares the dataset files.

    .venv/bin/python bench/scale.py [--program programs/bsm.s2] [--limit 16] [--json out.json]
    .venv/bin/python bench/scale.py --deterministic --compile --ways vllm ray2 shards2

Results: docs/scale.md, "Measured here".
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def outputs(run: Path, program: str) -> dict:
    from s2c.compiler.pipeline import load_program
    from s2c.runtime.store import RunStore

    store = RunStore.open(run, load_program(program))
    try:
        return {r.id: {nid: [i.get("completions") for i in n.get("instances", ())] for nid, n in r.trace["nodes"].items()}
                for r in store.all()}
    finally:
        store.close()


def main() -> None:
    from helpers.ray_cluster import cluster

    ap = argparse.ArgumentParser()
    ap.add_argument("--program", default="programs/bsm.s2")
    ap.add_argument("--data", default=f"oasst2:{REPO / 'tests/fixtures/data/oasst2_sample.jsonl'}")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--json", default=None)
    ap.add_argument("--deterministic", action="store_true", help="max_num_seqs=1, no prefix caching")
    ap.add_argument("--compile", action="store_true", help="s2c compile, and compare the dataset files too")
    ap.add_argument("--ways", nargs="+", default=["vllm", "ray1", "ray2", "shards2"],
                    choices=["vllm", "ray1", "ray2", "shards2"], help="vllm always runs first: the reference")
    args = ap.parse_args()
    det = ["--vllm-arg", "max_num_seqs=1", "--vllm-arg", "enable_prefix_caching=false"] if args.deterministic else []
    s2c = str(Path(sys.executable).parent / "s2c")
    results = {}
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp)) as c:
        ray = ["--engine", "ray", "--ray-address", c.address]
        ways = {"vllm": ("vllm", ["--engine", "vllm"]), "ray1": ("ray, 1 replica", [*ray, "--replicas", "1"]),
                "ray2": ("ray, 2 replicas", [*ray, "--replicas", "2"]), "shards2": ("ray, 2 shards", [*ray, "--shards", "2"])}
        for key in dict.fromkeys(["vllm", *args.ways]):
            name, flags = ways[key]
            out = Path(tmp) / key
            t0 = time.time()
            r = subprocess.run([s2c, "compile" if args.compile else "run", args.program, "--data", args.data,
                                "--limit", str(args.limit), "--out", str(out), "--no-cache", "--no-progress",
                                *det, *flags],
                               check=False, capture_output=True, text=True, cwd=REPO)
            total = time.time() - t0
            if r.returncode != 0:
                sys.exit(f"{name}: exit {r.returncode}\n{r.stderr[-3000:]}")
            run = out / "run" if args.compile else out  # compile keeps the run in OUT/run
            s = json.loads((run / "summary.json").read_text())
            got = outputs(run, args.program)
            base = results.get("vllm", {}).get("_outputs", got)
            calls = [(k, nid, i) for k, v in base.items() for nid, inst in v.items() for i in range(len(inst))]
            differ = sum(1 for k, nid, i in calls if got.get(k, {}).get(nid, [None] * (i + 1))[i] != base[k][nid][i])
            files = {p.name: p.read_text() for p in sorted(out.glob("*.jsonl"))}
            base_files = results.get("vllm", {}).get("_files", files)
            results[name] = {"command_seconds": round(total, 1), "run_seconds": s["wall_seconds"],
                             "seconds_less_startup": round(s["wall_seconds"] - s["engine_startup_seconds"], 1),
                             "engine_calls": s["engine_calls"], "generated_tokens": s["generated_tokens"],
                             "calls_differing_from_vllm": differ, "calls": len(calls), "_outputs": got,
                             **({"dataset_files": len(files), "dataset_rows": sum(t.count("\n") for t in files.values()),
                                 "dataset_equals_vllm": files == base_files, "_files": files} if args.compile else {})}
            print(f"{name:16} command {total:6.1f} s · run {s['wall_seconds']:6.1f} s "
                  f"({s['wall_seconds'] - s['engine_startup_seconds']:.1f} s less start-up) · {s['engine_calls']} calls · "
                  f"{s['generated_tokens']} tokens · {differ}/{len(calls)} calls differ from vllm"
                  + (f" · dataset {'equals' if files == base_files else 'DIFFERS from'} vllm's" if args.compile else ""),
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({k: {f: v for f, v in r.items() if not f.startswith("_")}
                                               for k, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
