"""The evaluation's outputs: a rich table shaped like the papers' (each figure with its 95 % CI),
the paired comparisons under it, results.json, predictions.jsonl and a PNG chart.

results.json, schema 2 (schema 1, before CIs, had no `schema` key). Metrics, CIs and differences
are fractions (0.533 is 53.3 %); a CI is [low, high], or null where nothing was scored.

    schema                  2
    program, data, engine, model, examples, skipped_rows, max_tokens_system1
    models                  {role: the model it ran on}: with --role-url the teacher's server
    stats                   how the CIs and tests were made (stats.settings()):
                            {confidence: 0.95, bootstrap_resamples: 10000, seed: 0,
                             ci: "percentile bootstrap", diff_ci: "paired percentile bootstrap",
                             test: "exact McNemar, two-sided"}
    systems[]               one per system, in the table's order:
      name, kind, adapter   "System 1" | "System 2" | an adapter's name; system1|system2|distilled
      merged                the folder the adapter was merged into (--merge-adapters), else null
      metrics               {metric: mean, or null}; metric names are ir.metric_labels()
      ci                    {metric: [low, high] or null}
      mean_generated_tokens, mean_generated_tokens_ci ([low, high], tokens)
      n, unparsed, run_dir
    comparisons[]           every later system b against every earlier system a, per metric:
      metric, a, b
      n                     inputs both scored (the pairs)
      diff                  mean(b) - mean(a) over those pairs (null when n is 0)
      diff_ci               paired bootstrap CI of diff
      mcnemar               {b01: a 0 and b 1, b10: a 1 and b 0, p: exact two-sided p-value}

For swap_inconsistency a 1 is an inconsistent answer, so there a negative diff is b's gain.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from s2c.compiler import ir
from s2c.distill.write import jsonl_line
from s2c.evaluate.stats import CONFIDENCE, settings

SCHEMA = 2  # results.json's layout, in this module's docstring


def _fmt(v, ci=None, scale: float = 100) -> str:
    """53.3 [40.8, 65.0]: a figure and its CI (a fraction as % with the default scale)."""
    if v is None:
        return "–"
    return f"{scale * v:.1f}" + ("" if ci is None else f" [{scale * ci[0]:.1f}, {scale * ci[1]:.1f}]")


def _signed(x: float) -> str:
    return f"{x:+.1f}".replace("-", "−")


def comparison_lines(comparisons) -> list[str]:
    """One line per pair of systems and metric: `agreement, System 2 − System 1: +10.0 points
    [−2.5, +22.5], McNemar p = 0.146 (b=9, c=3)`; b counts the inputs only the first-named
    system scores 1 on, c those only the second does."""
    out = []
    for c in comparisons:
        head = f"{c.metric}, {c.b} − {c.a}: "
        if c.diff is None:
            out.append(head + "no input scored by both")
            continue
        lo, hi = c.diff_ci
        out.append(head + f"{_signed(100 * c.diff)} points [{_signed(100 * lo)}, {_signed(100 * hi)}], "
                   f"McNemar p = {c.p:.3g} (b={c.b01}, c={c.b10})")
    return out


def table(results, cp, meta):
    from rich.table import Table

    t = Table(title=f"{meta['program']} on {meta['data']} · {meta['examples']} inputs · {meta['model']}",
              title_justify="left", caption=f"[{CONFIDENCE:.0%} bootstrap CI]", caption_justify="left")
    t.add_column("system")
    names = ir.metric_labels(cp.metrics)
    for n in names:
        t.add_column(f"{n} (%)" + (" ↓" if n.startswith("swap_inconsistency") else ""), justify="right")
    t.add_column("#tokens / input", justify="right")
    t.add_column("unparsed", justify="right")
    for r in results:
        t.add_row(r.name, *[_fmt(r.metrics.get(n), r.ci.get(n)) for n in names],
                  _fmt(r.mean_generated_tokens, r.tokens_ci, scale=1), str(r.unparsed))
    return t


def write_results(out: Path, results, comparisons, meta: dict) -> None:
    """results.json (the schema is in this module's docstring), and predictions.jsonl: each input's
    answer from every system, side by side (read line by line from each system's answers.jsonl,
    which are in the same input order)."""
    data = {"schema": SCHEMA, **meta, "stats": settings(), "systems": [r.as_dict() for r in results],
            "comparisons": [c.as_dict() for c in comparisons]}
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, out / "results.json")
    files = [open(r.run_dir / "answers.jsonl", encoding="utf-8") for r in results]
    try:
        with open(out / ".predictions.jsonl.tmp", "w", encoding="utf-8") as f:
            for lines in zip(*files):
                recs = [json.loads(line) for line in lines]
                rec = {"example_id": recs[0]["example_id"], **{r.name: x["answer"] for r, x in zip(results, recs)}}
                f.write(jsonl_line(rec, default=str))
    finally:
        for fh in files:
            fh.close()
    os.replace(out / ".predictions.jsonl.tmp", out / "predictions.jsonl")


def chart(dest, systems: list[dict], names: list[str], title: str) -> None:
    """Each metric per system, and generated tokens per input (log scale) beside it. `systems` are
    results.json's entries; where one carries `ci` ({metric: [low, high]}, fractions; stats.py
    fills it) the bars get error bars. `dest`: a path or a binary file; the format
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
    tokens = [max(r["mean_generated_tokens"], 0.1) for r in systems]
    tcis = [r.get("mean_generated_tokens_ci") for r in systems]  # results.json schema 2 on
    terr = None
    if any(tcis):
        terr = [[max(0.0, v - c[0]) if c else 0 for v, c in zip(tokens, tcis)],
                [max(0.0, c[1] - v) if c else 0 for v, c in zip(tokens, tcis)]]
    axes[1].bar(labels_, tokens, color="gray", yerr=terr, capsize=4 if terr else 0)
    axes[1].set_yscale("log")
    axes[1].set_title("generated tokens per input")
    axes[1].tick_params(axis="x", rotation=15)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(dest, dpi=100, **({} if isinstance(dest, (str, Path)) else {"format": "svg"}))
    plt.close(fig)
