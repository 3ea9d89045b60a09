"""s2c compile: run a System-2 program (with its perturbed copies), curate, emit System-1 rows.

    rows -> perturb (keep consistent) -> execute (cached, traced) -> judge (keep rules)
         -> build_rows (format) -> split -> write (atomic) + report + card
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from s2c.compiler import ir
from s2c.distill.curate import CurationReport, judge, normalize
from s2c.distill.perturb import from_rule
from s2c.distill.rows import build_rows
from s2c.distill.write import dataset_card, split_rows, write_dataset
from s2c.runtime.run import execute

SKEW = 0.8  # a kept-label share above this is reported (a judge that always says A is position-biased)


@dataclass
class CompileResult:
    out: Path
    rows: dict[str, list[dict]]
    report: dict
    meta: dict


def run_id_for(cp: ir.CheckedProgram, data: str, model: str, n: int) -> str:
    h = hashlib.sha256(json.dumps([cp.program.source, data, model, n]).encode()).hexdigest()
    return f"{cp.name}-{h[:10]}"


def compile_program(cp: ir.CheckedProgram, rows: list[tuple[str, dict]], engine, out: str | Path, *, cache,
                    data: str, fmt: str | None = None, seed: int = 0, val_split: float = 0.0,
                    chunk_size: int = 64, max_errors: int | None = None, refresh=frozenset(),
                    skipped: list[str] = (), console=None, progress: bool = True) -> CompileResult:
    out = Path(out)
    fmt = fmt or cp.format
    perts = {}
    for k in cp.keeps:
        if k.rule == "consistent":
            p = from_rule(k.args)
            perts[p.suffix] = p
    all_rows = list(rows)
    infos: dict[str, dict[str, dict]] = {}
    for ex_id, row in rows:
        for suffix, p in perts.items():
            prow, info = p.apply(ex_id, row, seed)
            all_rows.append((ex_id + suffix, prow))
            infos.setdefault(ex_id, {})[suffix] = info
    model = engine.model_id("default")
    run_id = run_id_for(cp, data, model, len(rows))
    outcome = execute(cp, all_rows, engine, out / "run", cache=cache, chunk_size=chunk_size, max_errors=max_errors,
                      refresh=refresh, skipped=skipped, console=console, progress=progress,
                      meta={"data": data, "run_id": run_id})
    by_id = {r.id: r for r in outcome.results}
    report = CurationReport()
    kept_rows: list[dict] = []
    problems: list[str] = []
    for ex_id, _ in rows:
        res = by_id.get(ex_id)
        if res is None:
            continue
        report.inputs += 1
        if not res.ok:
            node = next(iter(res.failed), "?")
            report.failed[node] += 1
            continue
        pert = {s: (by_id.get(ex_id + s), infos[ex_id][s]) for s in perts if by_id.get(ex_id + s)}
        v = judge(cp, res, pert)
        if not v.keep:
            report.dropped[v.rule] += 1
            report.reasons[_reason_class(v.reason)] += 1
            continue
        if v.element_mask is not None:
            report.elements_dropped += v.element_mask.count(False)
        new = build_rows(cp, res, v, fmt, run_id, problems)
        if not new:
            report.failed["distill target"] += 1
            continue
        report.kept += 1
        kept_rows.extend(new)
        first_task = cp.tasks[0].name if cp.tasks else None
        for r in new:
            if r["task"] == first_task:
                report.labels[normalize(r["completion"][0]["content"])[:40]] += 1
    _label_warning(report)
    splits = split_rows(kept_rows, val_split, seed)
    s = outcome.summary
    tokens = {
        "generated": s["generated_tokens"], "prompt": s["prompt_tokens"],
        "per_input": s["generated_tokens"] / max(1, report.inputs),
        "per_kept_row": s["generated_tokens"] / max(1, len(kept_rows)),
        "engine_calls": s["engine_calls"], "cache_hits": s["cache_hits"],
    }
    meta = {
        "program": cp.name, "program_file": cp.program.file, "format": fmt, "data": data,
        "engine": getattr(engine, "name", "?"), "model": model, "run_id": run_id, "run_dir": str(out / "run"),
        "seed": seed, "val_split": val_split, "perturbations": sorted(perts), "tokens": tokens,
        "rows": {k: len(v) for k, v in splits.items()}, "row_problems": problems[:200],
    }
    rep = report.as_dict()
    write_dataset(out, splits, meta, rep, dataset_card(meta, rep, splits))
    return CompileResult(out, splits, rep, meta)


def _reason_class(reason: str | None) -> str:
    """Group reasons for the report: drop the per-example detail in parentheses."""
    if not reason:
        return "?"
    return reason.split(" (")[0]


def _label_warning(report: CurationReport) -> None:
    total = sum(report.labels.values())
    if total >= 4 and len(report.labels) >= 1:
        label, n = report.labels.most_common(1)[0]
        if n / total > SKEW and len(report.labels) < 20:
            report.warnings.append(
                f"kept targets are skewed: {n}/{total} ({n / total:.0%}) are '{label}'. A judge that always "
                "answers the same label is position-biased; distilling that bias is what keep consistent(swap=...) "
                "exists to stop")
