"""Token-level metrics that compare a simulated activation with the true one.

One implementation of each metric, shared by every scorer (simulation, detection, fuzzing):

- truth is binarised as `true > 0` (a latent "fires" on a token when its activation is positive);
- the prediction is binarised as `sim > threshold` (0 for N2G, whatever the simulator declares otherwise);
- precision / recall / F1 / balanced accuracy follow scikit-learn's definitions with `zero_division=0`;
- AUROC ranks the graded prediction against the binary truth (NaN when only one class is present);
- Pearson correlation is over all tokens of the graded values (NaN when either side is constant).

Why not call scikit-learn directly: in scikit-learn 1.9 one `precision_recall_fscore_support` or
`roc_auc_score` call costs 5-15 ms of input validation, whatever the input size, which is minutes for
4096 latents x (explainer + random baseline). The counts below take microseconds, and
tests/score/test_score_metrics.py checks them against scikit-learn (the oracle) on random and tied inputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

METRICS = ("precision", "recall", "f1", "auroc", "correlation")
"""The graded metrics every score row has (what the reports show and summarise)."""


@dataclass(frozen=True)
class ScoreResult:
    """Scores of one explanation for one latent over a set of token windows."""

    precision: float
    recall: float
    f1: float
    auroc: float
    correlation: float
    threshold: float
    n_tokens: int
    n_positive: int
    """Tokens where the true activation is > 0."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and balanced accuracy of boolean predictions ([n] each).

    Same values as scikit-learn with zero_division=0: a ratio with a zero denominator is 0. Empty
    inputs give NaN balanced accuracy; with one class in `y_true` it is that class's recall (as sklearn).
    """
    y_true = np.asarray(y_true, dtype=bool).ravel()
    y_pred = np.asarray(y_pred, dtype=bool).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} entries but y_pred has {y_pred.size}")
    n_true = int(np.count_nonzero(y_true))
    n_pred = int(np.count_nonzero(y_pred))
    tp = int(np.count_nonzero(y_true & y_pred))
    tn = y_true.size - n_true - n_pred + tp
    return {
        "precision": _ratio(tp, n_pred),
        "recall": _ratio(tp, n_true),
        "f1": _ratio(2 * tp, n_true + n_pred),  # sklearn's form of 2PR/(P+R), exact in counts
        "balanced_accuracy": _balanced_accuracy(tp, tn, n_true, y_true.size - n_true),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _balanced_accuracy(tp: int, tn: int, n_pos: int, n_neg: int) -> float:
    """Mean recall over the classes present in the truth (NaN when there is no truth at all)."""
    recalls = [hits / n for hits, n in ((tp, n_pos), (tn, n_neg)) if n]
    return sum(recalls) / len(recalls) if recalls else math.nan


def clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    """`value` clipped to [low, high] (NaN stays NaN): sums of floats that form a bounded ratio (rank sums,
    weighted counts, correlations) can overshoot their bound by an ulp or two, and the store refuses an
    AUROC of 1.0000000000000153 (flows/store/checks.py::VALUE_CHECKS)."""
    return value if math.isnan(value) else min(high, max(low, value))


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve of graded `y_score` ([n]) against boolean `y_true` ([n]); NaN if one class.

    Computed as the Mann-Whitney statistic with average ranks for ties, which equals the trapezoidal ROC
    area scikit-learn's roc_auc_score gives (ties count one half).
    """
    y_true = np.asarray(y_true, dtype=bool).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"auroc: {y_true.size} labels vs {y_score.size} scores")
    n_pos = int(np.count_nonzero(y_true))
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(y_score, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct value
    rank_sum = float(average_rank[inverse.ravel()][y_true].sum())
    return clamp((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors ([n] each); NaN when either one is constant."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"pearson: {a.size} values vs {b.size} values")
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    return clamp(float(np.dot(da, db) / math.sqrt(np.dot(da, da) * np.dot(db, db))), -1.0)


def flatten_aligned(true_acts: list[np.ndarray], sim_acts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-window activations ([window_i] each) into two aligned vectors ([sum window_i]).

    Values are cast to float32 first, the dtype the `simulations` table stores, so that anyone who
    recomputes the scores from that table binarises exactly the same numbers.
    """
    if len(true_acts) != len(sim_acts):
        raise ValueError(f"{len(true_acts)} true windows but {len(sim_acts)} simulated windows")
    for i, (true, sim) in enumerate(zip(true_acts, sim_acts, strict=True)):
        if np.shape(true) != np.shape(sim):
            raise ValueError(f"window {i}: true acts shape {np.shape(true)} != simulated {np.shape(sim)}")
    if not true_acts:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
    true = np.concatenate([np.asarray(t, dtype=np.float32).ravel() for t in true_acts])
    sim = np.concatenate([np.asarray(s, dtype=np.float32).ravel() for s in sim_acts])
    return true, sim


def simulation_scores(true_acts: list[np.ndarray], sim_acts: list[np.ndarray], threshold: float = 0.0) -> ScoreResult:
    """Score simulated activations against true ones over aligned windows ([window_i] each)."""
    true, sim = flatten_aligned(true_acts, sim_acts)
    y_true = true > 0
    y_pred = sim > threshold
    binary = binary_scores(y_true, y_pred)
    return ScoreResult(
        precision=binary["precision"],
        recall=binary["recall"],
        f1=binary["f1"],
        auroc=auroc(y_true, sim),
        correlation=pearson(true, sim),
        threshold=float(threshold),
        n_tokens=int(true.size),
        n_positive=int(y_true.sum()),
    )
