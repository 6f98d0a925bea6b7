"""Natural-population estimates from the weighted score set (inverse-probability weighting).

The score set over-represents activating windows (it covers every activation decile), so precision on
it is inflated against ordinary text. Each score example carries a weight w: the number of natural
(score-side) tokens each of its tokens stands for (explain/sampling/weights.py). Weighted sums over
the score set are then Horvitz-Thompson estimates of population totals, and the metrics are ratios of
them:

- precision = sum w * tp / sum w * pred, recall = sum w * tp / sum w * true, F1 = 2 tp / (pred + true)
  (weighted), each 0 when its denominator is (scikit-learn's zero_division=0);
- AUROC: the weighted Mann-Whitney statistic (each (positive, negative) pair counts w_pos * w_neg, ties
  one half): what scikit-learn's roc_auc_score(sample_weight=w) gives, at a fraction of its cost (see
  score/metrics.py for why the scorers do not call scikit-learn per latent);
- correlation: weighted Pearson (weighted means, covariance and variances);
- intervals: the Poisson bootstrap of score/intervals.py over the windows, with each window's
  weighted counts as its unit.

A ratio of two HT totals is consistent, not unbiased: with few windows per stratum the estimate of one
latent is noisy, and its median over latents is what the reports compare. The test oracle is a
population enumerated by brute force (tests/score/test_ipw.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from score.intervals import prf_intervals
from score.metrics import clamp
from score.simulators.base import WindowSimulation


def weighted_binary(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """Weighted precision, recall and F1 of boolean predictions (y_true, y_pred, w: [n] each)."""
    y_true, y_pred = np.asarray(y_true, dtype=bool).ravel(), np.asarray(y_pred, dtype=bool).ravel()
    w = np.asarray(w, dtype=np.float64).ravel()
    tp, pred, true = float(w[y_true & y_pred].sum()), float(w[y_pred].sum()), float(w[y_true].sum())
    return {"precision": clamp(tp / pred) if pred > 0 else 0.0, "recall": clamp(tp / true) if true > 0 else 0.0,
            "f1": clamp(2 * tp / (pred + true)) if pred + true > 0 else 0.0}


def weighted_auroc(y_true: np.ndarray, y_score: np.ndarray, w: np.ndarray) -> float:
    """AUROC of graded y_score for boolean y_true with token weights w ([n] each); NaN when either class
    has no weight."""
    y_true = np.asarray(y_true, dtype=bool).ravel()
    y_score, w = np.asarray(y_score, dtype=np.float64).ravel(), np.asarray(w, dtype=np.float64).ravel()
    if not y_true.shape == y_score.shape == w.shape:
        raise ValueError(f"weighted_auroc: {y_true.size} labels, {y_score.size} scores, {w.size} weights")
    w_pos, w_neg = float(w[y_true].sum()), float(w[~y_true].sum())
    if w_pos <= 0 or w_neg <= 0:
        return math.nan
    values, group = np.unique(y_score, return_inverse=True)  # ascending distinct scores
    pos = np.bincount(group.ravel(), w * y_true, len(values))
    neg = np.bincount(group.ravel(), w * ~y_true, len(values))
    below = np.cumsum(neg) - neg  # negative weight strictly below each value
    return clamp(float((pos * (below + 0.5 * neg)).sum() / (w_pos * w_neg)))


def weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    """Weighted Pearson correlation of a and b ([n] each, weights w [n]); NaN when either is constant
    on the tokens of positive weight or when fewer than two have any weight."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    w = np.asarray(w, dtype=np.float64).ravel()
    keep = w > 0
    a, b, w = a[keep], b[keep], w[keep]
    # the exact-constancy test: a weighted mean of equal values can differ from them by an ulp
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    total = w.sum()
    da, db = a - (w @ a) / total, b - (w @ b) / total
    return clamp(float((w @ (da * db)) / math.sqrt((w @ (da * da)) * (w @ (db * db)))), -1.0)


def ipw_totals(true_acts: Sequence[np.ndarray], windows: Sequence[WindowSimulation], weights: Sequence[float],
               threshold: float) -> dict[str, np.ndarray]:
    """Per-window weighted counts ([windows] each): tp, n_pred, n_true and n_tokens; their sums are the
    Horvitz-Thompson estimates of the population's totals (unbiased: E[sum] = the population's count).

    true_acts[i]: [window_i] float32 truth; windows[i]: its simulation, binarised as
    score/simulation.py::window_scores; weights[i] >= 0: the natural tokens each of its tokens stands for.
    """
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(true_acts) or len(windows) != len(true_acts) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"{len(w)} weights and {len(windows)} simulations for {len(true_acts)} windows, "
                         "or a negative or non-finite weight")
    sizes = np.array([len(t) for t in true_acts], dtype=np.int64)
    if len(sizes) == 0:
        return {name: np.zeros(0) for name in ("tp", "n_pred", "n_true", "n_tokens")}
    y_true = np.concatenate([np.asarray(t, dtype=np.float32) for t in true_acts]) > 0
    y_pred = np.concatenate([window.predicted_active(threshold) for window in windows])
    if y_pred.shape != y_true.shape:
        raise ValueError(f"{y_pred.size} simulated tokens for {y_true.size} true ones")
    unit = np.repeat(np.arange(len(sizes)), sizes)  # token -> its window

    def per_window(mask: np.ndarray) -> np.ndarray:
        return w * np.bincount(unit, mask, len(sizes))

    return {"tp": per_window(y_true & y_pred), "n_pred": per_window(y_pred), "n_true": per_window(y_true),
            "n_tokens": w * sizes}


def ipw_scores(true_acts: Sequence[np.ndarray], windows: Sequence[WindowSimulation], weights: Sequence[float],
               threshold: float) -> dict[str, float | int] | None:
    """The natural-population estimate of one latent's score row from its weighted score windows
    (arguments as `ipw_totals`).

    Returns precision, recall, f1, auroc, correlation, threshold, n_tokens and n_positive (the weighted
    counts, rounded) and the interval columns; None when the weights cover no token.
    """
    totals = ipw_totals(true_acts, windows, weights, threshold)
    if float(totals["n_tokens"].sum()) <= 0:
        return None
    sizes = [len(t) for t in true_acts]
    token_w = np.repeat(np.asarray(weights, dtype=np.float64), sizes)
    true = np.concatenate([np.asarray(t, dtype=np.float32) for t in true_acts])
    sim = np.concatenate([s.values for s in windows])
    y_true, y_pred = true > 0, np.concatenate([s.predicted_active(threshold) for s in windows])
    return {**weighted_binary(y_true, y_pred, token_w), "auroc": weighted_auroc(y_true, sim, token_w),
            "correlation": weighted_pearson(true, sim, token_w), "threshold": float(threshold),
            "n_tokens": round(float(totals["n_tokens"].sum())), "n_positive": round(float(totals["n_true"].sum())),
            # each window's weighted counts are one unit of the bootstrap
            **prf_intervals(totals["tp"], totals["n_pred"], totals["n_true"], seed=0)}
