"""Recall per activation decile: which strengths of a latent's activation an explanation covers.

An explanation with recall 0.3 may catch the strongest 30 % of activations (it explains the latent's
core and misses its weak tail) or a random 30 % (it explains a side case). Splitting the active tokens
into ten equal-mass bins by activation and giving the recall in each tells them apart. Bins are by
rank (ties broken by order), so each holds a tenth of the active tokens' weight; with weights (an
inverse-probability-weighted sample) a token counts its weight in both the binning and the recall.
"""

from __future__ import annotations

import numpy as np

N_DECILES = 10


def decile_recall(true: np.ndarray, predicted: np.ndarray, weight: np.ndarray | None = None) -> list[float | None]:
    """[10] recall within each activation decile of the active tokens, weakest first; None for a decile
    with no token (fewer than ten active tokens).

    true: [n] activations of the active tokens (> 0); predicted: [n] bool, predicted active; weight:
    [n] optional per-token weights (default 1).
    """
    true = np.asarray(true, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=bool)
    weight = np.ones(len(true)) if weight is None else np.asarray(weight, dtype=np.float64)
    order = np.argsort(true, kind="stable")
    w = weight[order]
    total = w.sum()
    if len(true) == 0 or total <= 0:
        return [None] * N_DECILES
    # a token's decile: where the middle of its weight falls in the cumulative weight
    middle = (np.cumsum(w) - w / 2) / total
    decile = np.minimum((middle * N_DECILES).astype(np.int64), N_DECILES - 1)
    hit = np.bincount(decile, w * predicted[order], N_DECILES)
    mass = np.bincount(decile, w, N_DECILES)
    return [float(h / m) if m > 0 else None for h, m in zip(hit, mass, strict=True)]
