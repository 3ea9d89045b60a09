"""Sharded runs on Ray (`--shards N`): the input is cut into N contiguous shards, and each runs the
whole program on a Ray worker, with its own vLLM engine, call cache shard and run store shard.

Workers share no filesystem with the driver. A worker works in a temporary folder of its own node
(S2C_WORK_DIR, else the system's), removed when the shard ends, and streams back through Ray:

    ("calls", rows)      cache rows committed since the last message, every second or so
    ("store", rows)      its run store's examples, once the shard has run
    ("summary", tuple)   its RunSummary, and the node and folder it ran in

The driver commits each message as it comes, to RUN/shards/K/calls.sqlite and RUN/shards/K/run.sqlite,
so a shard that dies (or a driver that is killed) keeps the calls it finished. When every shard has
come back, the driver merges them: the run store in input order (each shard's positions mapped to
the input's), the call cache as a plain union by (key, sample), the summaries by RunSummary.merge.

Resuming: the same command sends each shard its own cache shard first, so each shard starts with
the calls it finished last time (a shard whose calls are all cached starts no engine: the worker's
engine is lazy). The compiled dataset of a sharded run equals that of an unsharded one wherever
the engine's outputs do (docs/scale.md: greedy decoding, one sequence at a time).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from s2c.compiler import ir
from s2c.errors import S2Error
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.base import EngineError
from s2c.runtime.engines.raypool import (
    actor_options,
    connect,
    failure,
    models_on_node,
    require_feasible,
)
from s2c.runtime.engines import constraints_of
from s2c.runtime.executor import RunOptions, check_constraints
from s2c.runtime.run import Runner, RunOutcome, finish_run, run_about
from s2c.runtime.store import RunStore
from s2c.runtime.summary import RunSummary

SHARDS_DIR = "shards"
STREAM_SECONDS = 1.0  # how often a worker sends the calls it has committed


@dataclass
class ShardPool:
    """Where and how `--shards N` runs each shard: N shards, each a vLLM engine of its own on a Ray
    worker. Connecting to Ray and resolving the models' identities on a worker happen once, here;
    a ShardRunner runs programs on it."""

    shards: int
    address: str | None = "auto"
    model: str | None = None
    roles: dict[str, str] = field(default_factory=dict)
    replica_resources: dict[str, float] | None = None  # None: one CPU
    vllm_options: dict = field(default_factory=dict)
    engine_name: ClassVar[str] = "vllm"  # each shard's engine: its completions are cached as vllm's

    def __post_init__(self):
        if self.shards < 1:
            raise S2Error(f"--shards {self.shards}: must be at least 1")
        self._ray = connect(self.address)
        self._task = self._ray.remote(_run_shard)
        require_feasible(self._ray, self.replica_resources)
        self._options = actor_options(self.replica_resources)
        ident = self._ray.remote(_identities).options(num_cpus=0)
        try:
            self.identities = self._ray.get(ident.remote(self.model, self.roles))
        except self._ray.exceptions.RayTaskError as e:
            raise EngineError(f"ray: cannot resolve the model on a worker: {failure(e)}") from None


@dataclass
class ShardRunner:
    """The runner beside run.Runner: the same `execute`, the input cut into the pool's shards, each
    run whole on a Ray worker; their examples and calls are merged here, summary.json is theirs
    summed."""

    pool: ShardPool
    cache: CallCache
    options: RunOptions = RunOptions()
    console: object = None

    @property
    def engine_name(self) -> str:
        return self.pool.engine_name

    def model_id(self, role: str = "default") -> str:
        return self.pool.identities.get(role, self.pool.identities["default"])

    def with_options(self, **changes) -> ShardRunner:
        return replace(self, options=replace(self.options, **changes))

    def execute(self, cp: ir.CheckedProgram, rows: Iterable[tuple], run_dir: str | os.PathLike, *,
                skipped: list[str] = (), meta: dict | None = None) -> RunOutcome:
        check_constraints(cp, "vllm", constraints_of("vllm"))  # each shard is a vllm engine
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        store = RunStore.create(run_dir, cp, run_about(cp, self, meta))
        t0 = time.time()
        try:
            summary = self._shards(cp, rows, run_dir, store, meta or {})
        finally:
            store.close()
        summary = replace(summary, wall_seconds=time.time() - t0, rows_skipped=len(skipped), stopped=None,
                          meta={**summary.meta, **(meta or {})})
        finish_run(run_dir, summary, skipped)
        return RunOutcome(run_dir, summary, cp)

    def _shards(self, cp: ir.CheckedProgram, rows: Iterable[tuple], run_dir: Path, store: RunStore,
                meta: dict) -> RunSummary:
        """Run every shard; merge their examples into `store` (in input order) and their calls into
        the cache. Returns the merged summary (the caller sets wall time and the driver's own fields)."""
        log = self.console.print if self.console else print
        items = list(rows)
        k = min(self.pool.shards, max(1, len(items)))
        bounds = [len(items) * j // k for j in range(k + 1)]
        shard_dirs = [run_dir / SHARDS_DIR / str(j) for j in range(k)]
        results: list[tuple | None] = [None] * k
        errors: list[str | None] = [None] * k
        bugs: list[BaseException | None] = [None] * k

        def one(j: int) -> None:
            try:
                results[j] = self._one(j, cp, items[bounds[j]:bounds[j + 1]], shard_dirs[j], meta, log)
            except (S2Error, EngineError) as e:  # said per shard below; the other shards go on
                errors[j] = str(e).splitlines()[-1]
            except self.pool._ray.exceptions.RayError as e:
                cause = getattr(e, "cause", None)
                if isinstance(e, self.pool._ray.exceptions.RayTaskError) and \
                        not isinstance(cause, (S2Error, EngineError)):
                    bugs[j] = e  # a bug on the worker: raised below, after the other shards end
                else:  # s2c's own error on the worker, or a worker or node that died
                    errors[j] = failure(e).splitlines()[-1]
            except BaseException as e:  # noqa: BLE001 (a bug here: re-raised on the main thread below)
                bugs[j] = e

        log(f"s2c: ray: {len(items)} rows in {k} shard{'s' * (k > 1)} of ~{len(items) // k} rows")
        threads = [threading.Thread(target=one, args=(j,), name=f"s2c-shard-{j}") for j in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for d in shard_dirs:  # the union, also of a failed shard's finished calls
            self.cache.merge(d / "calls.sqlite")
        failed = [f"shard {j} ({bounds[j + 1] - bounds[j]} rows): {e}" for j, e in enumerate(errors) if e]
        if failed:
            raise S2Error("; ".join(failed) + f"; the calls they finished are kept in {run_dir / SHARDS_DIR}",
                          hint="run the same command again: each shard resumes from its own finished calls")
        bug = next((b for b in bugs if b is not None), None)
        if bug is not None:
            raise bug
        for j, d in enumerate(shard_dirs):
            store.merge(d / "run.sqlite", offset=bounds[j])
        merged = RunSummary.merge_all([summary for summary, _, _ in results])
        merged.shards = [{"examples": summary.examples, "engine_calls": summary.engine_calls,
                          "cache_hits": summary.cache_hits, "wall_seconds": round(summary.wall_seconds, 2),
                          "node": node, "work_dir": work_dir} for summary, node, work_dir in results]
        return merged

    def _one(self, j: int, cp, items: list, shard_dir: Path, meta: dict, log) -> tuple[RunSummary, str, str]:
        shard_dir.mkdir(parents=True, exist_ok=True)
        shard_cache = CallCache(shard_dir / "calls.sqlite")
        try:
            seed = shard_cache.rows()
            t0 = time.time()
            summary = None
            pool = self.pool
            gen = pool._task.options(num_returns="streaming", **pool._options).remote(
                cp, items, pool.model, pool.roles, pool.vllm_options, self.options, seed, meta)
            for ref in gen:
                kind, payload = pool._ray.get(ref)
                if kind == "calls":
                    shard_cache.put_rows(payload)
                elif kind == "store":
                    _write_store(shard_dir / "run.sqlite", payload)
                elif kind == "summary":
                    summary = payload
                elif kind == "stopped":
                    raise S2Error(payload)
            log(f"s2c: shard {j}: {len(items)} rows done in {time.time() - t0:.1f} s on node "
                f"{summary[1][:8]} ({summary[0].engine_calls} engine calls, {summary[0].cache_hits} cache hits)")
            return summary
        finally:
            shard_cache.close()


def _identities(model, roles) -> dict[str, str]:
    """On a worker: the model identities its node resolves (the cache keys' model part)."""
    return {role: ref.cache_identity for role, ref in models_on_node(model, roles).items()}


def _run_shard(cp, items, model, roles, vllm_options, options, seed, meta):
    """On a worker: run `items` through `cp` with a lazily started vLLM engine on this node; yields
    the messages listed in the module docstring."""
    import ray

    from s2c.runtime.engines import constraints_of, make_engine
    from s2c.runtime.engines.lazy import LazyEngine

    work = Path(tempfile.mkdtemp(prefix="s2c-shard-", dir=os.environ.get("S2C_WORK_DIR")))
    try:
        reader = CallCache(work / "calls.sqlite")  # this thread's connection (sqlite's are per thread)
        reader.put_rows(seed)
        sent = reader.last_rowid()
        engine = LazyEngine("vllm", models_on_node(model, roles),
                            lambda: make_engine("vllm", model, roles=roles, log=lambda *a: None, **vllm_options),
                            constraints=constraints_of("vllm"))
        outcome: dict = {}

        def run():
            cache = CallCache(work / "calls.sqlite")
            try:
                runner = Runner(engine, cache, options, progress=False)
                outcome["summary"] = runner.execute(cp, items, work / "run", meta=meta).summary
            except S2Error as e:
                outcome["stopped"] = str(e)
            except BaseException as e:  # noqa: BLE001 (re-raised on the generator's thread below)
                outcome["error"] = e
            finally:
                cache.close()
                engine.close()

        runner = threading.Thread(target=run, name="s2c-shard-run")
        runner.start()
        while runner.is_alive():
            runner.join(STREAM_SECONDS)
            rows, sent = reader.rows_after(sent)
            if rows:
                yield "calls", rows
        rows, sent = reader.rows_after(sent)
        reader.close()
        if rows:
            yield "calls", rows
        if "error" in outcome:
            raise outcome["error"]
        if "stopped" in outcome:
            yield "stopped", outcome["stopped"]
            return
        yield "store", _read_store(work / "run" / "run.sqlite")
        yield "summary", (outcome["summary"], ray.get_runtime_context().get_node_id(), str(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read_store(path: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute("SELECT * FROM examples ORDER BY seq").fetchall()


def _write_store(path: Path, rows: list[tuple]) -> None:
    """A shard's examples as they came back, in the run store's table (read by RunStore.merge)."""
    from s2c.runtime.store import SCHEMA

    path.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO examples VALUES (?,?,?,?,?,?,?,?)", rows)
