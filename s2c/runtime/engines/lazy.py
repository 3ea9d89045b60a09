"""Start a local engine only when a request misses the cache.

Re-running a finished command (or re-compiling with a changed keep rule) is served entirely from
the call cache; starting vLLM for it would cost ~35 s on a CPU for nothing. The model identities
that cache keys need come from the model folders, without loading anything. If the engine then
cannot start, the EngineError stops the run like an eager start would.

The start-up is timed (`startup_seconds`) and said in one line through `log`, so that a run can
report it apart from the nodes' seconds.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from s2c.runtime.engines.base import Engine, Finished, Request, Streaming
from s2c.runtime.engines.local import RoleModels
from s2c.runtime.model import ModelRef


class LazyEngine(Streaming, RoleModels):
    def __init__(self, name: str, refs: dict[str, ModelRef], factory: Callable[[], Engine],
                 log: Callable[[str], object] | None = None, constraints: frozenset[str] = frozenset()):
        self.name = name
        self.constraints = constraints  # the engine's, which the run checks before it starts
        self._refs = refs
        self._factory = factory
        self._log = log
        self._engine: Engine | None = None
        self.starting = False  # True while the factory runs
        self.startup_seconds = 0.0  # how long the start took; 0 until the engine has started
        self.starts = 0  # engines started: 0, then 1

    @property
    def started(self) -> bool:
        return self._engine is not None

    def submit(self, tag: Hashable, request: Request) -> None:
        if self._engine is None:
            self._start()
        self._engine.submit(tag, request)

    def _start(self) -> None:
        t0 = time.perf_counter()
        self.starting = True
        try:
            self._engine = self._factory()
        finally:
            self.starting = False
        self.startup_seconds = time.perf_counter() - t0
        self.starts += 1
        if self._log:
            self._log(f"s2c: engine started in {self.startup_seconds:.1f} s")

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        return self._engine.collect(max_seconds) if self._engine is not None else []

    def pending(self) -> int:
        return self._engine.pending() if self._engine is not None else 0

    def batch_state(self) -> dict[str, int] | None:
        return self._engine.batch_state() if self._engine is not None else None

    def spread(self) -> dict | None:
        return self._engine.spread() if self._engine is not None else None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
