"""The run store: every finished example of one run, on disk, in SQLite (`run.sqlite`).

The executor appends each example as it finishes and forgets it; compile, eval and `s2c trace`
read the examples back one at a time, so nothing proportional to the dataset stays in memory.

Why SQLite rather than Parquet: examples finish one at a time and out of input order, and
readers need random access by id (a perturbed copy `ID~swap` beside its original; `s2c trace
--example ID`) as well as a scan in input order. SQLite appends row by row in transactions,
keeps an index on the id, survives kill -9 (WAL) and is in the standard library; Parquet is
written in row groups and has no lookup by key.

The store is derived data: a rerun rebuilds it from the call cache (which is what must survive
a crash, and does: `cache.py`). So it is written for speed: `synchronous=OFF` (a killed process
loses nothing the OS has been handed; only a power cut could tear the file, and the rerun
replaces it; a third less time per example than `NORMAL`), and records encoded by msgspec's JSON encoder
(8x faster than the standard library's on a BSM trace; the bytes are plain UTF-8 JSON that
`json.loads` reads too).

    examples(seq, id, source, variant, status, trace, state, tag)
      seq      the row's position in the input (perturbed copies follow their original); the
               table's own rowid is the order examples finished, so each record is appended at
               the end of the table's B-tree rather than split into the middle of a page
      source   the original example's id; variant "" or the perturbation suffix ("~swap")
      status   ok | failed | unparsed
      trace    the trace record `s2c trace` shows (prompts, completions, values, tokens)
      state    every node's per-instance values (values.dump_state), for distill and eval
      tag      what the caller attached to the row (a perturbation's permutation)
    meta(key, value)   what ran: program, source hash, data, engine
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from s2c.compiler import ir
from s2c.errors import S2Error
from s2c.runtime.plan import Plan
from s2c.runtime.trace import Trace
from s2c.runtime.trace import decode as decode_trace
from s2c.runtime.values import ExampleValues, load_state

FILE = "run.sqlite"
# A BSM record is ~8 KB: in 4 KB pages each spills into a chain of overflow pages, each written on
# its own (twice: the WAL, then the checkpoint). In 64 KB pages, appended in finishing order (the
# rowid), records sit side by side: 43-47 -> 32-36 us per example to encode and write one, of
# which ~16 us is the encoding (bench/store_write.py, docs/benchmarks.md).
PAGE_SIZE = 65536
_encode = msgspec.json.Encoder(enc_hook=str).encode  # UTF-8 JSON bytes; str() for anything else
_decode = msgspec.json.decode

SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    seq INTEGER NOT NULL UNIQUE,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    variant TEXT NOT NULL,
    status TEXT NOT NULL,
    trace BLOB NOT NULL,
    state BLOB NOT NULL,
    tag BLOB
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class ExampleResult:
    """One finished example, read back from the store."""

    id: str
    source: str  # the original example's id
    variant: str  # "" or a perturbation suffix
    status: str  # ok | failed | unparsed
    trace: Trace
    state: ExampleValues = field(repr=False)
    tag: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def row(self) -> dict:
        return self.trace.inputs

    @property
    def outputs(self) -> dict:
        return self.trace.outputs

    @property
    def failed(self) -> dict[str, str]:
        return self.trace.failed

    @property
    def failed_at(self) -> str:
        """The node where a failed output's failure began: not merely the first node that failed,
        which in a `for` is often an element a parse was meant to miss (a regex for "for" on an
        "against" vote). The executor records it; a store written before it did gives the first."""
        return self.trace.failed_at or next(iter(self.failed), "?")

    @property
    def generated_tokens(self) -> int:
        return self.trace.generated_tokens


def split_id(ex_id: str, variants: tuple[str, ...]) -> tuple[str, str]:
    for v in variants:
        if ex_id.endswith(v):
            return ex_id[: -len(v)], v
    return ex_id, ""


class RunStore:
    """Writer (`create`) or reader (`open`) of one run folder's run.sqlite."""

    COMMIT_ROWS = 512  # examples per transaction: a kill loses at most these (their calls are cached)
    COMMIT_SECONDS = 1.0

    def __init__(self, path: Path, db: sqlite3.Connection, cp: ir.CheckedProgram | None):
        self.path = path
        self.db = db
        self.cp = cp
        self.plan = Plan(cp) if cp is not None else None  # for the values read back: once per store
        self._buffer: list[tuple] = []
        self._last_commit = time.monotonic()
        self.duplicates: list[str] = []

    # ------------------------------------------------------------ writing
    @classmethod
    def create(cls, run_dir: Path, cp: ir.CheckedProgram, meta: dict) -> RunStore:
        """A fresh store for a new run of `cp`. A store of another program stops the run: two
        programs in one folder would mix their examples."""
        path = Path(run_dir) / FILE
        if path.exists():
            old = cls._read_meta(path).get("program")
            if old not in (None, cp.name):
                raise S2Error(f"{run_dir} holds a run of program '{old}', not '{cp.name}'",
                              hint="pass another --out, or delete that folder to replace it")
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        db = sqlite3.connect(path)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL: a WAL database keeps its page size
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")  # derived data: see the module docstring
        db.executescript(SCHEMA)
        with db:
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v, default=str)) for k, v in {**meta, "program": cp.name}.items()])
        return cls(path, db, cp)

    def add(self, seq: int, ex_id: str, source: str, variant: str, status: str, trace: Trace, state: dict,
            tag=None) -> None:
        self._buffer.append((seq, ex_id, source, variant, status, _encode(trace), _encode(state),
                             None if tag is None else _encode(tag)))
        if len(self._buffer) >= self.COMMIT_ROWS or time.monotonic() - self._last_commit > self.COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        try:
            with self.db:
                self.db.executemany("INSERT INTO examples VALUES (?,?,?,?,?,?,?,?)", rows)
        except sqlite3.IntegrityError:  # a duplicate id in the data: keep the first, report the rest
            with self.db:  # the batch again, row by row (the failed one was rolled back whole)
                for r in rows:
                    try:
                        self.db.execute("INSERT INTO examples VALUES (?,?,?,?,?,?,?,?)", r)
                    except sqlite3.IntegrityError:
                        self.duplicates.append(r[1])
        self._last_commit = time.monotonic()

    def merge(self, path: Path, offset: int) -> None:
        """Add the examples of a shard's store (runtime/shards.py), its positions moved by `offset`
        (where the shard's rows start in the input)."""
        self.flush()
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as shard, self.db:
            self.db.executemany("INSERT INTO examples VALUES (?,?,?,?,?,?,?,?)",
                                ((seq + offset, *rest) for seq, *rest in shard.execute("SELECT * FROM examples")))

    def close(self) -> None:
        if self.db is not None:
            self.flush()
            self.db.close()
            self.db = None

    # ------------------------------------------------------------ reading
    @classmethod
    def open(cls, run_dir: Path, cp: ir.CheckedProgram | None = None) -> RunStore:
        path = Path(run_dir) / FILE if Path(run_dir).is_dir() else Path(run_dir)
        if not path.exists():
            raise S2Error(f"no run store at {path}", hint="pass the folder a run wrote (its --out)")
        return cls(path, sqlite3.connect(f"file:{path}?mode=ro", uri=True), cp)

    @staticmethod
    def _read_meta(path: Path) -> dict:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
            finally:
                db.close()
        except sqlite3.DatabaseError:
            return {}

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM examples").fetchone()[0]

    def get(self, ex_id: str) -> ExampleResult | None:
        row = self.db.execute("SELECT * FROM examples WHERE id=?", (ex_id,)).fetchone()
        return self._result(row) if row else None

    def ids(self, limit: int | None = None, *, statuses: tuple[str, ...] | None = None,
            originals: bool = False) -> list[str]:
        """Example ids in input order: those with one of `statuses` (default any), only the
        unperturbed ones with `originals`, at most `limit`."""
        where = [f"status IN ({', '.join('?' * len(statuses))})"] if statuses else []
        where += ["variant=''"] if originals else []
        q = ("SELECT id FROM examples" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
             + (f" LIMIT {int(limit)}" if limit else ""))
        return [r[0] for r in self.db.execute(q, statuses or ())]

    def status_counts(self, originals: bool = False) -> dict[str, int]:
        """How many examples (unperturbed ones with `originals`) have each status."""
        q = "SELECT status, count(*) FROM examples" + (" WHERE variant=''" if originals else "") + " GROUP BY status"
        return dict(self.db.execute(q).fetchall())

    def originals(self) -> Iterator[ExampleResult]:
        """The unperturbed examples in input order, one at a time."""
        return self._scan("SELECT * FROM examples WHERE variant='' ORDER BY seq")

    def all(self) -> Iterator[ExampleResult]:
        """Every example (perturbed copies after their original), in input order, one at a time."""
        return self._scan("SELECT * FROM examples ORDER BY seq")

    def traces(self, originals: bool = False) -> Iterator[Trace]:
        """Every example's trace (only the unperturbed ones with `originals`), in input order; no
        program needed."""
        q = "SELECT trace FROM examples" + (" WHERE variant=''" if originals else "") + " ORDER BY seq"
        for (t,) in self.db.execute(q):
            yield decode_trace(t)

    def find_trace(self, ex_id: str) -> Trace | None:
        row = self.db.execute("SELECT trace FROM examples WHERE id=?", (ex_id,)).fetchone()
        return decode_trace(row[0]) if row else None

    def _scan(self, query: str) -> Iterator[ExampleResult]:
        cur = self.db.execute(query)
        while batch := cur.fetchmany(256):
            for row in batch:
                yield self._result(row)

    def _result(self, row) -> ExampleResult:
        seq, ex_id, source, variant, status, trace, state, tag = row
        if self.plan is None:
            raise RuntimeError("RunStore opened without its program cannot rebuild values")
        return ExampleResult(ex_id, source, variant, status, decode_trace(trace), load_state(self.plan, _decode(state)),
                             None if tag is None else _decode(tag))

