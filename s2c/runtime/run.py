"""One run of a program over a dataset: validate rows, execute, write traces and summary.json.

A run directory holds:
  traces.jsonl   one line per finished example (every node's prompts, completions, values,
                 tokens, timing, errors), appended as examples finish, so a killed run keeps them
  summary.json   totals and per-node figures (written at the end, also when a run is stopped)
  rows.json      rows that were skipped, with why
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2c.compiler import ir
from s2c.runtime.cache import CallCache
from s2c.runtime.executor import ExampleResult, Executor, NodeStats, TooManyErrors


@dataclass
class RunOutcome:
    run_dir: Path
    results: list[ExampleResult]
    summary: dict
    stats: dict[str, NodeStats]


def validate_rows(cp: ir.CheckedProgram, rows: list[dict], source: str = "data") -> tuple[list[tuple[str, dict]], list[str]]:
    """Check every row against the declared inputs. Bad rows are reported (row number, field) and
    skipped; the others run."""
    good, problems = [], []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        ex_id = str(row.get("id", f"row-{i}"))
        where = f"{source}: row {i} (id {ex_id})"
        if not isinstance(row, dict):
            problems.append(f"{where}: not an object")
            continue
        bad = None
        fixed = dict(row)
        for p in cp.inputs:
            v = row.get(p.name)
            if v is None:
                bad = f"{where}: field '{p.name}' is missing"
                break
            if p.type == "list":
                if isinstance(v, str):
                    try:
                        v = json.loads(v)
                    except ValueError:
                        v = None
                if not isinstance(v, list):
                    bad = f"{where}: field '{p.name}' should be a list, got {type(row[p.name]).__name__}"
                    break
                fixed[p.name] = v
            elif p.type == "number":
                try:
                    fixed[p.name] = float(v)
                except (TypeError, ValueError):
                    bad = f"{where}: field '{p.name}' should be a number, got {v!r:.40}"
                    break
            elif isinstance(v, (list, dict)):
                bad = f"{where}: field '{p.name}' should be text, got a {type(v).__name__}"
                break
            else:
                fixed[p.name] = str(v)
        if bad is None and ex_id in seen:
            bad = f"{where}: duplicate id '{ex_id}'"
        if bad:
            problems.append(bad)
            continue
        seen.add(ex_id)
        good.append((ex_id, fixed))
    return good, problems


def execute(cp: ir.CheckedProgram, rows: list[tuple[str, dict]], engine, run_dir: str | os.PathLike, *,
            cache: CallCache, chunk_size: int = 64, max_errors: int | None = None, refresh=frozenset(),
            skipped: list[str] = (), meta: dict | None = None, progress: bool = True, console=None,
            traces_name: str = "traces.jsonl") -> RunOutcome:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    traces = open(run_dir / traces_name, "w", encoding="utf-8")

    def on_example(rec: dict):
        traces.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        traces.flush()

    bars = _Progress(cp, console) if progress else None
    ex = Executor(cp, engine, cache=cache, chunk_size=chunk_size, max_errors=max_errors, refresh=refresh,
                  on_example=on_example, progress=bars)
    t0 = time.time()
    results: list[ExampleResult] = []
    stopped = None
    try:
        if bars:
            bars.start()
        results = ex.run(rows)
    except TooManyErrors as e:
        stopped = str(e)
        results = list(ex.results.values())
    except KeyboardInterrupt:
        stopped = "interrupted"
        results = list(ex.results.values())
        raise
    finally:
        if bars:
            bars.stop()
        traces.close()
        summary = summarize(cp, engine, ex.stats, results, len(rows), skipped, time.time() - t0, meta, stopped)
        _write_json(run_dir / "summary.json", summary)
        if skipped:
            _write_json(run_dir / "rows.json", {"skipped": list(skipped)})
    if stopped:
        from s2c.errors import S2Error

        raise S2Error(stopped + f"; finished examples are in {run_dir}, completed calls are cached",
                      hint="see the failure reasons in summary.json, or raise --max-errors")
    return RunOutcome(run_dir, results, summary, dict(ex.stats))


def summarize(cp, engine, stats: dict[str, NodeStats], results, n_rows, skipped, seconds, meta, stopped) -> dict:
    total = NodeStats()
    for s in stats.values():
        for f in ("engine_calls", "samples", "cache_hits", "prompt_tokens", "generated_tokens"):
            setattr(total, f, getattr(total, f) + getattr(s, f))
    failed = [r for r in results if not r.ok]
    failures: dict[str, dict[str, int]] = {nid: dict(s.failed) for nid, s in stats.items() if s.failed}
    n = max(1, len(results))
    return {
        "program": cp.name,
        "program_file": cp.program.file,
        "engine": getattr(engine, "name", "?"),
        "models": {role: engine.model_id(role) for role in sorted({x.role for x in cp.llm_nodes()} | {"default"})},
        "examples": len(results),
        "rows_given": n_rows + len(skipped),
        "rows_skipped": len(skipped),
        "failed": len(failed),
        "engine_calls": total.engine_calls,
        "cache_hits": total.cache_hits,
        "samples": total.samples,
        "prompt_tokens": total.prompt_tokens,
        "generated_tokens": total.generated_tokens,
        "generated_tokens_per_example": round(total.generated_tokens / n, 2),
        "calls_per_example": round(total.samples / n, 2),
        "wall_seconds": round(seconds, 2),
        "generated_tokens_per_second": round(total.generated_tokens / seconds, 1) if seconds > 0 else 0.0,
        "nodes": {nid: s.as_dict() for nid, s in stats.items()},
        "failures": failures,
        "stopped": stopped,
        **(meta or {}),
    }


def _write_json(path: Path, data: Any):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


class _Progress:
    """One rich progress bar per LLM node: calls done / known so far, generated tokens/s."""

    def __init__(self, cp, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.p = Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[tps]}"), TimeElapsedColumn(), console=self.console,
                          transient=False, disable=not self.console.is_terminal and os.environ.get("S2C_PROGRESS") != "1")
        self.tasks = {n.id: self.p.add_task(n.id, total=0, tps="") for n in cp.llm_nodes()}
        self.t0 = time.time()
        self.tokens = 0
        self.totals: dict[str, int] = {}

    def start(self):
        self.p.start()

    def stop(self):
        self.p.stop()

    def add_total(self, nid, k):
        self.totals[nid] = self.totals.get(nid, 0) + k
        self.p.update(self.tasks[nid], total=self.totals[nid])

    def advance(self, nid, tokens):
        self.tokens += tokens
        tps = self.tokens / max(1e-6, time.time() - self.t0)
        self.p.update(self.tasks[nid], advance=1, tps=f"{tps:,.0f} tok/s")


def token_table(summary: dict):
    from rich.table import Table

    t = Table(title=f"{summary['program']} · {summary['examples']} examples · engine {summary['engine']}",
              title_justify="left")
    for c in ("node", "engine calls", "cache hits", "prompt tok", "generated tok", "gen tok / example", "seconds", "failed"):
        t.add_column(c, justify="right" if c != "node" else "left")
    n = max(1, summary["examples"])
    for nid, s in summary["nodes"].items():
        if not s["samples"] and not s["engine_calls"] and not s["failed"]:
            continue
        t.add_row(nid, str(s["engine_calls"]), str(s["cache_hits"]), f"{s['prompt_tokens']:,}",
                  f"{s['generated_tokens']:,}", f"{s['generated_tokens'] / n:,.1f}", f"{s['seconds']:.1f}", str(s["failed"]))
    t.add_row("[bold]total", f"[bold]{summary['engine_calls']}", str(summary["cache_hits"]),
              f"{summary['prompt_tokens']:,}", f"[bold]{summary['generated_tokens']:,}",
              f"[bold]{summary['generated_tokens_per_example']:,.1f}", f"{summary['wall_seconds']:.1f}",
              str(summary["failed"]))
    return t
