"""Roles bound to engines of their own: the teacher on an OpenAI-compatible server (or another
local engine) while the other roles stay on the local student's engine.

    engine = RoleEngines(student_engine, {"teacher": server_engine})

Each request goes to its role's engine (`Request.role`); roles not bound go to the default engine.
Every engine keeps its own window, batching and retries; `collect` gathers what any of them has
finished. While more than one has requests in flight, each is asked in turn for at most
POLL_SECONDS, so a local engine keeps stepping while a server's replies arrive on their threads;
with one busy engine, its own blocking collect is used.

A role's model identity (the cache key) is its engine's model: `model_id("teacher")` is the
server's model, so a cached teacher completion is never served to the student or the reverse.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

from s2c.runtime.engines.base import Engine, Finished, Request, Streaming

POLL_SECONDS = 0.05  # the longest one engine is waited on while another also has requests in flight


class RoleEngines(Streaming):
    def __init__(self, default: Engine, bound: Mapping[str, Engine]):
        self.default = default
        self.bound = dict(bound)
        self.name = default.name + "".join(f" + {role}: {e.name}" for role, e in self.bound.items())
        # a constrained call may go to any of them (its role decides): enforce what all enforce
        self.constraints = frozenset.intersection(frozenset(default.constraints),
                                                  *(frozenset(e.constraints) for e in self.bound.values()))
        self._engines = [default, *self.bound.values()]
        self._turn = 0

    def route(self, role: str) -> tuple[Engine, str]:
        """The engine serving `role`, and the role it has there (a bound engine serves its role
        as its default)."""
        return (self.bound[role], "default") if role in self.bound else (self.default, role)

    def model_id(self, role: str = "default") -> str:
        engine, there = self.route(role)
        return engine.model_id(there)

    def role_models(self) -> dict[str, str]:
        own = getattr(self.default, "role_models", None)
        models = own() if callable(own) else {"default": self.default.model_id("default")}
        return models | {role: e.model_id("default") for role, e in self.bound.items()}

    def submit(self, tag: Hashable, request: Request) -> None:
        self.route(request.role)[0].submit(tag, request)

    def collect(self, max_seconds: float | None = None) -> list[Finished]:
        busy = [e for e in self._engines if e.pending()]
        if len(busy) == 1 and max_seconds is None:
            return busy[0].collect()
        done: list[Finished] = []
        while busy and not done:
            self._turn += 1  # start with another engine each round: none is starved
            for i in range(len(busy)):
                done += busy[(self._turn + i) % len(busy)].collect(max_seconds=POLL_SECONDS)
            if max_seconds is not None:
                break
            busy = [e for e in self._engines if e.pending()]
        return done

    def pending(self) -> int:
        return sum(e.pending() for e in self._engines)

    @property
    def window(self) -> int | None:
        """A batch-mode engine among them takes waves as large as it does (http.HttpEngine.window)."""
        sizes = [w for e in self._engines if (w := getattr(e, "window", None))]
        return max(sizes) if sizes else None

    def batch_states(self) -> list[str]:
        return [x for e in self._engines for x in getattr(e, "batch_states", list)()]

    def attach_run(self, run_dir) -> None:
        for e in self._engines:
            attach = getattr(e, "attach_run", None)
            if attach is not None:
                attach(run_dir)

    def batch_state(self) -> dict[str, int] | None:
        return self.default.batch_state()

    def spread(self) -> dict | None:
        parts = {role: e.spread() for role, e in {"default": self.default, **self.bound}.items()}
        parts = {role: s for role, s in parts.items() if s}
        return {"roles": parts} if parts else None

    @property
    def startup_seconds(self) -> float:
        return sum(getattr(e, "startup_seconds", 0.0) for e in self._engines)

    @property
    def starts(self) -> int:
        return sum(getattr(e, "starts", 1) for e in self._engines)

    def close(self) -> None:
        for e in self._engines:
            e.close()
