"""Reconstruction and sparsity metrics of an SAE. Arguments follow (truth, prediction) order.

- fvu: fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch.
- normalized_mse: OpenAI's (sparse_autoencoder loss.py) per-token ||x - x_hat||^2 / ||x||^2, averaged.
- l0: mean number of non-zero latents per token.
- dead_fraction: share of latents that never fired, given per-latent firing counts.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained; x, x_hat [batch, d_in]. 0 is perfect, 1 is "predict the mean"."""
    total = (x - x.mean(0)).pow(2).sum()
    return float((x - x_hat).pow(2).sum() / total) if total > 0 else float("nan")


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
