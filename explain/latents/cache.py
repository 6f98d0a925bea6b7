"""The sparse latent cache: one batch of SAE codes -> rows of the `latent_acts` table.

Flows streams context batches through subject model + SAE, turns each batch into a frame with
`sparse_activation_frame` and appends it as one Parquet part, so a corpus of any size is cached
without ever holding all non-zeros in memory. Each frame holds whole contexts (a context never
spans two parts); `LatentStatsAccumulator` and `sample_examples` rely on that.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from explain.latents.stats import LatentStatsAccumulator, LatentStatsConfig

__all__ = [
    "LatentStatsAccumulator",
    "LatentStatsConfig",
    "sparse_activation_frame",
]


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def sparse_activation_frame(
    ctx_ids: torch.Tensor | np.ndarray,
    values: torch.Tensor | np.ndarray,
    indices: torch.Tensor | np.ndarray,
    valid: torch.Tensor | np.ndarray,
) -> pl.DataFrame:
    """Non-zero latent activations of one batch as long-format rows.

    ctx_ids [B] (context id of each row), values [B, T, k] (post-ReLU TopK values),
    indices [B, T, k] (latent index of each value), valid [B, T] (False on padding).
    Returns pl.DataFrame(ctx_id i64, pos i32, latent i32, value f32) with only value > 0 on valid
    positions, ordered by (ctx_id row, pos, k slot).
    """
    values_np = _as_numpy(values).astype(np.float32, copy=False)
    indices_np = _as_numpy(indices)
    valid_np = _as_numpy(valid).astype(bool, copy=False)
    ctx_np = _as_numpy(ctx_ids).astype(np.int64, copy=False)
    if values_np.shape != indices_np.shape or values_np.shape[:2] != valid_np.shape:
        raise ValueError(
            f"shape mismatch: values {values_np.shape}, indices {indices_np.shape}, valid {valid_np.shape}"
        )
    keep = (values_np > 0) & valid_np[:, :, None]
    row, pos, _slot = np.nonzero(keep)
    # The numpy dtypes below are the frame's dtypes (compact, and what the stats accumulator expects).
    return pl.DataFrame(
        {
            "ctx_id": ctx_np[row],
            "pos": pos.astype(np.int32),
            "latent": indices_np[keep].astype(np.int32),
            "value": values_np[keep],
        },
    )
