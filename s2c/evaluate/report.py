"""The evaluation's outputs: a rich table shaped like the papers', results.json, a PNG chart."""
from __future__ import annotations

import json
import os
from pathlib import Path

from s2c.evaluate.metrics import labels



def _fmt(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def table(results, cp, meta):
    from rich.table import Table

    t = Table(title=f"{meta['program']} on {meta['data']} · {meta['examples']} inputs · {meta['model']}",
              title_justify="left")
    t.add_column("system")
    names = labels(cp.metrics)
    for n in names:
        t.add_column(f"{n} (%)" + (" ↓" if n.startswith("swap_inconsistency") else ""), justify="right")
    t.add_column("#tokens / input", justify="right")
    t.add_column("unparsed", justify="right")
    for r in results:
        t.add_row(r.name, *[_fmt(r.metrics.get(n)) for n in names], f"{r.mean_generated_tokens:.1f}", str(r.unparsed))
    return t


def write_results(out: Path, results, meta: dict) -> None:
    """results.json, and predictions.jsonl: each input's answer from every system, side by side
    (read line by line from each system's answers.jsonl, which are in the same input order)."""
    data = {**meta, "systems": [r.as_dict() for r in results]}
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, out / "results.json")
    files = [open(r.run_dir / "answers.jsonl", encoding="utf-8") for r in results]
    try:
        with open(out / ".predictions.jsonl.tmp", "w", encoding="utf-8") as f:
            for lines in zip(*files):
                recs = [json.loads(line) for line in lines]
                rec = {"example_id": recs[0]["example_id"], **{r.name: x["answer"] for r, x in zip(results, recs)}}
                f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    finally:
        for fh in files:
            fh.close()
    os.replace(out / ".predictions.jsonl.tmp", out / "predictions.jsonl")


def chart(path: Path, results, cp) -> None:
    """Each metric per system, and generated tokens per input (log scale) beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = labels(cp.metrics)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    systems = [r.name for r in results]
    width = 0.8 / max(1, len(names))
    for j, n in enumerate(names):
        vals = [100 * (r.metrics.get(n) or 0) for r in results]
        xs = [i + j * width for i in range(len(systems))]
        axes[0].bar(xs, vals, width, label=n)
    axes[0].set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(systems))], systems, rotation=15)
    axes[0].set_ylabel("%")
    axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=8)
    axes[0].set_title("task metrics")
    axes[1].bar(systems, [max(r.mean_generated_tokens, 0.1) for r in results], color="gray")
    axes[1].set_yscale("log")
    axes[1].set_title("generated tokens per input")
    axes[1].tick_params(axis="x", rotation=15)
    fig.suptitle(cp.name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
