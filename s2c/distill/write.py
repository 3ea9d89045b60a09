"""Write a compiled dataset folder: JSONL + Parquet splits, meta.json, report.json, README.md card.

Rows are streamed in (`DatasetWriter.add`) and written as they come, each split to a temporary
name that is renamed into place at the end, and README.md (the card) last, so a crash never
leaves a half-written dataset that looks complete. An example goes to validation when a hash of
(seed, example id) falls under the fraction: all rows of one example stay together, the split
is reproducible, and it needs no list of all ids.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from s2c.runtime import gold

PARQUET_BATCH = 1024  # rows per Parquet row group


def jsonl_line(obj, default=None) -> str:
    """One JSON Lines line, UTF-8 as written, except U+2028 and U+2029: valid raw inside a JSON
    string, but a line break to str.splitlines and JavaScript, so they are escaped. `default`:
    json.dumps's, for values JSON has no type for."""
    text = json.dumps(obj, ensure_ascii=False, default=default)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def split_of(example_id: str, val_fraction: float, seed: int) -> str:
    if not val_fraction:
        return "train"
    h = int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "big") / 2**64
    return "validation" if h < val_fraction else "train"


class _Split:
    def __init__(self, out: Path, name: str):
        self.out, self.name = out, name
        self.jsonl = out / f".{name}.jsonl.tmp"
        self.parquet = out / f".{name}.parquet.tmp"
        self.f = open(self.jsonl, "w", encoding="utf-8")
        self.batch: list[dict] = []
        self.writer = None
        self.rows = 0
        self.examples = 0
        self.last_example = None

    def add(self, row: dict) -> None:
        self.f.write(jsonl_line(row))
        self.rows += 1
        if row["example_id"] != self.last_example:  # an example's rows arrive together
            self.examples += 1
            self.last_example = row["example_id"]
        self.batch.append(row)
        if len(self.batch) >= PARQUET_BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.batch:
            return
        table = pa.Table.from_pylist(self.batch, schema=self.writer.schema if self.writer else None)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.parquet, table.schema)
        self.writer.write_table(table)
        self.batch = []

    def close(self) -> list[Path]:
        self._flush()
        self.f.close()
        os.replace(self.jsonl, self.out / f"{self.name}.jsonl")
        done = [self.out / f"{self.name}.jsonl"]
        if self.writer is not None:
            self.writer.close()
            os.replace(self.parquet, self.out / f"{self.name}.parquet")
            done.append(self.out / f"{self.name}.parquet")
        return done


class DatasetWriter:
    def __init__(self, out: Path, val_fraction: float, seed: int):
        out.mkdir(parents=True, exist_ok=True)
        (out / "README.md").unlink(missing_ok=True)  # the card marks a complete dataset: remove it first
        self.out, self.val_fraction, self.seed = out, val_fraction, seed
        names = ["train"] + (["validation"] if val_fraction else [])
        self.splits = {name: _Split(out, name) for name in names}
        self.tasks: dict[str, list] = {}  # task -> [rows, weight]

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            self.splits[split_of(row["example_id"], self.val_fraction, self.seed)].add(row)
            self.tasks.setdefault(row["task"], [0, row["weight"]])[0] += 1

    def close(self, meta: dict, report: dict) -> dict[str, dict]:
        """Rename the splits into place, then meta.json, report.json and the card, last."""
        for split in self.splits.values():
            split.close()
        sizes = {name: {"rows": s.rows, "examples": s.examples} for name, s in self.splits.items()}
        meta = {**meta, "rows": {name: s["rows"] for name, s in sizes.items()}}
        for name, data in (("meta.json", meta), ("report.json", report)):
            _atomic_write(self.out / name, json.dumps(data, indent=2, ensure_ascii=False, default=str))
        _atomic_write(self.out / "README.md", dataset_card(meta, report, sizes, self.tasks))
        return sizes


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def dataset_card(meta: dict, report: dict, sizes: dict[str, dict], tasks: dict[str, list]) -> str:
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
    for name, size in sizes.items():
        lines.append(f"| {name} | {size['rows']} | {size['examples']} |")
    lines += ["", "## Tasks", "", "| task | rows | weight |", "|---|---|---|"]
    lines += [f"| {t} | {n} | {w:g} |" for t, (n, w) in tasks.items()]
    lines += [
        "", "## Curation", "",
        f"- inputs: {r['inputs']}",
        f"- kept: {r['kept']}",
        f"- failed (an output could not be computed): {r['failed']} {r['failed_per_node'] or ''}",
        f"- unparsed (a parse found nothing in the answer): {r['unparsed']} {r['unparsed_per_node'] or ''}",
    ]
    for rule, n in r["dropped_per_rule"].items():
        lines.append(f"- dropped by `{rule}`: {n}")
    for reason, n in list(r["dropped_reasons"].items())[:10]:
        lines.append(f"  - {n} × {reason}")
    if r.get("gold"):
        lines.append(f"- {gold.line(r['gold'], kept=True)}")
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
        *([f"- cost at the given prices: ${t['cost']['made']:,.4f} to make (${t['cost']['per_kept_row']:,.5f} per "
           f"kept row); this compile paid ${t['cost']['paid']:,.4f}"] if t.get("cost") else []),
        *([f"- of the generated tokens, this compile paid for {t['engine_generated']:,}; the "
           f"{t['generated'] - t['engine_generated']:,} of the {t['cache_hits']} calls served from the cache were paid "
           "when those calls were made"] if t.get("cache_hits") and "engine_generated" in t else []),
        "",
    ]
    return "\n".join(lines)
