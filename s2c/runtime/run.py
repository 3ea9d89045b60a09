"""One run of a program over a dataset: validate rows, execute, keep every finished example in the
run store, write summary.json.

A run directory holds:
  run.sqlite     every finished example (its trace and its values), appended as examples finish,
                 so a killed run keeps them; `s2c trace RUN` reads it (runtime/store.py)
  summary.json   totals and per-node figures (written at the end, also when a run is stopped)
  rows.json      rows that were skipped, with why
  load.csv       the engine's load every quarter second: requests in flight (s2c's count) and,
                 with vLLM, how many its scheduler runs in the batch and holds waiting
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2c.compiler import ir
from s2c.errors import S2Error
from s2c.runtime.cache import CallCache
from s2c.runtime.executor import Executor, NodeStats, RunOptions, TooManyErrors
from s2c.runtime.load import LoadSampler, csv_sink
from s2c.runtime.store import RunStore


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


@dataclass
class RunOutcome:
    run_dir: Path
    summary: dict
    stats: dict[str, NodeStats]
    program: ir.CheckedProgram

    def examples(self):
        """The finished examples, read back from the run store one at a time, in input order."""
        store = RunStore.open(self.run_dir, self.program)
        try:
            yield from store.all()
        finally:
            store.close()


LOAD_LOG = "load.csv"
EXIT_ALL_FAILED = 3  # a run in which every example failed (exit codes: 0 ok, 1 bad input, 2 usage)


def exit_code(summary: dict) -> int:
    """0, or EXIT_ALL_FAILED when examples ran and none produced its outputs because of failures."""
    return EXIT_ALL_FAILED if summary["examples"] and not summary["ok"] and summary["failed"] else 0


def execute(cp: ir.CheckedProgram, rows: Iterable[tuple], engine, run_dir: str | os.PathLike, *,
            cache: CallCache, options: RunOptions = RunOptions(), skipped: list[str] = (),
            meta: dict | None = None, progress: bool = True, console=None) -> RunOutcome:
    """Run `cp` over `rows` into `run_dir`: run.sqlite (every finished example), summary.json,
    rows.json (skipped rows). Raises S2Error when --max-errors stops the run."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store = RunStore.create(run_dir, cp, {"program_file": cp.program.file, "engine": getattr(engine, "name", "?"),
                                          "adapter": options.adapter, **(meta or {})})
    bars = _Progress(cp, console) if progress else None
    ex = Executor(cp, engine, cache=cache, options=options, store=store, progress=bars)
    t0 = time.time()
    stopped = None
    try:
        if bars:
            bars.start()
        with open(run_dir / LOAD_LOG, "w", encoding="utf-8") as f, LoadSampler(engine, csv_sink(f)):
            ex.run(rows)
    except TooManyErrors as e:
        stopped = str(e)
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise
    finally:
        if bars:
            bars.stop()
        store.close()
        skipped = list(skipped) + [f"duplicate id '{i}': the first row with this id was kept" for i in store.duplicates]
        summary = summarize(cp, engine, ex, len(skipped), time.time() - t0, options, meta, stopped)
        _write_json(run_dir / "summary.json", summary)
        if skipped:
            _write_json(run_dir / "rows.json", {"skipped": skipped})
    if stopped:
        raise S2Error(stopped + f"; finished examples are in {run_dir}, completed calls are cached",
                      hint="see the failure reasons in summary.json, or raise --max-errors")
    return RunOutcome(run_dir, summary, dict(ex.stats), cp)


def summarize(cp, engine, ex: Executor, n_skipped: int, seconds: float, options: RunOptions, meta, stopped) -> dict:
    """summary.json (schema in docs/reliability.md)."""
    total = NodeStats()
    for s in ex.stats.values():
        for f in ("engine_calls", "samples", "cache_hits", "prompt_tokens", "generated_tokens"):
            setattr(total, f, getattr(total, f) + getattr(s, f))
        total.retries.update(s.retries)
    t = ex.totals
    n = max(1, t.examples)
    return {
        "schema": 2,
        "program": cp.name,
        "program_file": cp.program.file,
        "engine": getattr(engine, "name", "?"),
        "models": {role: engine.model_id(role) for role in sorted({x.role for x in cp.llm_nodes()} | {"default"})},
        "adapter": options.adapter,
        "examples": t.examples,
        "ok": t.ok,
        "failed": t.failed,
        "unparsed": t.unparsed,
        "rows_given": t.examples + n_skipped,
        "rows_skipped": n_skipped,
        "engine_calls": total.engine_calls,
        "cache_hits": total.cache_hits,
        "samples": total.samples,
        "retries": sum(total.retries.values()),
        "prompt_tokens": total.prompt_tokens,
        "generated_tokens": total.generated_tokens,
        "generated_tokens_per_example": round(total.generated_tokens / n, 2),
        "calls_per_example": round(total.samples / n, 2),
        "wall_seconds": round(seconds, 2),
        "generated_tokens_per_second": round(total.generated_tokens / seconds, 1) if seconds > 0 else 0.0,
        "nodes": {nid: s.as_dict() for nid, s in ex.stats.items()},
        "failures": {nid: dict(s.failed) for nid, s in ex.stats.items() if s.failed},
        "unparsed_reasons": {nid: dict(s.unparsed) for nid, s in ex.stats.items() if s.unparsed},
        "retry_reasons": {nid: dict(s.retries) for nid, s in ex.stats.items() if s.retries},
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
    for c in ("node", "engine calls", "cache hits", "prompt tok", "generated tok", "gen tok / example", "seconds",
              "failed", "unparsed"):
        t.add_column(c, justify="right" if c != "node" else "left")
    n = max(1, summary["examples"])
    for nid, s in summary["nodes"].items():
        if not s["samples"] and not s["engine_calls"] and not s["failed"] and not s["unparsed"]:
            continue
        t.add_row(nid, str(s["engine_calls"]), str(s["cache_hits"]), f"{s['prompt_tokens']:,}",
                  f"{s['generated_tokens']:,}", f"{s['generated_tokens'] / n:,.1f}", f"{s['seconds']:.1f}",
                  str(s["failed"]), str(s["unparsed"]))
    t.add_row("[bold]total", f"[bold]{summary['engine_calls']}", str(summary["cache_hits"]),
              f"{summary['prompt_tokens']:,}", f"[bold]{summary['generated_tokens']:,}",
              f"[bold]{summary['generated_tokens_per_example']:,.1f}", f"{summary['wall_seconds']:.1f}",
              f"{summary['failed']} ex", f"{summary['unparsed']} ex")
    return t
