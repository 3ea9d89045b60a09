"""One run of a program over a dataset: validate rows, execute, keep every finished example in the
run store, write summary.json.

A run directory holds:
  run.sqlite     every finished example (its trace and its values), appended as examples finish,
                 so a killed run keeps them; `s2c trace RUN` reads it (runtime/store.py)
  summary.json   totals and per-node figures (written at the end, also when a run is stopped)
  rows.json      rows that were skipped, with why (only when some were)
  load.csv       the engine's load every quarter second: requests in flight (s2c's count) and,
                 with vLLM, how many its scheduler runs in the batch and holds waiting
  engine.log     what the engine and its libraries printed (s2c/terminal.py, while the API or the CLI runs;
                 none when nothing was printed)
"""
from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from s2c.compiler import ir
from s2c.errors import S2Error
from s2c.runtime.cache import CallCache
from s2c.runtime.executor import BudgetReached, Executor, RunOptions, TooManyErrors
from s2c.runtime.given import row_problem
from s2c.runtime.load import LoadSampler, csv_sink
from s2c.runtime.store import RunStore
from s2c.runtime.summary import RunSummary

# The longest value a declared input may have, in characters (a list input: its JSON). Longer
# fields are nearly always a mistake (a file's whole text in one cell); no model's context holds
# them, and sending them costs minutes of prompt processing. `--max-field-chars` raises it.
MAX_FIELD_CHARS = 100_000


def validate_rows(cp: ir.CheckedProgram, rows: list[dict], source: str = "data", *,
                  locations: list[str] | None = None, max_field_chars: int = MAX_FIELD_CHARS,
                  given: Mapping[str, str] = {}) -> tuple[list[tuple[str, dict]], list[str]]:
    """Check every row against the declared inputs and the given nodes' columns (`given`: node id
    -> column, runtime/given.py). A bad row is reported with where it came from (`locations[i]`,
    e.g. "data.jsonl:30: row 30", from the DataSet; else "SOURCE: row N", 1-based), its id, the
    field and why, and skipped; the others run. A null is a missing field."""
    good, problems = [], []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        ex_id = str(row.get("id", f"row-{i}")) if isinstance(row, dict) else f"row-{i}"
        loc = locations[i] if locations and i < len(locations) else f"{source}: row {i + 1}"
        where = f"{loc} (id {ex_id})"
        fixed, bad = _inputs(cp, row, max_field_chars) if isinstance(row, dict) else (None, "not an object")
        for node, column in given.items() if bad is None else ():
            bad = row_problem(cp.nodes[node], column, row.get(column))
            if bad:
                break
        if bad is None and ex_id in seen:
            bad = f"duplicate id '{ex_id}'"
        if bad:
            problems.append(f"{where}: {bad}; skipped")
            continue
        seen.add(ex_id)
        good.append((ex_id, fixed))
    return good, problems


def _inputs(cp: ir.CheckedProgram, row: dict, max_chars: int) -> tuple[dict | None, str | None]:
    """(the row with its inputs coerced to their declared types, None), or (None, why it cannot run)."""
    fixed = dict(row)
    for p in cp.inputs:
        v = row.get(p.name)
        if v is None:
            return None, f"field '{p.name}' is missing or null"
        if p.type == "list":
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    v = None
            if not isinstance(v, list):
                return None, f"field '{p.name}' should be a list, got {type(row[p.name]).__name__}"
            size = len(json.dumps(v, ensure_ascii=False))
        elif p.type == "number":
            try:
                v = float(v)
            except (TypeError, ValueError):
                return None, f"field '{p.name}' should be a number, got {v!r:.40}"
            size = 0
        elif isinstance(v, (list, dict)):
            return None, f"field '{p.name}' should be text, got a {type(v).__name__}"
        else:  # a number or a boolean where text is expected is read as its text: 42 -> "42", true -> "true"
            v = json.dumps(v) if isinstance(v, bool) else str(v)
            size = len(v)
        if size > max_chars:
            return None, f"field '{p.name}' is {size:,} characters, over the limit of {max_chars:,} (--max-field-chars)"
        fixed[p.name] = v
    return fixed, None


