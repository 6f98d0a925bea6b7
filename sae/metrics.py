"""Reconstruction and sparsity metrics of an SAE. Arguments follow (truth, prediction) order.

- fvu: fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch
  (mean over the batch's tokens). The one definition: `fvu` (a float), `fvu_loss` (differentiable, the
  training objective) and `FVUAccumulator` (pooled over many batches) all use `squared_error_and_deviation`.
- normalized_mse: OpenAI's (sparse_autoencoder loss.py) per-token ||x - x_hat||^2 / ||x||^2, averaged.
- l0: mean number of non-zero latents per token.
- dead_fraction: share of latents that never fired, given per-latent firing counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def squared_error_and_deviation(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """(sum ||x - x_hat||^2, sum ||x - mean_batch(x)||^2), two scalars; x, x_hat [batch, d_in].

    The error keeps x_hat's gradient; the deviation is a constant of x (computed without gradient).
    """
    # mse_loss rather than (x - x_hat)**2: it runs in float32 under autocast, as the training loss needs.
    error = F.mse_loss(x_hat, x, reduction="sum")
    with torch.no_grad():
        deviation = (x - x.mean(0)).pow(2).sum()
    return error, deviation


def fvu_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """Differentiable batch FVU (scalar tensor); x, x_hat [batch, d_in]. 0/0 gives 0 (a constant batch)."""
    error, deviation = squared_error_and_deviation(x, x_hat)
    return error / deviation.clamp_min(torch.finfo(deviation.dtype).tiny)


@torch.no_grad()
def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained; x, x_hat [batch, d_in]. 0 is perfect, 1 is "predict the mean".

    NaN when x has no variance (every token the same).
    """
    error, deviation = squared_error_and_deviation(x, x_hat)
    return float(error / deviation) if deviation > 0 else float("nan")


class FVUAccumulator:
    """FVU pooled over batches: sum of every batch's squared error / sum of its squared deviation.

    Each batch's deviation is taken from that batch's own mean, so one batch gives exactly `fvu`.
    """

    def __init__(self) -> None:
        self.squared_error = 0.0
        self.squared_deviation = 0.0

    @torch.no_grad()
    def add(self, x: Tensor, x_hat: Tensor) -> None:
        """Add one batch; x, x_hat [batch, d_in]."""
        error, deviation = squared_error_and_deviation(x, x_hat)
        self.squared_error += float(error)
        self.squared_deviation += float(deviation)

    def value(self) -> float:
        """The pooled FVU so far; NaN before any batch with variance."""
        return self.squared_error / self.squared_deviation if self.squared_deviation > 0 else float("nan")


@torch.no_grad()
def normalized_mse(x: Tensor, x_hat: Tensor) -> float:
    """OpenAI's normalised MSE: mean over tokens of ||x - x_hat||^2 / ||x||^2; x, x_hat [batch, d_in]."""
    per_token = (x - x_hat).pow(2).sum(1) / x.pow(2).sum(1)
    return float(per_token.mean())


@torch.no_grad()
def l0(values: Tensor) -> float:
    """Mean count of non-zero latents per token; values [batch, k] (sparse code) or [batch, n_latents]."""
    return float((values != 0).sum(1).float().mean())


@torch.no_grad()
def latent_fire_counts(values: Tensor, indices: Tensor, n_latents: int) -> Tensor:
    """[n_latents] long: how many tokens each latent fired on; values, indices [batch, k]."""
    fired = indices[values > 0]
    return torch.bincount(fired.reshape(-1), minlength=n_latents)


@torch.no_grad()
def dead_fraction(fire_counts: Tensor) -> float:
    """Share of latents with zero firings; fire_counts [n_latents] (e.g. from latent_fire_counts)."""
    return float((fire_counts == 0).float().mean())
