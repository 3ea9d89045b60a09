"""Uncertainty for `s2c eval`: a bootstrap CI per metric and per system, and a paired comparison
(bootstrap CI of the difference, exact McNemar test) between every two systems.

Each system keeps, per metric, one byte per input: 1 (correct, or for swap_inconsistency:
inconsistent), 0, or MISSING (no gold value, or the input is not in that system's run). The
systems run on the same inputs in the same order, so byte i is input i in every system.

Percentile bootstrap of a mean (Efron & Tibshirani 1993, ch. 13): draw n values with replacement,
take their mean, repeat B times; the CI is the (1-c)/2 and (1+c)/2 quantiles of those means.
Drawing n values with replacement from data whose distinct values v_j occur n_j times is the same
as drawing counts N ~ Multinomial(n, n_j / n) and taking Σ N_j v_j / n, so where there are few
distinct values we draw the counts: B × (number of distinct values) work instead of B × n. For
0/1 outcomes that is a Binomial(n, p̂) per resample, and a paired difference (values -1, 0, +1 per
input) is a 3-way multinomial, which makes 10,000 resamples cheap for a million inputs. Each CI
draws from a fresh generator seeded with SEED, so a system's CI does not depend on which other
systems ran.

Percentile intervals are too narrow on small sets and collapse to a point at 0 % or 100 % (every
resample of all-correct data is all correct): read them with n in mind.

Exact McNemar test (McNemar 1947, Psychometrika 12:153; the exact conditional form as in
Fagerland, Lydersen & Laake 2013, BMC Med. Res. Methodol. 13:91, who find the mid-p variant less
conservative): of the n_d = b01 + b10 inputs on which two systems disagree, b01 under H0 ~
Binomial(n_d, 1/2); two-sided p = min(1, 2 · P(X ≤ min(b01, b10))).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s2c.evaluate.metrics import MISSING

if TYPE_CHECKING:
    import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000  # the Monte Carlo error of a CI end is then under 1 % of the CI's width
SEED = 0
_CELLS = 4_000_000  # at most this many drawn counts or values in memory at once (32 MB)
# a multinomial count costs about 4 times a drawn index (numpy 2.3), so draw counts when there are
# at most a quarter as many distinct values as inputs: 1M inputs with 3,000 distinct token counts
# take 4 s for 10,000 resamples, 3,000 inputs with 2,500 distinct values 0.4 s
_MULTINOMIAL_COST = 4


def settings() -> dict:
    """How results.json's CIs and tests were made (its `stats` entry)."""
    return {"confidence": CONFIDENCE, "bootstrap_resamples": RESAMPLES, "seed": SEED,
            "ci": "percentile bootstrap", "diff_ci": "paired percentile bootstrap",
            "test": "exact McNemar, two-sided"}


def bootstrap_ci(values, *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                 seed: int = SEED) -> tuple[float, float] | None:
    """The percentile bootstrap CI of the mean of `values`; None for no values."""
    import numpy as np  # here, not at the top: `s2c trace` imports this module through evaluate.py

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    distinct, counts = np.unique(values, return_counts=True)
    n = int(values.size)
    rng = np.random.default_rng(seed)
    if distinct.size == 1:
        means = np.full(resamples, distinct[0])
    elif distinct.size * _MULTINOMIAL_COST <= n:  # few distinct values (always so for 0/1 outcomes): draw counts
        means = _chunked(resamples, distinct.size,
                         lambda k: rng.multinomial(n, counts / n, size=k) @ distinct / n)
    else:  # as many distinct values as inputs, nearly (tokens on a small set): draw the inputs
        means = _chunked(resamples, n, lambda k: values[rng.integers(0, n, size=(k, n))].mean(axis=1))
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def _chunked(resamples: int, width: int, draw) -> np.ndarray:
    """draw(k) -> k resampled means, called with k × width ≤ _CELLS, to `resamples` means in all."""
    import numpy as np

    rows = max(1, _CELLS // width)
    return np.concatenate([draw(min(rows, resamples - start)) for start in range(0, resamples, rows)])


def mcnemar_p(b01: int, b10: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts; 1.0 when there are none.

    P(X ≤ k) for X ~ Binomial(n, 1/2) is summed from the term at k downwards with the ratio
    C(n, i-1) / C(n, i) = i / (n - i + 1), in floats from log C(n, k) - n log 2, so it is quick and
    does not overflow for a million discordant pairs (math.comb would build 300,000-digit integers).
    """
    n, k = b01 + b10, min(b01, b10)
    if 2 * k >= n:  # also n == 0: the tail holds half the mass or more
        return 1.0
    log_term = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    term, total = 1.0, 1.0  # relative to the term at k
    for i in range(k, 0, -1):  # the terms fall at least geometrically, since k < n / 2
        term *= i / (n - i + 1)
        total += term
        if term < total * 1e-17:
            break
    return min(1.0, 2 * math.exp(log_term + math.log(total)))


@dataclass
class Comparison:
    """System `b` against system `a` on one metric, over the inputs both scored; diff = b - a."""

    metric: str
    a: str
    b: str
    n: int
    diff: float | None
    diff_ci: tuple[float, float] | None
    b01: int  # a 0, b 1: b correct where a is not (for swap_inconsistency: b inconsistent where a is not)
    b10: int  # a 1, b 0
    p: float

    def as_dict(self) -> dict:
        return {"metric": self.metric, "a": self.a, "b": self.b, "n": self.n,
                "diff": None if self.diff is None else round(self.diff, 6), "diff_ci": rounded(self.diff_ci),
                "mcnemar": {"b01": self.b01, "b10": self.b10, "p": float(f"{self.p:.6g}")}}


def compare(metric: str, a: str, outcomes_a, b: str, outcomes_b) -> Comparison:
    """Pair two systems' outcome bytes for one metric (see the module docstring)."""
    import numpy as np

    xa = np.frombuffer(outcomes_a, dtype=np.uint8)
    xb = np.frombuffer(outcomes_b, dtype=np.uint8)
    both = (xa != MISSING) & (xb != MISSING)
    d = xb[both].astype(np.int8) - xa[both].astype(np.int8)  # -1, 0, +1 per input
    b01, b10 = int((d == 1).sum()), int((d == -1).sum())
    diff = float(d.mean()) if d.size else None
    return Comparison(metric, a, b, int(d.size), diff, bootstrap_ci(d), b01, b10, mcnemar_p(b01, b10))


def metric_ci(outcomes) -> tuple[float, float] | None:
    """The CI of one system's metric from its outcome bytes; None when nothing was scored."""
    import numpy as np

    x = np.frombuffer(outcomes, dtype=np.uint8)
    return bootstrap_ci(x[x != MISSING])


def rounded(ci: tuple[float, float] | None, digits: int = 6) -> list[float] | None:
    """A CI as results.json writes it."""
    return None if ci is None else [round(ci[0], digits), round(ci[1], digits)]


def compare_all(systems: list[tuple[str, dict]], metrics: list[str]) -> list[Comparison]:
    """Every later system against every earlier one (in the table's order), metric by metric.
    `systems`: (name, {metric: outcome bytes})."""
    return [compare(m, a, oa[m], b, ob[m])
            for i, (a, oa) in enumerate(systems) for b, ob in systems[i + 1:] for m in metrics]
