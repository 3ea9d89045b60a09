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
        self.labels = labels(metrics)
        self.hits = [0] * len(metrics)
        self.n = [0] * len(metrics)
        self.index = {id(m): i for i, m in enumerate(metrics)}

    def add(self, m: ir.MetricIR, pred, gold) -> None:
        if gold in (None, ""):
            return
        i = self.index[id(m)]
        self.n[i] += 1
        self.hits[i] += correct(m.name, pred, gold)

    def add_pair(self, m: ir.MetricIR, original, swapped_mapped) -> None:
        i = self.index[id(m)]
        self.n[i] += 1
        unreadable = any(x is None or isinstance(x, Failed) or find_failed(x) is not None
                         for x in (original, swapped_mapped))
        self.hits[i] += unreadable or normalize(original) != normalize(swapped_mapped)

    def result(self) -> dict[str, float | None]:
        return {label: (h / n if n else None) for label, h, n in zip(self.labels, self.hits, self.n)}


def labels(metrics: list[ir.MetricIR]) -> list[str]:
    """Each metric's name in tables and results.json: the metric's name, or, where one metric
    appears on several lines, `name#k` (in the eval section's order)."""
    names = [m.name for m in metrics]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}#{seen[name]}")
    return out
