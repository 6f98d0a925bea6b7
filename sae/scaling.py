"""Scaling laws of SAE reconstruction: the joint L(n, k) form of Gao et al. 2024 and the compute frontier.

Joint form (their eq. for TopK SAEs, n latents, k active):
    L(n, k) = exp(alpha + beta_k log k + beta_n log n + gamma log k log n) + exp(zeta + eta log k)
the first term a power law in n whose exponent varies with k, the second an irreducible loss per k.
Fitted with scipy's least_squares on log L (every point weighs the same whatever its scale).

Compute frontier: training compute C = 6 * d_in * n * tokens FLOP (the dense encoder matmul, forward and
backward, dominates a TopK SAE step); the frontier is the lower envelope of (C, L) over the grid, fitted
as L = exp(a) * C^b.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

JOINT_FORM = "L(n,k) = exp(alpha + beta_k log k + beta_n log n + gamma log k log n) + exp(zeta + eta log k)"
FRONTIER_FORM = "L(C) = exp(a) * C^b, C = 6 d_in n tokens"
JOINT_NAMES = ("alpha", "beta_k", "beta_n", "gamma", "zeta", "eta")


@dataclass
class Fit:
    """Fitted coefficients, the log-space RMSE and the points used."""

    coefficients: dict[str, float]
    rmse_log: float
    n_points: int


def joint_loss(params: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """L(n, k) of the joint form for params (alpha, beta_k, beta_n, gamma, zeta, eta)."""
    alpha, beta_k, beta_n, gamma, zeta, eta = params
    ln, lk = np.log(n), np.log(k)
    return np.exp(alpha + beta_k * lk + beta_n * ln + gamma * lk * ln) + np.exp(zeta + eta * lk)


def fit_joint(n: np.ndarray, k: np.ndarray, loss: np.ndarray) -> Fit:
    """Fit the joint form to losses at (n, k) points (>= 6 points with positive loss)."""
    n, k, loss = (np.asarray(a, dtype=float) for a in (n, k, loss))
    keep = np.isfinite(loss) & (loss > 0)
    n, k, loss = n[keep], k[keep], loss[keep]
    if len(loss) < len(JOINT_NAMES):
        raise ValueError(f"the joint L(n, k) fit needs >= {len(JOINT_NAMES)} points with loss > 0, got {len(loss)}")
    # start: a pure power law in n and k (least squares on logs), irreducible term well below the losses
    design = np.column_stack([np.ones_like(n), np.log(k), np.log(n)])
    a0, bk0, bn0 = np.linalg.lstsq(design, np.log(loss), rcond=None)[0]
    start = np.array([a0, bk0, bn0, 0.0, np.log(loss.min()) - 3, 0.0])
    with np.errstate(over="ignore", invalid="ignore"):  # trial steps may overflow; LM then shortens its step
        result = least_squares(lambda p: np.log(joint_loss(p, n, k)) - np.log(loss), start, method="lm",
                               max_nfev=20000)
    residual = np.log(joint_loss(result.x, n, k)) - np.log(loss)
    return Fit(dict(zip(JOINT_NAMES, map(float, result.x), strict=True)), float(np.sqrt(np.mean(residual**2))),
               len(loss))


def compute_flop(d_in: int, n: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Training FLOP of a TopK SAE: 6 * d_in * n per token (dense encoder, forward + backward)."""
    return 6.0 * d_in * np.asarray(n, dtype=float) * np.asarray(tokens, dtype=float)


def frontier_mask(compute: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Points on the lower envelope: no point with <= compute has a lower loss."""
    order = np.argsort(compute, kind="stable")
    mask, best = np.zeros(len(loss), dtype=bool), np.inf
    for i in order:
        if loss[i] < best:
            mask[i], best = True, loss[i]
    return mask


def fit_frontier(compute: np.ndarray, loss: np.ndarray) -> Fit:
    """Power law exp(a) * C^b through the frontier points (>= 2 distinct computes)."""
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    keep = np.isfinite(loss) & (loss > 0)
    compute, loss = compute[keep], loss[keep]
    on = frontier_mask(compute, loss)
    if len(np.unique(compute[on])) < 2:
        raise ValueError("the frontier fit needs >= 2 frontier points of different compute")
    b, a = np.polyfit(np.log(compute[on]), np.log(loss[on]), 1)
    residual = a + b * np.log(compute[on]) - np.log(loss[on])
    return Fit({"a": float(a), "b": float(b)}, float(np.sqrt(np.mean(residual**2))), int(on.sum()))
