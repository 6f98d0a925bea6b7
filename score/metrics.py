"""Token-level metrics that compare a simulated activation with the true one.

One implementation of each metric, shared by every scorer (simulation, detection, fuzzing):

- truth is binarised as `true > 0` (a latent "fires" on a token when its activation is positive);
- the prediction is binarised as `sim > threshold` (0 for N2G, whatever the simulator declares otherwise);
- precision / recall / F1 / balanced accuracy come from scikit-learn with `zero_division=0`;
- AUROC ranks the graded prediction against the binary truth (NaN when only one class is present);
- Pearson correlation is over all tokens of the graded values (NaN when either side is constant).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support, roc_auc_score


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

    Empty inputs give 0 for precision/recall/F1 and NaN for balanced accuracy. With one class in
    `y_true`, balanced accuracy is that class's recall (scikit-learn's definition).
    """
    y_true = np.asarray(y_true, dtype=bool).ravel()
    y_pred = np.asarray(y_pred, dtype=bool).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} entries but y_pred has {y_pred.size}")
    if y_true.size == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "balanced_accuracy": math.nan}
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="binary", pos_label=True, zero_division=0
    )
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
    }


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        # one class in y_true: sklearn warns and averages over the classes present, which is what we want
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve of graded `y_score` ([n]) against boolean `y_true` ([n]); NaN if one class."""
    y_true = np.asarray(y_true, dtype=bool).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.size == 0 or y_true.all() or not y_true.any():
        return math.nan
    return float(roc_auc_score(y_true, y_score))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors ([n] each); NaN when either one is constant."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"pearson: {a.size} values vs {b.size} values")
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    return float(np.dot(da, db) / math.sqrt(np.dot(da, da) * np.dot(db, db)))


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


def simulation_scores(
    true_acts: list[np.ndarray], sim_acts: list[np.ndarray], threshold: float = 0.0
) -> ScoreResult:
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
