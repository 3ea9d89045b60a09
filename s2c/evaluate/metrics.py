"""Task metrics for `s2c eval`: one outcome byte per input and metric (stats.py turns them into CIs).

"Equal" is `normalize` here as in vote and the keep rules, and `correct` (compiler/normalize.py)
scores one answer the same way wherever it is scored: eval, compile's kept labels, `s2c run`.
"""
from __future__ import annotations

from s2c.compiler import ir
from s2c.compiler.failures import Failed
from s2c.compiler.normalize import correct, normalize
from s2c.runtime.values import find_failed

MISSING = 2  # an outcome byte for "not scored": no gold value, or the input is not in the run


class Scores:
    """Per metric, one outcome byte per input (stats.py pairs them across systems and bootstraps
    them): 1 correct, 0 wrong, MISSING not scored. A metric with a gold field scores the inputs
    that have a gold value; swap_inconsistency scores every input, 1 where the mapped-back answer
    on the swapped input differs. An answer that cannot be read on either side counts as
    inconsistent."""

    def __init__(self, metrics: list[ir.MetricIR], n_inputs: int):
        self.labels = ir.metric_labels(metrics)
        self.outcomes = [bytearray([MISSING]) * n_inputs for _ in metrics]
        self.index = {id(m): i for i, m in enumerate(metrics)}

    def add(self, m: ir.MetricIR, i: int, pred, gold) -> None:
        """Score input `i` (its position in the eval's inputs)."""
        if gold in (None, ""):
            return
        self.outcomes[self.index[id(m)]][i] = correct(m.name, pred, gold)

    def add_pair(self, m: ir.MetricIR, i: int, original, swapped_mapped) -> None:
        unreadable = any(x is None or isinstance(x, Failed) or find_failed(x) is not None
                         for x in (original, swapped_mapped))
        self.outcomes[self.index[id(m)]][i] = unreadable or normalize(original) != normalize(swapped_mapped)

    def result(self) -> dict[str, float | None]:
        """Each metric's mean over the inputs it scored (None when it scored none)."""
        out = {}
        for label, o in zip(self.labels, self.outcomes):
            n = len(o) - o.count(MISSING)
            out[label] = o.count(1) / n if n else None
        return out

    def by_label(self) -> dict[str, bytearray]:
        return dict(zip(self.labels, self.outcomes))
