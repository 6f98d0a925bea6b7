"""Held-out reconstruction metrics of an SAE and the helpers the other metrics need.

Held-out tokens are rows of the activation file the SAE never trained on (TrainConfig.heldout_frac: the
last contexts). `heldout_metrics` streams them in batches: FVU pooled over batches (sae.metrics), mean
L0, and dead_frac = share of latents that never fire on them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sae.metrics import FVUAccumulator
from sae.model import TopKSAE


@torch.no_grad()
def heldout_metrics(sae: TopKSAE, acts: np.ndarray | Tensor, batch_size: int = 4096) -> dict[str, float]:
    """{fvu_heldout, l0, dead_frac, heldout_tokens} of sae on acts [N, d_in] (raw activations)."""
    device, dtype = sae.W_dec.device, sae.W_dec.dtype
    acc, fired, l0_sum = FVUAccumulator(), torch.zeros(sae.cfg.n_latents, dtype=torch.bool, device=device), 0.0
    for start in range(0, len(acts), batch_size):
        rows = np.array(acts[start : start + batch_size], dtype=np.float32)  # a copy: memmaps are read-only
        x = torch.from_numpy(rows).to(device=device, dtype=dtype)
        values, indices = sae.encode(x)
        acc.add(x, sae.decode(values, indices, sae.input_stats(x)))
        fired[indices[values > 0]] = True
        l0_sum += float((values > 0).sum())
    n = len(acts)
    return {"fvu_heldout": acc.value(), "l0": l0_sum / max(n, 1), "dead_frac": float(1 - fired.float().mean()),
            "heldout_tokens": n}


@torch.no_grad()
def encode_rows(sae: TopKSAE, acts: np.ndarray | Tensor, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
    """TopK code (values, indices) [N, k] of acts [N, d_in], on CPU."""
    parts = []
    for start in range(0, len(acts), batch_size):
        x = torch.from_numpy(np.array(acts[start : start + batch_size], dtype=np.float32)).to(sae.W_dec)
        values, indices = sae.encode(x)
        parts.append((values.cpu().float(), indices.cpu()))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def reconstructor(sae: TopKSAE):
    """x [n, d] -> x_hat [n, d] in raw space (for splicing into a model)."""

    @torch.no_grad()
    def apply(x: Tensor) -> Tensor:
        return sae(x.to(sae.W_dec)).x_hat.to(x.dtype)

    return apply


def contributions(sae: TopKSAE):
    """x [d] -> (latent ids [m], raw-space terms [m, d]): a_j * W_dec[j], times the token's std for a
    layer-norm SAE (its decode multiplies the normalised reconstruction by the std)."""

    @torch.no_grad()
    def apply(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(sae.W_dec).unsqueeze(0)
        values, indices = sae.encode(x)
        keep = values[0] > 0
        _mu, std = sae.input_stats(x)
        terms = values[0, keep, None] * sae.W_dec[indices[0, keep]] * std[0]
        return indices[0, keep], terms

    return apply