@dataclass
class RunOutcome:
    run_dir: Path
    summary: RunSummary
    program: ir.CheckedProgram

    def examples(self):
        """The finished examples, read back from the run store one at a time, in input order."""
        store = RunStore.open(self.run_dir, self.program)
        try:
            yield from store.all()
        finally:
            store.close()

    def gold(self) -> list[dict]:
        """For each gold metric of the program, how many System-2 answers match the gold field
        (gold.GoldTally.as_dict(), its "all"); [] when it has none or no example has a gold value."""
        from s2c.runtime.gold import GoldTally

        tallies = GoldTally.for_program(self.program)
        if not tallies:
            return []
        store = RunStore.open(self.run_dir, self.program)
        try:
            for res in store.originals():
                for t in tallies:
                    t.score(res, t.answer(res))
        finally:
            store.close()
        return [t.as_dict(kept=False) for t in tallies if t.scored]

    def records(self) -> Iterator[dict]:
        """One flat dict per example, in input order: `id`, `status`, the program's inputs, its
        outputs (None where an output failed), its gold fields as `gold_NAME`, `generated_tokens`,
        and `error` (None, or the node where the outputs' failure began and why)."""
        cp = self.program
        for ex in self.examples():
            rec = {"id": ex.id, "status": ex.status}
            rec |= {p.name: ex.row.get(p.name) for p in cp.inputs}
            rec |= {name: self._cell(ex.outputs.get(name)) for name in cp.outputs}
            rec |= {f"gold_{g}": ex.trace.gold.get(g) for g in cp.golds}
            rec["generated_tokens"] = ex.generated_tokens
            rec["error"] = None if ex.ok else f"{ex.failed_at}: {ex.failed.get(ex.failed_at, ex.status)}"
            yield rec

    def to_pandas(self):
        """The examples as a pandas DataFrame, one row each (the columns of `records`)."""
        import pandas as pd

        return pd.DataFrame.from_records(list(self.records()), columns=self._columns())

    def to_dataset(self):
        """The examples as a datasets.Dataset (the columns of `records`), written from the run
        store without holding the whole run in memory. Its fingerprint is the store's size and
        time, so a rerun into the same folder is read again rather than served from datasets' cache."""
        import hashlib

        import datasets

        store = Path(self.run_dir) / "run.sqlite"
        stamp = [str(Path(self.run_dir).resolve())] + [
            [f.stat().st_size, f.stat().st_mtime_ns] for f in (store, Path(f"{store}-wal")) if f.exists()]
        fingerprint = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
        return datasets.Dataset.from_generator(self.records, fingerprint=fingerprint)

    def _columns(self) -> list[str]:
        cp = self.program
        return ["id", "status", *(p.name for p in cp.inputs), *cp.outputs, *(f"gold_{g}" for g in cp.golds),
                "generated_tokens", "error"]

    @staticmethod
    def _cell(v):
        """An output value for a table cell: a failed value ({"failed"|"unparsed"|"skipped": why,
        "node": id} in the trace) becomes None, also inside a list; the `error` column says why."""
        if isinstance(v, dict) and "node" in v and len(v) == 2 and v.keys() & {"failed", "unparsed", "skipped"}:
            return None
        if isinstance(v, list):
            return [RunOutcome._cell(x) for x in v]
        return v


LOAD_LOG = "load.csv"
EXIT_ALL_FAILED = 3  # a run in which every example failed (exit codes: 0 ok, 1 bad input, 2 usage)


def exit_code(summary: RunSummary) -> int:
    """0, or EXIT_ALL_FAILED when examples ran and none produced its outputs because of failures."""
    return EXIT_ALL_FAILED if summary.examples and not summary.ok and summary.failed else 0


