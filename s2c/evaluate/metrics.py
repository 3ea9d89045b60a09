"""Task metrics for `s2c eval`, accumulated one example at a time (nothing kept per example).

"Equal" is `functions.normalize` here as in vote and the keep rules.
"""
from __future__ import annotations

import re

from s2c.compiler import ir
from s2c.compiler.functions import Failed, normalize
from s2c.runtime.values import find_failed


def _choice(x) -> str:
    s = str(x).strip()
    m = re.search(r"\[\[([A-Za-z])\]\]|^\(?([A-Za-z])\)?[.:]?$", s)
    return (m.group(1) or m.group(2)).upper() if m else normalize(s)


SCORERS = {
    "exact_match": lambda a, g: str(a).strip() == str(g).strip(),
    "normalized_match": lambda a, g: normalize(a) == normalize(g),
    "choice_accuracy": lambda a, g: _choice(a) == _choice(g),
    "agreement": lambda a, g: _choice(a) == _choice(g),  # agreement with human labels (ties count)
}


def correct(metric: str, pred, gold) -> bool:
    """An unparseable prediction counts as wrong."""
    return not (pred is None or find_failed(pred) is not None) and bool(SCORERS[metric](pred, gold))


class Scores:
    """Running means per metric: over examples with a gold value, or (swap_inconsistency) over
    every example: the share whose mapped-back answer on the swapped input differs. An answer
    that cannot be read on either side counts as inconsistent."""

    def __init__(self, metrics: list[ir.MetricIR]):
        self.metrics = metrics
        self.hits = {m.name: 0 for m in metrics}
        self.n = {m.name: 0 for m in metrics}

    def add(self, m: ir.MetricIR, pred, gold) -> None:
        if gold in (None, ""):
            return
        self.n[m.name] += 1
        self.hits[m.name] += correct(m.name, pred, gold)

    def add_pair(self, m: ir.MetricIR, original, swapped_mapped) -> None:
        self.n[m.name] += 1
        unreadable = any(x is None or isinstance(x, Failed) or find_failed(x) is not None
                         for x in (original, swapped_mapped))
        self.hits[m.name] += unreadable or normalize(original) != normalize(swapped_mapped)

    def result(self) -> dict[str, float | None]:
        return {name: (self.hits[name] / self.n[name] if self.n[name] else None) for name in self.hits}
