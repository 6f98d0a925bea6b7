"""decile_recall against a brute-force definition: sort the active tokens, cut into ten equal parts."""

from __future__ import annotations

import numpy as np

from score.deciles import decile_recall


def test_equal_weights_are_ten_equal_bins_by_activation():
    rng = np.random.default_rng(0)
    true = rng.permutation(np.arange(1, 101, dtype=np.float64))
    predicted = true > 50  # covers exactly the strongest half
    assert decile_recall(true, predicted) == [0.0] * 5 + [1.0] * 5
    predicted = rng.random(100) < 0.5
    order = np.argsort(true)
    expected = [float(predicted[order[10 * d:10 * d + 10]].mean()) for d in range(10)]
    assert decile_recall(true, predicted) == expected


def test_weights_set_the_bins_by_mass():
    rng = np.random.default_rng(1)
    true, predicted = rng.uniform(0.1, 5, 40), rng.random(40) < 0.6
    assert decile_recall(true, predicted, np.full(40, 2.5)) == decile_recall(true, predicted)
    # a weak token of weight 9 fills the bottom 90 % of the mass; its middle (45 %) is in decile 4
    got = decile_recall(np.array([1.0, 2.0]), np.array([False, True]), np.array([9.0, 1.0]))
    assert got == [None] * 4 + [0.0] + [None] * 4 + [1.0]
    assert decile_recall(np.ones(3), np.array([True, False, True])).count(None) == 7


def test_empty_input_gives_no_deciles():
    assert decile_recall(np.zeros(0), np.zeros(0, bool)) == [None] * 10
