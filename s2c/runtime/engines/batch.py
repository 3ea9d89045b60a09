"""Provider batch APIs (`--batch`): the requests the dataflow has ready go to the provider as one
batch, at the batch price, and come back when the provider has run them (within 24 hours).

`Batches` is the provider-independent part an HTTP engine in batch mode hands its requests to;
a `BatchClient` (openai.py's OpenAI Batch API, anthropic.py's Message Batches) says how a batch
is created, polled and read.

- **Waves.** Requests submitted since the last `collect` form the next wave; a wave goes as one
  batch or, past the provider's limits (requests and bytes per batch), as several.
- **Crash-exact.** Each request has a custom_id, a hash of what is sent. A batch's id and its
  custom_ids are appended to the run folder's `batches.jsonl` (and flushed to disk) before
  anything depends on the batch. A killed s2c's rerun reads the journal: a request the provider
  already accepted is attached to its batch, not sent again; what finished before the kill is in
  the call cache.
- **Failures.** A line the provider failed (an error, or the batch expired before reaching it) is
  sent again in a later wave, up to `retries` times; then it is an EngineFailure naming why. A
  batch the provider rejected as a whole (validation) fails its requests the same way.
- **Progress.** `states()` says each open batch's state ("batch_abc: in_progress 40/100").
- **A poll that fails** (the provider did not answer) is tried again at the next poll; more than
  `retries` in a row stop the run with the journal's path, and the rerun re-attaches.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from s2c.runtime.engines.base import (
    Completion,
    EngineError,
    EngineFailure,
    Finished,
    Request,
)

JOURNAL = "batches.jsonl"


@dataclass
class Line:
    """One line of a batch's results: the reply's JSON, or why there is none."""

    data: dict | None = None
    error: str | None = None


@dataclass
class Status:
    state: str  # the provider's word: validating, in_progress, completed, ended, failed, expired, ...
    ended: bool  # results can be read (some lines may have failed)
    done: int = 0
    total: int = 0
    error: str | None = None  # the batch was rejected as a whole (validation)


class BatchClient(Protocol):
    max_requests: int
    max_bytes: int

    def create(self, items: list[tuple[str, str, dict]]) -> str:
        """Send (custom_id, path, body) items as one batch; its id."""

    def status(self, batch_id: str) -> Status: ...

    def results(self, batch_id: str) -> dict[str, Line]:
        """The lines of an ended batch by custom_id; a line it never ran (expired) is missing."""


@dataclass
class _Item:
    custom_id: str
    path: str
    body: dict
    request: Request
    tags: list[Hashable] = field(default_factory=list)
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def custom_id(path: str, body: dict) -> str:
    return hashlib.sha256(json.dumps([path, body], sort_keys=True).encode()).hexdigest()[:32]


class Batches:
    def __init__(self, client: BatchClient, parse: Callable[[dict, Request], list[Completion]], *,
                 retries: int = 3, poll_s: float = 10.0, redact: Callable[[str], str] = str):
        self.client = client
        self.parse = parse
        self.retries = retries
        self.poll_s = poll_s
        self.redact = redact
        self.journal: Path | None = None
        self.known: dict[str, str] = {}  # custom_id -> the open batch the journal says holds it
        self.waiting: dict[str, _Item] = {}  # submitted, not in a batch yet
        self.open: dict[str, dict[str, _Item]] = {}  # batch id -> its items
        self.status: dict[str, Status] = {}
        self.finished: list[Finished] = []
        self.last_poll = 0.0
        self.poll_errors = 0  # polls in a row the provider did not answer

    # ------------------------------------------------------------ the journal
    def attach(self, run_dir: str | os.PathLike) -> None:
        """Keep the journal in `run_dir`; batches it lists as open are re-attached."""
        self.journal = Path(run_dir) / JOURNAL
        ended: set[str] = set()
        opened: dict[str, list[str]] = {}
        if self.journal.exists():
            for line in self.journal.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill: its batch was never depended on
                if "ended" in rec:
                    ended.add(rec["ended"])
                elif "batch" in rec:
                    opened[rec["batch"]] = rec["ids"]
        self.known = {cid: b for b, ids in opened.items() if b not in ended for cid in ids}

    def _write(self, record: dict) -> None:
        if self.journal is None:
            return
        with open(self.journal, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # ------------------------------------------------------------ the engine's protocol
    def submit(self, tag: Hashable, request: Request, path: str, body: dict) -> None:
        cid = custom_id(path, body)
        for items in (self.waiting, *self.open.values()):
            if cid in items:
                items[cid].tags.append(tag)
                return
        item = _Item(cid, path, body, request, [tag])
        batch = self.known.pop(cid, None)
        if batch is not None:  # the provider has it already, from a run that was killed
            self.open.setdefault(batch, {})[cid] = item
            return
        self.waiting[cid] = item

    def pending(self) -> int:
        return sum(len(i.tags) for i in self.waiting.values()) + \
            sum(len(i.tags) for items in self.open.values() for i in items.values()) + len(self.finished)

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        """Send what waits as new batches, then poll the open ones (every `poll_s`) until one
        ends or `max_seconds` pass; the requests of ended batches come back."""
        self._send_waiting()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not self.finished and self.open:
            wait = self.last_poll + self.poll_s - time.monotonic()
            if wait > 0:
                if deadline is not None and time.monotonic() + wait > deadline:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    break
                time.sleep(wait)
            self.last_poll = time.monotonic()
            for batch in list(self.open):
                try:
                    st = self.status[batch] = self.client.status(batch)
                    lines = ({} if st.error else self.client.results(batch)) if st.ended else None
                    self.poll_errors = 0
                except EngineError as e:  # the provider did not answer this time: ask again at the next poll
                    self.poll_errors += 1
                    if self.poll_errors > self.retries:
                        raise EngineError(f"{e}; {self.poll_errors} polls in a row failed. The batches are in "
                                          f"{self.journal or 'the run folder'}: rerun to re-attach to them") from e
                    continue
                if lines is not None:
                    self._read(batch, st, lines)
            self._send_waiting()  # lines to send again
            if deadline is not None and time.monotonic() >= deadline:
                break
        out, self.finished = self.finished, []
        return out

    def states(self) -> list[str]:
        return [f"{b}: {s.state} {s.done}/{s.total}" for b, s in self.status.items() if b in self.open]

    # ------------------------------------------------------------ waves
    def _send_waiting(self) -> None:
        items = list(self.waiting.values())
        self.waiting = {}
        wave: list[_Item] = []
        size = 0
        for item in items:
            line = len(json.dumps(item.body)) + 200
            if wave and (len(wave) >= self.client.max_requests or size + line > self.client.max_bytes):
                self._create(wave)
                wave, size = [], 0
            wave.append(item)
            size += line
        if wave:
            self._create(wave)

    def _create(self, wave: list[_Item]) -> None:
        try:
            batch = self.client.create([(i.custom_id, i.path, i.body) for i in wave])
        except Exception as e:  # noqa: BLE001  the provider refused the upload: each request fails, the run goes on
            for item in wave:
                self._give_up(item, self.redact(f"the batch could not be created: {e}"))
            return
        self._write({"batch": batch, "ids": [i.custom_id for i in wave], "at": time.time()})
        for item in wave:
            item.attempts += 1
        self.open[batch] = {i.custom_id: i for i in wave}
        self.status[batch] = Status("created", False, 0, len(wave))

    def _read(self, batch: str, status: Status, lines: dict[str, Line]) -> None:
        items = self.open.pop(batch)
        for cid, item in items.items():
            line = lines.get(cid)
            why = status.error or (line.error if line is not None else f"the batch {status.state} before running it")
            if line is not None and line.data is not None:
                try:
                    result = self.parse(line.data, item.request)
                except Exception as e:  # noqa: BLE001  a reply without a completion (Retry): send the line again
                    why = str(e)
                else:
                    self.finished += [Finished(tag, result, tuple(item.errors)) for tag in item.tags]
                    continue
            item.errors.append(why)
            if item.attempts > self.retries:
                self._give_up(item, why)
            else:
                self.waiting[cid] = item
        self._write({"ended": batch})

    def _give_up(self, item: _Item, why: str) -> None:
        reason = f"{why} (gave up after {item.attempts} batches)" if item.attempts > 1 else why
        self.finished += [Finished(tag, EngineFailure(self.redact(reason)), tuple(item.errors)) for tag in item.tags]
