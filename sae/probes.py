"""Probe loss: how well single latents predict binary text features (Gao et al. 2024, section 4.2).

For each binary task (sae/probe_tasks.py) and each candidate latent, a 1-D logistic regression
(scikit-learn) predicts the label from the latent's activation; the task's probe loss is the best
cross-entropy over latents (nats/token), reported next to the same over the raw residual channels and
the prior's CE (predicting the base rate). Fitting every one of 4096+ latents per task is too slow, so
candidates are preselected cheaply: the top `candidates` latents (and channels) by |Pearson correlation|
with the label, computed for all latents at once from sparse sums. The CE is in-sample: two parameters
per probe on thousands of tokens do not overfit measurably.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from torch import Tensor


def sparse_correlation(values: Tensor, indices: Tensor, n_latents: int, y: np.ndarray) -> np.ndarray:
    """|Pearson r| of every latent's activation with y; values, indices [N, k] TopK code -> [n_latents]."""
    yt = torch.as_tensor(y, dtype=torch.float64)
    v, idx = values.double().reshape(-1), indices.reshape(-1)
    s1 = torch.zeros(n_latents, dtype=torch.float64).index_add_(0, idx, v)
    s2 = torch.zeros(n_latents, dtype=torch.float64).index_add_(0, idx, v * v)
    sy = torch.zeros(n_latents, dtype=torch.float64).index_add_(0, idx, v * yt.repeat_interleave(values.shape[1]))
    n, ybar = len(yt), float(yt.mean())
    cov = sy - s1 * ybar
    var = (s2 - s1 * s1 / n).clamp_min(0) * n * ybar * (1 - ybar)
    r = torch.where(var > 0, cov.abs() / var.sqrt().clamp_min(1e-30), torch.zeros_like(cov))
    return r.numpy()


def dense_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|Pearson r| of each column of x [N, d] with y [N] -> [d] (0 for constant columns)."""
    xc, yc = x - x.mean(0), y - y.mean()
    denom = np.sqrt((xc * xc).sum(0) * (yc * yc).sum())
    return np.divide(np.abs(xc.T @ yc), denom, out=np.zeros(x.shape[1]), where=denom > 0)


def best_probe(features: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """(lowest in-sample CE of a 1-D logistic probe, its column) over the columns of features [N, m]."""
    best, best_col = float("inf"), -1
    for col in range(features.shape[1]):
        f = features[:, col : col + 1]
        if np.ptp(f) == 0:
            continue
        f = (f - f.mean()) / f.std()  # standardised: Newton converges in a few steps whatever the scale
        clf = LogisticRegression(C=1e4, solver="newton-cholesky", max_iter=50).fit(f, y)
        ce = log_loss(y, clf.predict_proba(f)[:, 1], labels=[False, True])
        if ce < best:
            best, best_col = ce, col
    return best, best_col


def _latent_columns(values: Tensor, indices: Tensor, latents: np.ndarray) -> np.ndarray:
    """Dense activations [N, len(latents)] of the chosen latents from the TopK code [N, k]."""
    out = torch.zeros(values.shape[0], len(latents), dtype=torch.float64)
    position = torch.full((int(indices.max()) + 1 if indices.numel() else 1,), -1, dtype=torch.long)
    position[torch.as_tensor(latents)] = torch.arange(len(latents))
    where = position[indices]
    rows, slots = torch.nonzero(where >= 0, as_tuple=True)
    out[rows, where[rows, slots]] = values[rows, slots].double()
    return out.numpy()


def probe_losses(values: Tensor, indices: Tensor, n_latents: int, residual: np.ndarray,
                 labels: dict[str, np.ndarray], candidates: int = 8) -> dict[str, dict]:
    """Per task: {ce, latent, ce_residual, channel, prior_ce, positives}.

    values, indices [N, k]: the SAE's code of N tokens; residual [N, d]: their raw activations; labels:
    {task: bool [N]}. Tasks with fewer than 10 positives or negatives are skipped.
    """
    out = {}
    for task, y in labels.items():
        positives = int(y.sum())
        if min(positives, len(y) - positives) < 10:
            continue
        latents = np.argsort(-sparse_correlation(values, indices, n_latents, y))[:candidates]
        channels = np.argsort(-dense_correlation(residual, y.astype(np.float64)))[:candidates]
        ce, col = best_probe(_latent_columns(values, indices, latents), y)
        ce_res, ch = best_probe(residual[:, channels], y)
        prior = log_loss(y, np.full(len(y), y.mean()), labels=[False, True])
        out[task] = {"ce": ce, "latent": int(latents[col]), "ce_residual": ce_res, "channel": int(channels[ch]),
                     "prior_ce": prior, "positives": positives}
    return out
