"""The engine's load over time, sampled on a thread while a run goes.

A thread, because the run's own thread is inside the engine (vLLM's `step()`) for as long as no
request finishes, which can be tens of seconds while a stage's prompts are prefilled: sampling
from there would miss exactly the stretches worth seeing. Each sample is (seconds since start,
requests in flight as s2c counts them, and what the engine's scheduler runs and holds waiting
when it can say: `Engine.batch_state()`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

PERIOD = 0.25  # seconds between samples
HEADER = "seconds,in_flight,running,waiting"

Sink = Callable[[float, int, "int | None", "int | None"], None]


class LoadSampler:
    """`with LoadSampler(engine, sink):` calls sink(t, in_flight, running, waiting) every period."""

    def __init__(self, engine, sink: Sink, period: float = PERIOD):
        self.engine, self.sink, self.period = engine, sink, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="s2c-load", daemon=True)

    def __enter__(self) -> "LoadSampler":
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            state = self.engine.batch_state() or {}
            self.sink(round(time.monotonic() - self._t0, 2), self.engine.pending(),
                      state.get("running"), state.get("waiting"))


def csv_sink(f) -> Sink:
    """Lines of load.csv into the open text file `f` (header first)."""
    f.write(HEADER + "\n")

    def write(t, in_flight, running, waiting):
        f.write(f"{t},{in_flight},{'' if running is None else running},{'' if waiting is None else waiting}\n")
    return write