@dataclass
class Runner:
    """Runs programs on one engine in this process: what `s2c run`, `s2c compile` and `s2c eval`
    hand their stages, built once and passed whole (runtime/shards.py's ShardRunner is the other
    runner: the same `execute`, each shard on a Ray worker).

    progress: bars on a terminal, elsewhere a plain line every PROGRESS_EVERY seconds (True) or
    every `progress` seconds (a number); False for none."""

    engine: Any
    cache: CallCache = field(default_factory=lambda: CallCache(None))
    options: RunOptions = RunOptions()
    progress: bool | float = True
    console: Any = None

    @property
    def engine_name(self) -> str:
        return getattr(self.engine, "name", "?")

    def model_id(self, role: str = "default") -> str:
        return self.engine.model_id(role)

    def with_options(self, **changes) -> Runner:
        """The same runner with some run options changed (eval serves each adapter this way)."""
        return replace(self, options=replace(self.options, **changes))

    def execute(self, cp: ir.CheckedProgram, rows: Iterable[tuple], run_dir: str | os.PathLike, *,
                skipped: list[str] = (), meta: dict | None = None) -> RunOutcome:
        """Run `cp` over `rows` into `run_dir`: run.sqlite (every finished example), summary.json,
        rows.json (skipped rows). Raises S2Error when --max-errors stops the run."""
        engine, options, progress = self.engine, self.options, self.progress
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        bars = _Progress(cp, engine, self.console, PROGRESS_EVERY if progress is True else progress) \
            if progress else None
        # The executor finds the model's and the adapter's identities (reading their files) first: one
        # that cannot be read stops the run before the folder's earlier store is replaced.
        ex = Executor(cp, engine, cache=self.cache, options=options, progress=bars)
        attach = getattr(engine, "attach_run", None)
        if attach is not None:  # an engine that keeps durable state in the run folder (a batch journal)
            attach(run_dir)
        store = ex.store = RunStore.create(run_dir, cp, run_about(cp, self, meta))
        if bars:
            rows = bars.follow(rows, ex.totals)
        startup0 = _startup_seconds(engine)  # an engine serving several runs (eval) starts in one of them
        t0 = time.time()
        stopped = None
        try:
            if bars:
                bars.start()
            with open(run_dir / LOAD_LOG, "w", encoding="utf-8") as f, LoadSampler(engine, csv_sink(f)):
                ex.run(rows)
        except (TooManyErrors, BudgetReached) as e:
            stopped = str(e)
            hint = ("rerun with a higher --max-cost; the finished examples are read back from the cache for free"
                    if isinstance(e, BudgetReached) else "see the failure reasons in summary.json, or raise --max-errors")
        except KeyboardInterrupt:
            stopped = "interrupted"
            raise
        finally:
            if bars:
                bars.stop()
            store.close()
            skipped = list(skipped) + [f"duplicate id '{i}': the first row with this id was kept"
                                       for i in store.duplicates]
            t = ex.totals
            summary = RunSummary(
                program=cp.name, program_file=cp.program.file, engine=self.engine_name,
                models={role: engine.model_id(role) for role in sorted({x.role for x in cp.llm_nodes()} | {"default"})},
                adapter=options.adapter, examples=t.examples, ok=t.ok, failed=t.failed, unparsed=t.unparsed,
                copies_skipped=t.copies_skipped,
                rows_skipped=len(skipped), wall_seconds=time.time() - t0,
                engine_startup_seconds=_startup_seconds(engine) - startup0, engine_spread=engine.spread(),
                nodes=dict(ex.stats), stopped=stopped, meta=dict(meta or {}),
                prices=options.prices.as_dict() if options.prices else None)
            finish_run(run_dir, summary, skipped)
        if stopped:
            raise S2Error(stopped + f"; finished examples are in {run_dir}, completed calls are cached", hint=hint)
        return RunOutcome(run_dir, summary, cp)


def run_about(cp: ir.CheckedProgram, runner, meta: dict | None) -> dict:
    """What a run store records about its run (RunStore.create's `about`)."""
    return {"program_file": cp.program.file, "engine": runner.engine_name, "adapter": runner.options.adapter,
            **(meta or {})}


def finish_run(run_dir: Path, summary: RunSummary, skipped: list[str]) -> None:
    """summary.json, and rows.json when rows were skipped."""
    _write_json(run_dir / "summary.json", summary.to_json())
    if skipped:
        _write_json(run_dir / "rows.json", {"skipped": list(skipped)})


def _startup_seconds(engine) -> float:
    """Seconds a lazily started engine took to start so far (0 for one started before the run)."""
    return getattr(engine, "startup_seconds", 0.0)


def _write_json(path: Path, data: Any):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


PROGRESS_EVERY = 30.0  # seconds between plain progress lines off a terminal: a CI log stays short


