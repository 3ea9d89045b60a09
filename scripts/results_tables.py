"""The tables of docs/results.md from a scripts/results.sh folder: per task, the eval table
(results.json from s2c eval, with CIs and paired tests), the mean and spread over training seeds,
and per curation how many inputs were kept and how many kept labels the gold answer confirms
(report.json and train.jsonl from s2c compile).

    python scripts/results_tables.py runs/results [TASK ...]    # TASK: majority, coin (default: both)
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from s2c.data import load_source

TASKS = {"majority": "majority_vote", "coin": "coin_flip"}  # results.sh's folder prefix -> data source
CURATIONS = ("program", "none", "gold")


def kept_right(folder: Path, source: str) -> str:
    gold = {r["id"]: r["answer"] for r in load_source(f"{source}:train").rows}
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    right = sum(r["completion"][0]["content"].strip().lower() == gold[r["example_id"]] for r in rows)
    return f"{right} of {len(rows)}"


def table(out: Path, task: str) -> list[str]:
    res = json.loads((out / f"eval-{task}" / "results.json").read_text())
    metric = next(iter(res["systems"][0]["metrics"]))
    lines = [f"### {task}: {res['program']} on {res['data']}, {res['examples']} inputs", "",
             "| system | accuracy (%) [95 % CI] | generated tokens / input |", "|---|---|---|"]
    seeds = []
    for s in res["systems"]:
        acc, lo, hi = (100 * x for x in (s["metrics"][metric], *s["ci"][metric]))
        lines.append(f"| {s['name']} | {acc:.1f} [{lo:.1f}, {hi:.1f}] | {s['mean_generated_tokens']:.1f} |")
        if s["name"].startswith("seed "):
            seeds.append(acc)
    lines.append("")
    if len(seeds) > 1:
        spread = (f"Seeds: mean {statistics.mean(seeds):.1f} %, standard deviation {statistics.stdev(seeds):.1f} "
                  f"points, range {min(seeds):.1f}-{max(seeds):.1f} ({len(seeds)} seeds).")
        lines += [spread, ""]
    for c in res["comparisons"]:
        lo, hi = (100 * x for x in c["diff_ci"])
        lines.append(f"- {c['b']} - {c['a']}: {100 * c['diff']:+.1f} points [{lo:+.1f}, {hi:+.1f}], "
                     f"McNemar p = {c['mcnemar']['p']:.2g}")
    lines += ["", "| curation | inputs kept | kept labels right | rows |", "|---|---|---|---|"]
    program_rows = (out / f"{task}-program" / "train.jsonl").read_bytes()
    for c in CURATIONS:
        folder = out / f"{task}-{c}"
        rep = json.loads((folder / "report.json").read_text())
        same = c != "program" and (folder / "train.jsonl").read_bytes() == program_rows
        lines.append(f"| {c} | {rep['kept']} of {rep['inputs']} | {kept_right(folder, TASKS[task])} | "
                     f"{'byte-identical to program: not trained again' if same else 'trained'} |")
    return lines + [""]


def main(argv: list[str]) -> None:
    out, tasks = Path(argv[0]), argv[1:] or list(TASKS)
    for task in tasks:
        print("\n".join(table(out, task)))


if __name__ == "__main__":
    main(sys.argv[1:])
