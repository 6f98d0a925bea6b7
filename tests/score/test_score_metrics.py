"""Known answers for score/metrics.py, with scikit-learn as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from score.metrics import auroc, binary_scores, pearson, simulation_scores


def _windows(rng: np.random.Generator, n: int = 12, width: int = 16) -> list[np.ndarray]:
    acts = rng.exponential(1.0, size=(n, width)).astype(np.float32)
    acts[rng.random((n, width)) < 0.8] = 0.0
    return list(acts)


def test_perfect_simulation_scores_one() -> None:
    true = _windows(np.random.default_rng(0))
    result = simulation_scores(true, [t.copy() for t in true])
    assert (result.precision, result.recall, result.f1, result.auroc) == (1.0, 1.0, 1.0, 1.0)
    assert result.correlation == pytest.approx(1.0)
    assert result.n_tokens == 12 * 16
    assert result.n_positive == sum(int((t > 0).sum()) for t in true)


def test_all_zero_simulation_has_zero_recall_and_nan_correlation() -> None:
    true = _windows(np.random.default_rng(1))
    result = simulation_scores(true, [np.zeros_like(t) for t in true])
    assert result.recall == 0.0 and result.precision == 0.0 and result.f1 == 0.0
    assert result.auroc == 0.5  # a constant score ranks nothing
    assert math.isnan(result.correlation)


def test_constant_truth_gives_nan_auroc_and_correlation() -> None:
    true = [np.zeros(8, dtype=np.float32)]
    result = simulation_scores(true, [np.arange(8, dtype=np.float32)])
    assert math.isnan(result.auroc) and math.isnan(result.correlation)
    assert result.precision == 0.0 and result.n_positive == 0


def test_matches_sklearn_on_noisy_prediction() -> None:
    rng = np.random.default_rng(2)
    true = _windows(rng)
    sim = [t + rng.normal(0, 0.7, t.shape).astype(np.float32) for t in true]
    result = simulation_scores(true, sim, threshold=0.5)
    y = np.concatenate(true) > 0
    s = np.concatenate(sim)
    assert result.precision == pytest.approx(precision_score(y, s > 0.5))
    assert result.recall == pytest.approx(recall_score(y, s > 0.5))
    assert result.f1 == pytest.approx(f1_score(y, s > 0.5))
    assert result.auroc == pytest.approx(roc_auc_score(y, s))
    assert result.correlation == pytest.approx(np.corrcoef(np.concatenate(true), s)[0, 1], rel=1e-5)
    assert result.threshold == 0.5


def test_binary_scores_known_answer() -> None:
    y_true = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    y_pred = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    scores = binary_scores(y_true, y_pred)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert scores["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_binary_scores_no_positive_predictions_is_zero_not_error() -> None:
    scores = binary_scores(np.array([True, False]), np.array([False, False]))
    assert scores["precision"] == 0.0 and scores["recall"] == 0.0 and scores["f1"] == 0.0
    assert scores["balanced_accuracy"] == 0.5


def test_misaligned_windows_raise() -> None:
    with pytest.raises(ValueError, match="window 0"):
        simulation_scores([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(ValueError, match="windows"):
        simulation_scores([np.zeros(3)], [])


def test_pearson_known_answer() -> None:
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])) == pytest.approx(1.0)
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert math.isnan(pearson(np.array([1.0, 1.0]), np.array([1.0, 2.0])))


@pytest.mark.parametrize("seed", range(25))
def test_every_metric_equals_sklearn_on_random_and_tied_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y_true = rng.random(n) < rng.uniform(0.02, 0.9)
    # coarse scores make many ties, the case where AUROC implementations usually disagree
    y_score = np.round(rng.normal(size=n) + y_true * rng.uniform(0, 2), int(rng.integers(0, 3)))
    y_pred = y_score > 0.5
    scores = binary_scores(y_true, y_pred)
    assert scores["precision"] == pytest.approx(precision_score(y_true, y_pred, zero_division=0), abs=1e-12)
    assert scores["recall"] == pytest.approx(recall_score(y_true, y_pred, zero_division=0), abs=1e-12)
    assert scores["f1"] == pytest.approx(f1_score(y_true, y_pred, zero_division=0), abs=1e-12)
    if y_true.any() and not y_true.all():
        assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
        assert auroc(y_true, y_score) == pytest.approx(roc_auc_score(y_true, y_score), abs=1e-12)


def test_one_class_balanced_accuracy_matches_sklearn() -> None:
    y_true = np.zeros(6, dtype=bool)
    y_pred = np.array([1, 0, 0, 0, 0, 0], dtype=bool)
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(y_true, y_pred)
    assert binary_scores(y_true, y_pred)["balanced_accuracy"] == pytest.approx(expected)
    assert math.isnan(binary_scores(np.zeros(0, bool), np.zeros(0, bool))["balanced_accuracy"])
    assert math.isnan(auroc(y_true, y_pred.astype(float)))


def test_bounded_metrics_never_overshoot_their_bounds_by_rounding():
    """Rank sums and weighted sums can land an ulp outside [0, 1]; the store refuses such values, so the
    metric functions clamp them (and keep NaN)."""
    import math

    from score.metrics import clamp
    assert clamp(1.0000000000000153) == 1.0 and clamp(-1e-17) == 0.0 and clamp(-1.0000000002, -1.0) == -1.0
    assert math.isnan(clamp(math.nan)) and clamp(0.25) == 0.25
    rng = np.random.default_rng(0)
    for _ in range(200):
        y = rng.random(37) < 0.3
        s = np.where(y, 1.0, 0.0) + rng.random(37) * 1e-12  # perfectly separated: AUROC exactly 1
        if y.any() and not y.all():
            assert auroc(y, s) <= 1.0 and pearson(s, s * 3.0 + 1.0) <= 1.0
