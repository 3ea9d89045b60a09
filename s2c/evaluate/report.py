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


def chart(dest, systems: list[dict], names: list[str], title: str) -> None:
    """Each metric per system, and generated tokens per input (log scale) beside it. `systems` are
    results.json's entries; where one carries `ci` ({metric: [low, high]}, fractions; the fidelity
    issue's CI maths fills it) the bars get error bars. `dest`: a path or a binary file; the format
    follows the path's suffix, or SVG for a file object (the HTML report inlines it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels_ = [r["name"] for r in systems]
    width = 0.8 / max(1, len(names))
    for j, n in enumerate(names):
        vals = [100 * (r["metrics"].get(n) or 0) for r in systems]
        xs = [i + j * width for i in range(len(systems))]
        cis = [(r.get("ci") or {}).get(n) for r in systems]
        err = None
        if any(cis):
            err = [[max(0.0, v - 100 * c[0]) if c else 0 for v, c in zip(vals, cis)],
                   [max(0.0, 100 * c[1] - v) if c else 0 for v, c in zip(vals, cis)]]
        axes[0].bar(xs, vals, width, label=n, yerr=err, capsize=4 if err else 0)
    axes[0].set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(systems))], labels_, rotation=15)
    axes[0].set_ylabel("%")
    axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=8)
    axes[0].set_title("task metrics" + (" (95% CI)" if any(r.get("ci") for r in systems) else ""))
    axes[1].bar(labels_, [max(r["mean_generated_tokens"], 0.1) for r in systems], color="gray")
    axes[1].set_yscale("log")
    axes[1].set_title("generated tokens per input")
    axes[1].tick_params(axis="x", rotation=15)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(dest, dpi=100, **({} if isinstance(dest, (str, Path)) else {"format": "svg"}))
    plt.close(fig)
