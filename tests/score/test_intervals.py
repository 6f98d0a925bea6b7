"""Bootstrap intervals: a known precision is covered about 95% of the time; medians' intervals too."""

from __future__ import annotations

import math

import numpy as np

from score.intervals import median_interval, prf_intervals


def test_precision_interval_covers_the_true_precision_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 300
    for trial in range(trials):
        n_pred = rng.poisson(2.0, size=150).astype(float)  # predictions per context
        tp = rng.binomial(n_pred.astype(int), 0.7).astype(float)  # each correct with probability 0.7
        n_true = tp + rng.poisson(1.0, size=150)
        iv = prf_intervals(tp, n_pred, n_true, seed=trial)
        hits += iv["precision_lo"] <= 0.7 <= iv["precision_hi"]
        assert iv["precision_lo"] <= tp.sum() / n_pred.sum() <= iv["precision_hi"]
    assert 0.88 <= hits / trials <= 0.99


def test_intervals_shrink_with_more_contexts_and_are_nan_without_any():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        n_pred = rng.poisson(2.0, size=n).astype(float)
        tp = rng.binomial(n_pred.astype(int), 0.5).astype(float)
        iv = prf_intervals(tp, n_pred, tp + 1, seed=0)
        widths.append(iv["f1_hi"] - iv["f1_lo"])
    assert widths[1] < widths[0] / 2  # ~1/sqrt(16) = 1/4 of the width
    assert all(math.isnan(v) for v in prf_intervals(np.zeros(0), np.zeros(0), np.zeros(0), seed=0).values())


def test_median_interval_covers_the_population_median():
    rng = np.random.default_rng(2)
    hits = sum(lo <= 0.0 <= hi for lo, hi in (median_interval(rng.standard_normal(400), seed=s, n_boot=300)
                                              for s in range(100)))
    assert 0.85 <= hits / 100 <= 1.0
