"""How a value fails: raised by the library, carried by the runtime, read by distill and evaluate.

An implementation that cannot produce a value raises `TransformError`; the runtime marks that value
`Failed` with the reason, skips what depends on it, and carries on. Nothing here imports s2c.
"""
from __future__ import annotations

from dataclasses import dataclass


class TransformError(Exception):
    """A transform could not produce a value from its input (e.g. `take` with k < 0)."""


class NoMatch(TransformError):
    """A parse found nothing in a model answer (no [[A]], no number, no marker): "unparsed", which
    reports keep apart from failures (the engine, a template, a transform on bad input)."""


@dataclass(frozen=True)
class Failed:
    """A value that could not be computed, with the reason and the node that failed first."""

    reason: str
    node: str
    unparsed: bool = False  # a parse found nothing (NoMatch), as opposed to a failure

    def __bool__(self):  # never truthy by accident
        return False


@dataclass(frozen=True)
class Skipped(Failed):
    """A value of a `scan` iteration past the end of its list: never computed, and not a failure
    (summaries and traces say "skipped"). It flows like Failed, so nothing reads it by accident."""

