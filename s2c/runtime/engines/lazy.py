"""Start a local engine only when a request misses the cache.

Re-running a finished command (or re-compiling with a changed keep rule) is served entirely from
the call cache; starting vLLM for it would cost ~35 s on a CPU for nothing. The model identities
that cache keys need come from the model folders, without loading anything. If the engine then
cannot start, the EngineError stops the run like an eager start would.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Callable

from s2c.runtime.engines.base import Engine, Finished, Request, Streaming
from s2c.runtime.engines.local import RoleModels
from s2c.runtime.model import ModelRef


class LazyEngine(Streaming, RoleModels):
    def __init__(self, name: str, refs: dict[str, ModelRef], factory: Callable[[], Engine]):
        self.name = name
        self._refs = refs
        self._factory = factory
        self._engine: Engine | None = None

    @property
    def started(self) -> bool:
        return self._engine is not None

    def submit(self, tag: Hashable, request: Request) -> None:
        if self._engine is None:
            self._engine = self._factory()
        self._engine.submit(tag, request)

    def collect(self) -> list[Finished]:
        return self._engine.collect() if self._engine is not None else []

    def pending(self) -> int:
        return self._engine.pending() if self._engine is not None else 0

    def batch_state(self) -> dict[str, int] | None:
        return self._engine.batch_state() if self._engine is not None else None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
