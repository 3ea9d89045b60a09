"""A content-addressed call cache in SQLite.

key = sha256(model identity + what the model sees + sampling parameters without n + adapter), the
model and adapter identified by what they hold, not only their paths (model.py);
each sample of a call is its own row (key, sample index), committed as soon as it returns, so a
run killed with `kill -9` repeats no completed call.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

from s2c.errors import S2Error
from s2c.runtime.engines.base import Completion, Request

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT,
    model TEXT,
    created REAL,
    PRIMARY KEY (key, idx)
);
"""


@functools.lru_cache(maxsize=1024)
def _sampling_json(sampling) -> str:
    d = sampling.to_dict()
    d.pop("n")  # samples are rows of their own: asking for more reuses the first ones
    return json.dumps(d, sort_keys=True)


def engine_model(engine, role: str = "default") -> str:
    """The identity a completion is cached under: engine and model (greedy outputs of one model
    can differ between engines, so their completions are not mixed). A role bound to an engine
    of its own (engines/roles.py) is that engine's model, cached as if that engine ran alone."""
    route = getattr(engine, "route", None)
    if route is not None:
        engine, role = route(role)
    return f"{getattr(engine, 'name', '?')}:{engine.model_id(role)}"


def call_key(model_id: str, request: Request, adapter_id: str | None) -> str:
    """adapter_id: `model.adapter_identity(request.adapter)`, found once per run by the caller (it
    reads the adapter's weights)."""
    blob = json.dumps(
        {"model": model_id, "input": request.payload(), "adapter": adapter_id},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{blob}\x00{_sampling_json(request.sampling)}".encode()).hexdigest()


class CallCache:
    def __init__(self, path: str | os.PathLike | None):
        self.path = str(path) if path else None
        self.db = None
        if self.path:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
            except (OSError, sqlite3.Error) as e:
                if self.db is not None:
                    self.db.close()
                raise S2Error(f"call cache {self.path}: {_why_unusable(self.path, e)}",
                              hint="pass another file with --cache, or --no-cache") from None

    def get(self, key: str, n: int) -> dict[int, Completion]:
        if self.db is None:
            return {}
        rows = self.db.execute(
            "SELECT idx, text, prompt_tokens, completion_tokens, finish_reason FROM calls WHERE key=? AND idx<?",
            (key, n),
        ).fetchall()
        return {r[0]: Completion(r[1], r[2], r[3], r[4] or "stop") for r in rows}

    def put_many(self, items: list[tuple[str, int, Completion, str]]) -> None:
        """Commit (key, sample index, completion, model) rows in one transaction."""
        if self.db is None or not items:
            return
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO calls VALUES (?,?,?,?,?,?,?,?)",
                [(k, i, c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason, m, now) for k, i, c, m in items],
            )

    # Raw rows, for the shards of a run on Ray (runtime/shards.py): a worker's cache comes back as
    # rows, and the driver's cache is the union of the shards' by (key, sample index).
    def rows(self) -> list[tuple]:
        return [] if self.db is None else self.db.execute("SELECT * FROM calls").fetchall()

    def last_rowid(self) -> int:
        return 0 if self.db is None else self.db.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()[0]

    def rows_after(self, rowid: int) -> tuple[list[tuple], int]:
        """The rows committed after `rowid`, and the last rowid read."""
        rows = self.db.execute("SELECT rowid, * FROM calls WHERE rowid > ? ORDER BY rowid", (rowid,)).fetchall()
        return [r[1:] for r in rows], (rows[-1][0] if rows else rowid)

    def put_rows(self, rows: list[tuple]) -> None:
        if self.db is not None and rows:
            with self.db:
                self.db.executemany("INSERT OR IGNORE INTO calls VALUES (?,?,?,?,?,?,?,?)", rows)

    def merge(self, path: str | os.PathLike) -> None:
        """Add the rows of another cache file that this one lacks (a plain union)."""
        if self.db is None or not os.path.exists(path):
            return
        other = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            self.put_rows(other.execute("SELECT * FROM calls").fetchall())
        finally:
            other.close()

    def delete(self, keys: list[str]) -> None:
        if self.db is None or not keys:
            return
        with self.db:
            self.db.executemany("DELETE FROM calls WHERE key=?", [(k,) for k in keys])

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def _why_unusable(path: str, e: Exception) -> str:
    if os.path.isdir(path):
        return f"is a folder; the cache is one file, e.g. {os.path.join(path, 'calls.sqlite')}"
    blocker = next((str(a) for a in Path(path).parents if a.exists() and not a.is_dir()), None)
    if blocker:
        return f"{blocker} is a file, so the cache cannot be made under it"
    if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
        return "is not an SQLite file (s2c does not overwrite it)"
    if isinstance(e, OSError):
        return f"cannot make its folder ({e.strerror or e})"
    return f"cannot be opened for writing ({e})"


def default_cache_path() -> Path:
    from s2c.runtime.model import cache_dir

    return cache_dir() / "calls.sqlite"
