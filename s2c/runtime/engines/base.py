"""The engine protocol: requests go in one at a time, each comes back as soon as it finishes.

    engine.submit(tag, request)          # returns at once; `tag` is the caller's handle
    for done in engine.collect():        # blocks until at least one submitted request finished
        done.tag, done.result            # n completions, or an EngineFailure

The executor keeps a bounded window of requests submitted and commits each result to the call
cache the moment `collect` hands it over, so a kill loses only what was still in flight.

- Streaming engines (vllm: `LLMEngine.add_request`/`step`; openai: one HTTP request per call on
  a thread pool) implement `submit`/`collect`/`pending` and get `generate` from `Streaming`.
- Batch engines (hf, fake) implement `generate(requests)` and get the streaming methods from
  `BatchStream`: `collect` serves everything submitted so far in one `generate` call.

A request the engine cannot serve is an `EngineFailure` (a data failure: counted, the run goes
on); an engine that cannot run at all raises `EngineError` (the run stops with the reason). Any
other exception from an engine is a bug in s2c and stops the run with its traceback.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple, Protocol

from s2c.calls import Completion, EngineFailure, Message, Request, Result, Sampling

__all__ = ["CONSTRAINT_KINDS", "Completion", "EngineFailure", "Message", "Request", "Result", "Sampling", "Finished",
           "EngineError", "Engine", "Streaming", "BatchStream"]


class Finished(NamedTuple):  # made once per call: a tuple is cheaper to build than a frozen dataclass
    """One submitted request, finished."""

    tag: Hashable
    result: Result
    retries: tuple[str, ...] = ()  # why earlier attempts were retried ("HTTP 503", "ReadTimeout")


class EngineError(Exception):
    """The engine cannot run at all (missing package, model not found, server down)."""


# The kinds of calls.Constraint (constrained decoding) there are.
CONSTRAINT_KINDS = frozenset({"choice", "regex", "json"})


class Engine(Protocol):
    name: str  # "vllm" | "hf" | "openai" | "fake"
    # the constraint kinds it enforces while decoding; a run with a constrained call it cannot
    # enforce is refused before any call (executor.check_constraints): never run unconstrained
    constraints: frozenset[str]

    def model_id(self, role: str = "default") -> str:
        """A stable identity of the model serving `role` (goes into the cache key)."""
        ...

    def submit(self, tag: Hashable, request: Request) -> None:
        """Queue one request (Request.sampling.n samples); returns without waiting."""
        ...

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        """Requests finished since the last call; waits for at least one while any is pending,
        or for at most `max_seconds` when given (then maybe none: engines/roles.py polls so)."""
        ...

    def pending(self) -> int:
        """Requests submitted and not yet collected."""
        ...

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        """Serve a batch and wait for all of it; results align with requests."""
        ...

    def batch_state(self) -> dict[str, int] | None:
        """What the engine is running now, {"running": .., "waiting": ..}, from the engine's own
        scheduler; None when it cannot say (the utilisation log then has s2c's in-flight count)."""
        ...

    def spread(self) -> dict | None:
        """Where the run's requests went, for an engine that spreads them over several servers or
        replicas (summary.json's `engine_spread`); None for one engine."""
        ...

    def close(self) -> None: ...


class Streaming:
    """`generate` for an engine that implements submit/collect/pending."""

    constraints: frozenset[str] = frozenset()

    def batch_state(self) -> dict[str, int] | None:
        return None

    def spread(self) -> dict | None:
        return None

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        out: list[Result | None] = [None] * len(requests)
        base = object()  # tags of our own, so that a caller's pending requests are not mixed in
        for i, request in enumerate(requests):
            self.submit((base, i), request)  # type: ignore[attr-defined]
        left = len(requests)
        while left:
            for done in self.collect():  # type: ignore[attr-defined]
                owner, i = done.tag
                if owner is not base:
                    raise RuntimeError("generate() called while the executor has requests in flight")
                out[i] = done.result
                left -= 1
        return out  # type: ignore[return-value]


class BatchStream:
    """submit/collect/pending for an engine whose natural call is a blocking `generate(batch)`.
    (So hf keeps its chunks: what was submitted runs as one batch at the next collect.)"""

    constraints: frozenset[str] = frozenset()

    def batch_state(self) -> dict[str, int] | None:
        return None

    def spread(self) -> dict | None:
        return None

    def submit(self, tag: Hashable, request: Request) -> None:
        self.__dict__.setdefault("_queued", []).append((tag, request))

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        queued = self.__dict__.get("_queued") or []  # the batch runs whole: max_seconds cannot cut it
        if not queued:
            return []
        self._queued = []
        results = self.generate([r for _, r in queued])  # type: ignore[attr-defined]
        if len(results) != len(queued):
            raise RuntimeError(f"{type(self).__name__}.generate returned {len(results)} results "
                               f"for {len(queued)} requests")
        return [Finished(tag, res) for (tag, _), res in zip(queued, results)]

    def pending(self) -> int:
        return len(self.__dict__.get("_queued") or ())
