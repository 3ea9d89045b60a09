"""vLLM vs transformers on this machine: start-up time and generation speed at batch 1 and 8.

    python bench/engines.py                       # both engines, the embedded model
    python bench/engines.py --engines "hf hf:threads=1" --max-tokens 32 --json out.json

Each engine runs in its own fresh process, so start-up includes importing the package and
loading the model (what a user waits for), and neither run is slowed by the other's memory.
Every request is greedy with the same prompts, so both engines generate (nearly) the same
tokens; speed is generated tokens per second of wall time. Batch 1 sends the prompts one per
generate() call, batch 8 sends them in one call. Results go into docs/benchmarks.md by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short story about a robot who learns to paint.",
    "What are the main causes of the French Revolution?",
    "Describe how a bicycle works.",
    "Give three tips for learning a new language.",
    "What is the difference between weather and climate?",
    "Summarize the plot of Romeo and Juliet.",
    "How do vaccines train the immune system?",
]
TOPICS = [
    "photosynthesis", "compound interest", "black holes", "the printing press", "plate tectonics",
    "machine learning", "the water cycle", "supply and demand", "DNA replication", "the Roman Empire",
    "electric cars", "jazz music", "the internet", "volcanoes", "honey bees", "the stock market",
    "recycling", "the moon landing", "antibiotics", "renewable energy", "chess openings",
    "the human heart", "coffee brewing", "earthquakes",
]
AUDIENCES = ["a child", "a farmer", "a pilot", "a poet", "a chef", "a nurse", "a judge", "a sailor", "a miner"]
# batches above 8 use more, distinct prompts (repeating one would flatter vLLM's prefix cache): 32,
# then 216 more for batches up to 248 (`--batches 64,128,248`: how tokens/s grows with the batch)
MORE_PROMPTS = (PROMPTS + [f"Explain {t} in simple terms." for t in TOPICS]
                + [f"Explain {t} to {a}." for a in AUDIENCES for t in TOPICS])


def parse_spec(spec: str) -> tuple[str, dict]:
    """`hf:threads=1,batch_size=8` -> ("hf", {"threads": 1, "batch_size": 8})."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key] = int(value) if value.isdigit() else value
    return name, options


def measure(spec: str, max_tokens: int, repeats: int, batches: list[int]) -> dict:
    """Runs inside the child process: build the engine, time it, return the numbers."""
    from s2c.runtime.engines import make_engine
    from s2c.runtime.engines.base import Message, Request, Sampling

    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    requests = [Request(messages=(Message("user", p),), sampling=sampling) for p in MORE_PROMPTS]
    name, options = parse_spec(spec)
    start = time.perf_counter()
    engine = make_engine(name, log=lambda *a: None, **options)
    startup = time.perf_counter() - start
    engine.generate(requests[:1])  # warm-up: first-call allocations, kernel selection
    row = {"engine": spec, "startup_s": round(startup, 1)}
    for batch in batches:
        todo = requests[: max(batch, len(PROMPTS))]
        best = None
        for _ in range(repeats):
            t = time.perf_counter()
            results = []
            for i in range(0, len(todo), batch):
                results += engine.generate(todo[i : i + batch])
            wall = time.perf_counter() - t
            tokens = sum(c.completion_tokens for r in results for c in r)
            if best is None or wall < best[0]:
                best = (wall, tokens)
        wall, tokens = best
        row[f"batch{batch}_tokens"] = tokens
        row[f"batch{batch}_s"] = round(wall, 2)
        row[f"batch{batch}_tok_per_s"] = round(tokens / wall, 1)
    row["load_avg_1m"] = round(os.getloadavg()[0], 1)  # other processes on the machine
    row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    row["engine_procs_rss_gib"] = round(children_rss() / 2**30, 2)  # vLLM's engine processes
    engine.close()
    return row


def children_rss() -> int:
    try:
        import psutil  # a vLLM dependency; without it, report 0
    except ImportError:
        return 0
    return sum(p.memory_info().rss for p in psutil.Process().children(recursive=True))


def run_child(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--max-tokens", str(args.max_tokens),
           "--repeats", str(args.repeats), "--batches", args.batches]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"bench: the {name} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    batches = sorted(int(k[5:-7]) for k in rows[0] if k.startswith("batch") and k.endswith("_tokens"))
    head = ["engine", "start-up (s)"] + [f"batch {b}: tokens, s, **tok/s**" for b in batches]
    head += ["RSS GiB (main peak / engine processes)", "load avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["engine"], str(r["startup_s"])]
        cells += [f"{r[f'batch{b}_tokens']}, {r[f'batch{b}_s']}, **{r[f'batch{b}_tok_per_s']}**" for b in batches]
        cells += [f"{r['peak_rss_gib']} / {r['engine_procs_rss_gib']}", str(r["load_avg_1m"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", default="vllm hf hf:threads=1",
                   help="space-separated NAME[:OPTION=VALUE,...] (default: 'vllm hf hf:threads=1')")
    p.add_argument("--max-tokens", type=int, default=64, help="per request (default 64)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per batch size; the best counts")
    p.add_argument("--batches", default="1,8", help="requests per generate() call (default 1,8)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        batches = [int(b) for b in args.batches.split(",")]
        print(json.dumps(measure(args.child, args.max_tokens, args.repeats, batches)))
        return 0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{len(PROMPTS)} chat prompts, greedy, max_tokens={args.max_tokens}", file=sys.stderr)
    rows = []
    for name in args.engines.split():
        rows.append(run_child(name, args))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":  # required: vLLM's engine process re-imports the main module
    raise SystemExit(main())
