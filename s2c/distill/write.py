"""Write a compiled dataset folder: JSONL + Parquet splits, meta.json, report.json, README.md card.

Every file is written to a temporary name and renamed into place, and README.md (the card) last,
so a crash never leaves a half-written dataset that looks complete.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path


def split_rows(rows: list[dict], val_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Split by example (all rows of one example stay together), reproducibly."""
    if not val_fraction:
        return {"train": rows}
    ids = sorted({r["example_id"] for r in rows})
    random.Random(seed).shuffle(ids)
    n_val = max(1, round(len(ids) * val_fraction)) if len(ids) > 1 else 0
    val = set(ids[:n_val])
    return {"train": [r for r in rows if r["example_id"] not in val],
            "validation": [r for r in rows if r["example_id"] in val]}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_dataset(out: Path, splits: dict[str, list[dict]], meta: dict, report: dict, card: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("README.md",):  # the card marks a complete dataset: remove it first
        (out / stale).unlink(missing_ok=True)
    written = []
    for name, rows in splits.items():
        p = out / f"{name}.jsonl"
        _atomic_write(p, lambda t, rows=rows: t.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"))
        written.append(p)
        if rows:
            q = out / f"{name}.parquet"
            _atomic_write(q, lambda t, rows=rows: _parquet(rows, t))
            written.append(q)
    for name, data in (("meta.json", meta), ("report.json", report)):
        p = out / name
        _atomic_write(p, lambda t, data=data: t.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str)))
        written.append(p)
    p = out / "README.md"
    _atomic_write(p, lambda t: t.write_text(card, encoding="utf-8"))
    written.append(p)
    return written


def _parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def dataset_card(meta: dict, report: dict, splits: dict[str, list[dict]]) -> str:
    r = report
    lines = [
        f"# {meta['program']} → System 1 ({meta['format']})",
        "",
        f"Compiled by s2c from `{meta['program_file']}` over `{meta['data']}` with engine `{meta['engine']}`, "
        f"model `{meta['model']}`. Run id `{meta['run_id']}`; traces in `{meta['run_dir']}` "
        f"(`s2c trace {meta['run_dir']} --example ID`).",
        "",
        "Rows are TRL conversational prompt-completion (`prompt`, `completion`) plus `task`, `weight`, "
        "`example_id`, `run_id`. System 1's prompt holds only the program's inputs; intermediate "
        "generations are dropped.",
        "",
        "## Splits",
        "",
        "| split | rows | examples |",
        "|---|---|---|",
    ]
    for name, rows in splits.items():
        lines.append(f"| {name} | {len(rows)} | {len({x['example_id'] for x in rows})} |")
    tasks: dict[str, list] = {}
    for rows in splits.values():
        for x in rows:
            tasks.setdefault(x["task"], [0, x["weight"]])[0] += 1
    lines += ["", "## Tasks", "", "| task | rows | weight |", "|---|---|---|"]
    lines += [f"| {t} | {n} | {w:g} |" for t, (n, w) in tasks.items()]
    lines += [
        "", "## Curation", "",
        f"- inputs: {r['inputs']}",
        f"- kept: {r['kept']}",
        f"- failed (an output could not be computed): {r['failed']} {r['failed_per_node'] or ''}",
    ]
    for rule, n in r["dropped_per_rule"].items():
        lines.append(f"- dropped by `{rule}`: {n}")
    for reason, n in list(r["dropped_reasons"].items())[:10]:
        lines.append(f"  - {n} × {reason}")
    if r["label_distribution"]:
        lines.append(f"- label distribution of kept targets: {r['label_distribution']}")
    for w in r["warnings"]:
        lines.append(f"- **warning:** {w}")
    t = meta["tokens"]
    lines += [
        "", "## Cost (System 2)", "",
        f"- generated tokens: {t['generated']:,} ({t['per_input']:.1f} per input, "
        f"{t['per_kept_row']:.1f} per kept row), prompt tokens: {t['prompt']:,}",
        f"- engine calls: {t['engine_calls']}, cache hits: {t['cache_hits']}",
        "",
    ]
    return "\n".join(lines)
