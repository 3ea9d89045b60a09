"""The CI and paired-test maths of `s2c eval` (s2c/evaluate/stats.py) against known values and
brute force, the outcome bytes they read (metrics.Scores), and how the comparisons print."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from s2c.evaluate import stats
from s2c.evaluate.metrics import MISSING, Scores
from s2c.evaluate.report import comparison_lines


def binomial_two_sided(b: int, c: int) -> float:
    """The exact McNemar p-value by its definition, in exact arithmetic."""
    n, k = b + c, min(b, c)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def test_mcnemar_known_value():
    # 12 discordant pairs, 3 one way: 2 * (1 + 12 + 66 + 220) / 4096 = 0.146
    assert binomial_two_sided(9, 3) == pytest.approx(0.14599609375, abs=1e-15)
    assert stats.mcnemar_p(9, 3) == pytest.approx(0.14599609375, rel=1e-12)
    assert stats.mcnemar_p(3, 9) == stats.mcnemar_p(9, 3)
    assert stats.mcnemar_p(0, 5) == pytest.approx(2 / 32, rel=1e-12)


@pytest.mark.parametrize("b,c", [(b, c) for b in range(0, 41, 3) for c in range(0, 70, 7)])
def test_mcnemar_matches_the_binomial_sum(b, c):
    assert stats.mcnemar_p(b, c) == pytest.approx(binomial_two_sided(b, c), rel=1e-10, abs=1e-300)


def test_mcnemar_degenerate_cases():
    assert stats.mcnemar_p(0, 0) == 1.0  # no discordant pairs: nothing to test
    assert stats.mcnemar_p(7, 7) == 1.0
    assert stats.mcnemar_p(0, 1) == 1.0  # one pair can never be significant: 2 * 1/2


def test_mcnemar_a_million_discordant_pairs_is_quick_and_close_to_the_normal_approximation():
    b, c = 500_000, 502_500
    z = (abs(b - c) - 1) / math.sqrt(b + c)  # with continuity correction
    normal = math.erfc(z / math.sqrt(2))
    assert stats.mcnemar_p(b, c) == pytest.approx(normal, rel=0.02)
    assert 0.01 < stats.mcnemar_p(b, c) < 0.02
    assert stats.mcnemar_p(0, 1_000_000) == 0.0  # 2^-999999 underflows, and it is not an error


def test_bootstrap_ci_empty_and_constant():
    assert stats.bootstrap_ci([]) is None
    assert stats.bootstrap_ci([1, 1, 1]) == (1.0, 1.0)  # the percentile bootstrap collapses at 100 %
    assert stats.bootstrap_ci([7.0]) == (7.0, 7.0)


def test_bootstrap_ci_of_a_proportion_is_near_the_normal_interval_and_reproducible():
    x = np.array([1] * 200 + [0] * 200, dtype=np.uint8)
    lo, hi = stats.bootstrap_ci(x)
    half = 1.96 * math.sqrt(0.25 / 400)  # 0.049
    assert lo == pytest.approx(0.5 - half, abs=0.006) and hi == pytest.approx(0.5 + half, abs=0.006)
    y = np.linspace(0, 1, 37)  # continuous values, so that another seed shows in the quantiles
    assert stats.bootstrap_ci(y) == stats.bootstrap_ci(y)  # a fixed seed
    assert stats.bootstrap_ci(y, seed=1) != stats.bootstrap_ci(y)


def test_drawing_counts_is_the_same_bootstrap_as_drawing_values():
    """The multinomial shortcut against resampling the values themselves, on non-binary data."""
    rng = np.random.default_rng(42)
    x = rng.choice([3.0, 10.0, 11.0, 40.0, 200.0], size=60, p=[0.4, 0.2, 0.2, 0.15, 0.05])
    means = x[rng.integers(0, x.size, size=(40_000, x.size))].mean(axis=1)
    brute = np.quantile(means, [0.025, 0.975])
    lo, hi = stats.bootstrap_ci(x, resamples=40_000)
    width = brute[1] - brute[0]
    assert abs(lo - brute[0]) < 0.03 * width and abs(hi - brute[1]) < 0.03 * width
    assert lo < x.mean() < hi


@pytest.mark.parametrize("x", [[0, 1, 1, 2, 5, 5, 9], [0, 1] * 20], ids=["draw values", "draw counts"])
def test_chunked_draws_equal_one_draw(monkeypatch, x):
    whole = stats.bootstrap_ci(x, resamples=1000)
    monkeypatch.setattr(stats, "_CELLS", 15)  # a few resamples per chunk, the last one short
    assert stats.bootstrap_ci(x, resamples=1000) == whole


def test_values_drawn_and_counts_drawn_agree(monkeypatch):
    """The two ways of drawing (stats._MULTINOMIAL_COST picks one) give the same interval."""
    x = np.repeat([1.0, 4.0, 6.0, 30.0], [30, 20, 8, 2])
    by_counts = stats.bootstrap_ci(x, resamples=40_000)  # 4 distinct values in 60
    monkeypatch.setattr(stats, "_MULTINOMIAL_COST", 100)
    by_values = stats.bootstrap_ci(x, resamples=40_000)
    assert by_counts != by_values  # another draw
    assert by_counts == pytest.approx(by_values, abs=0.03 * (by_values[1] - by_values[0]))


def outcome(*xs) -> bytearray:
    return bytearray(MISSING if x is None else x for x in xs)


def test_compare_pairs_only_inputs_both_systems_scored():
    a = outcome(1, 0, 1, 1, None, 0, 0, 0)
    b = outcome(1, 1, 0, 1, 1, None, 1, 1)
    c = stats.compare("agreement", "A", a, "B", b)
    # pairs: (1,1) (0,1) (1,0) (1,1) (0,1) (0,1): three 0->1, one 1->0
    assert (c.n, c.b01, c.b10) == (6, 3, 1)
    assert c.diff == pytest.approx(2 / 6)
    assert c.p == pytest.approx(binomial_two_sided(3, 1))
    lo, hi = c.diff_ci
    assert -1 <= lo < c.diff < hi <= 1
    assert c.as_dict() == {"metric": "agreement", "a": "A", "b": "B", "n": 6, "diff": 0.333333,
                           "diff_ci": [round(lo, 6), round(hi, 6)], "mcnemar": {"b01": 3, "b10": 1, "p": 0.625}}


def test_compare_with_nothing_in_common_has_no_difference():
    c = stats.compare("m", "A", outcome(1, None), "B", outcome(None, 0))
    assert (c.n, c.diff, c.diff_ci, c.p) == (0, None, None, 1.0)
    assert stats.metric_ci(outcome(None, None)) is None


def test_paired_ci_is_narrower_than_the_unpaired_one_when_systems_agree_mostly():
    """What pairing buys: two systems right on the same hard inputs."""
    a = outcome(*([1] * 60 + [0] * 40))
    b = outcome(*([1] * 60 + [0] * 30 + [1] * 10))
    lo, hi = stats.compare("m", "A", a, "B", b).diff_ci
    (alo, ahi), (blo, bhi) = stats.metric_ci(a), stats.metric_ci(b)
    unpaired = math.hypot(ahi - alo, bhi - blo)  # about the width of a CI for independent samples
    assert hi - lo < 0.7 * unpaired
    assert lo > 0  # 10 of 10 discordant pairs go one way
    assert stats.mcnemar_p(10, 0) == pytest.approx(2 / 1024)


def test_compare_all_orders_pairs_then_metrics():
    s = [(name, {"m1": outcome(1), "m2": outcome(0)}) for name in ("S1", "S2", "S3")]
    got = [(c.a, c.b, c.metric) for c in stats.compare_all(s, ["m1", "m2"])]
    assert got == [("S1", "S2", "m1"), ("S1", "S2", "m2"), ("S1", "S3", "m1"), ("S1", "S3", "m2"),
                   ("S2", "S3", "m1"), ("S2", "S3", "m2")]


def test_comparison_lines():
    c = stats.Comparison("agreement", "System 1", "System 2", 120, 0.1, (-0.025, 0.225), 9, 3,
                         stats.mcnemar_p(9, 3))
    none = stats.Comparison("agreement", "System 1", "System 2", 0, None, None, 0, 0, 1.0)
    assert comparison_lines([c, none]) == [
        "agreement, System 2 − System 1: +10.0 points [−2.5, +22.5], McNemar p = 0.146 (b=9, c=3)",
        "agreement, System 2 − System 1: no input scored by both",
    ]


class Metric:
    def __init__(self, name):
        self.name = name


def test_scores_keep_one_byte_per_input():
    acc, swap = Metric("normalized_match"), Metric("swap_inconsistency")
    s = Scores([acc, swap], 4)
    s.add(acc, 0, "Paris", "paris")
    s.add(acc, 1, "Rome", "paris")
    s.add(acc, 3, "x", None)  # no gold: not scored
    s.add_pair(swap, 0, "A", "A")
    s.add_pair(swap, 1, "A", "B")
    s.add_pair(swap, 2, "A", None)  # unreadable on the swapped side: inconsistent
    assert s.by_label() == {"normalized_match": outcome(1, 0, None, None),
                            "swap_inconsistency": outcome(0, 1, 1, None)}
    assert s.result() == {"normalized_match": 0.5, "swap_inconsistency": 2 / 3}
    assert Scores([acc], 0).result() == {"normalized_match": None}