class _Progress:
    """What a run shows while it runs, from one set of counts: on a terminal, rich bars (examples
    done, and per LLM node the calls done / known so far); elsewhere (CI, nohup, a pipe) a plain
    line every `every` seconds:

        s2c: 12/32 examples · 96 calls · 20 in flight · 210 tok/s · ETA 1m40s

    The total is the number of rows when it is known up front, else known once the input is read
    to its end ("12/40+ examples": 40 read so far). Rates and ETA leave out the engine's start-up."""

    def __init__(self, cp, engine, console=None, every: float = PROGRESS_EVERY):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console or Console(stderr=True)
        self.engine = engine
        self.every = every
        # bars on a terminal, and in a notebook where rich can draw them (it needs ipywidgets there)
        self.bars = self.console.is_terminal or os.environ.get("S2C_PROGRESS") == "1" or \
            (self.console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None)
        # redirect_*=False: what others print to sys.stdout/stderr stays where it was sent (engine.log)
        self.p = Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[tps]}"), TimeElapsedColumn(), console=self.console,
                          transient=False, disable=not self.bars, redirect_stdout=False, redirect_stderr=False)
        self.examples_task = self.p.add_task("examples", total=None, tps="")
        self.tasks = {n.id: self.p.add_task(n.id, total=0, tps="") for n in cp.llm_nodes()}
        self.t0 = time.time()
        self.startup0 = _startup_seconds(engine)
        self.tokens = self.calls = 0
        self.totals: dict[str, int] = {}
        self.run_totals = None  # the executor's RunTotals: examples finished
        self.read = 0  # rows taken from the input so far
        self.total: int | None = None  # rows in all, once known
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="s2c-progress", daemon=True)

    def follow(self, rows: Iterable[tuple], run_totals) -> Iterator[tuple]:
        """`rows`, counted as the executor reads them; `run_totals` gives the examples finished."""
        self.run_totals = run_totals
        self.total = len(rows) if hasattr(rows, "__len__") else None
        return self._count(rows)

    def _count(self, rows):
        for item in rows:
            self.read += 1
            yield item
        self.total = self.read

    def start(self):
        self.p.start()
        self._ticker.start()  # refreshes the examples bar, or prints the plain line

    def stop(self):
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        if self.bars:
            self._tick()
        self.p.stop()

    def add_total(self, nid, k):
        self.totals[nid] = self.totals.get(nid, 0) + k
        self.p.update(self.tasks[nid], total=self.totals[nid])

    def advance(self, nid, tokens):
        self.tokens += tokens
        self.calls += 1
        tps = self.tokens / max(1e-6, self.working_seconds())
        self.p.update(self.tasks[nid], advance=1, tps=f"{tps:,.0f} tok/s")

    def working_seconds(self) -> float:
        """Seconds since the run started, less the engine's start-up."""
        return time.time() - self.t0 - (_startup_seconds(self.engine) - self.startup0)

    def _tick_loop(self):
        while not self._stop.wait(0.5 if self.bars else self.every):
            self._tick()

    def _tick(self):
        if self.bars:
            self.p.update(self.examples_task, completed=self.done(), total=self.total, tps=self.batch_note())
        else:
            self.console.print(self.line(), markup=False, emoji=False)

    def done(self) -> int:
        return self.run_totals.examples if self.run_totals is not None else 0

    def batch_note(self) -> str:
        """In batch mode, each open batch's state: `batch_0001: in_progress 40/100`."""
        states = getattr(self.engine, "batch_states", None)
        return "; ".join(states()) if callable(states) else ""

    def line(self) -> str:
        done = self.done()
        parts = [f"{done}/{self.total} examples" if self.total is not None else f"{done}/{self.read}+ examples",
                 f"{self.calls} calls"]
        in_flight = self.engine.pending()  # requests finish as a whole: long ones show here first
        if in_flight:
            parts.append(f"{in_flight} in flight")
        if note := self.batch_note():
            parts.append(note)
        if getattr(self.engine, "starting", False):
            parts.append("engine starting")
        else:
            seconds = self.working_seconds()
            if self.tokens and seconds > 0:
                parts.append(f"{self.tokens / seconds:,.0f} tok/s")
            if self.total is not None and 0 < done < self.total:
                parts.append(f"ETA {_duration((self.total - done) * seconds / done)}")
        return "s2c: " + " · ".join(parts)


def _duration(seconds: float) -> str:
    """1m40s, 45s, 2h03m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def cache_note(summary: RunSummary) -> str:
    """What the calls the cache served cost when they were made, beside what this run paid; ""
    when the engine served every call. In money too where the run was given prices."""
    if not summary.cache_hits:
        return ""
    money = summary.prices is not None
    return (f"{summary.cache_hits:,} calls served from the cache cost {summary.generated_tokens - summary.engine_generated_tokens:,} "
            f"generated tokens when they were made"
            + (f" (${summary.cost_made - summary.cost:,.4f} at the given prices)" if money else "")
            + f"; this run paid {summary.engine_calls:,} engine calls, {summary.engine_generated_tokens:,} generated tokens"
            + (f", ${summary.cost:,.4f}" if money else ""))


def early_stop_note(summary: RunSummary) -> str:
    """What a compile's early stop left out (samples not drawn, copies not run); "" when nothing."""
    not_drawn = sum(s.not_drawn for s in summary.nodes.values())
    parts = [f"{not_drawn:,} samples not drawn" if not_drawn else "",
             f"{summary.copies_skipped:,} perturbed copies not run" if summary.copies_skipped else ""]
    parts = [p for p in parts if p]
    return ("early stop: " + " and ".join(parts) + ", which could not change the dataset (--no-early-stop draws them)"
            if parts else "")


def cost_note(summary: RunSummary) -> str:
    """With prices: what the run paid, and what its outputs cost to make; "" without."""
    if summary.prices is None:
        return ""
    return (f"cost: ${summary.cost:,.4f} paid by this run; its outputs cost ${summary.cost_made:,.4f} to make "
            f"(${summary.cost_made / max(1, summary.examples):,.5f} per example), at the given prices")


def token_table(summary: RunSummary, notes: tuple[str, ...] = ()):
    """The run table: a row per node, then the total; `notes` go under it, in its caption (the
    answers' match with gold)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"{summary.program} · {summary.examples} examples · engine {summary.engine}",
              title_justify="left")
    money = summary.prices is not None  # a cost column: what each node paid this run
    for c in ("node", "engine calls", "cache hits", "prompt tok", "generated tok", "gen tok / example",
              *(("paid $",) if money else ()), "seconds", "failed", "unparsed"):
        t.add_column(c, justify="right" if c != "node" else "left")
    n = max(1, summary.examples)
    for nid, s in summary.nodes.items():
        failed, unparsed = sum(s.failed.values()), sum(s.unparsed.values())
        if not s.samples and not s.engine_calls and not failed and not unparsed:
            continue
        t.add_row(nid, f"given ({s.given})" if s.given else str(s.engine_calls), str(s.cache_hits), f"{s.prompt_tokens:,}", f"{s.generated_tokens:,}",
                  f"{s.generated_tokens / n:,.1f}", *((f"{s.cost:,.4f}",) if money else ()), f"{s.seconds:.1f}",
                  str(failed), str(unparsed))
    if summary.engine_startup_seconds:  # the lazily started engine's start-up, charged to no node
        t.add_row("engine start-up", "", "", "", "", "", *(("",) if money else ()),
                  f"{summary.engine_startup_seconds:.1f}", "", "")
    t.add_row(Text("total", "bold"), Text(f"{summary.engine_calls}", "bold"), str(summary.cache_hits),
              f"{summary.prompt_tokens:,}", Text(f"{summary.generated_tokens:,}", "bold"),
              Text(f"{summary.generated_tokens_per_example:,.1f}", "bold"),
              *((Text(f"{summary.cost:,.4f}", "bold"),) if money else ()), f"{summary.wall_seconds:.1f}",
              f"{summary.failed} ex", f"{summary.unparsed} ex")
    spread = summary.engine_spread or {}
    if "servers" in spread:
        t.caption = "requests per server: " + ", ".join(
            f"{url} {s['requests']}" + (f" ({s['failed_over']} failed over)" if s["failed_over"] else "")
            + (f" ({s['rate_limited']} answered 429)" if s.get("rate_limited") else "")
            + (" (down)" if s["down"] else "") for url, s in spread["servers"].items())
    elif "requests_per_replica" in spread:
        t.caption = "requests per replica: " + ", ".join(map(str, spread["requests_per_replica"]))
    t.caption = "\n".join(filter(None, [t.caption, cost_note(summary), cache_note(summary), early_stop_note(summary),
                                        *notes])) or None
    t.caption_justify = "left"
    return t
