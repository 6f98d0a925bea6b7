"""Per-latent statistics in one streaming pass over the sparse cache (the `latent_stats` table).

Memory is O(n_latents x n_bins): counters plus a fixed log-spaced histogram of each latent's
per-context maximum activation, from which decile edges are read. The deciles are over contexts
(their max activation), because that is what sampling stratifies.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

N_DECILE_EDGES = 11
"""min, the 9 interior decile edges, max."""


class LatentStatsConfig(BaseModel):
    """Which latents are worth explaining."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    min_contexts: int = Field(default=10, ge=1)
    """A latent active in fewer contexts than this is 'too_few' (not enough examples to explain+score)."""
    max_frequency: float = Field(default=0.1, gt=0.0, le=1.0)
    """A latent active on a larger fraction of tokens than this is 'too_dense' (not explained)."""


class LatentStatsAccumulator:
    """Streaming per-latent counters over `latent_acts` frames.

    Each frame passed to `update` must hold whole contexts (as `sparse_activation_frame` makes),
    so that a context's rows are never split across two updates.
    """

    def __init__(self, n_latents: int, n_bins: int = 256, hist_min: float = 1e-3, hist_max: float = 1e3):
        """n_bins log-spaced bins on [hist_min, hist_max], plus one underflow and one overflow bin."""
        if not 0 < hist_min < hist_max:
            raise ValueError("need 0 < hist_min < hist_max")
        self.n_latents = n_latents
        self.n_bins = n_bins
        self.log_min = float(np.log(hist_min))
        self.log_step = float((np.log(hist_max) - np.log(hist_min)) / n_bins)
        self.n_active = np.zeros(n_latents, dtype=np.int64)
        self.n_contexts = np.zeros(n_latents, dtype=np.int64)
        self.value_sum = np.zeros(n_latents, dtype=np.float64)
        self.max_act = np.zeros(n_latents, dtype=np.float32)
        self.min_ctx_max = np.full(n_latents, np.inf, dtype=np.float32)
        self.hist = np.zeros((n_latents, n_bins + 2), dtype=np.int32)
        """[n_latents, n_bins + 2] counts of per-context max activations (0: underflow, -1: overflow)."""

    def bin_of(self, values: np.ndarray) -> np.ndarray:
        """Histogram bin index of each value [n] -> [n] in 0 .. n_bins + 1."""
        raw = np.floor((np.log(np.maximum(values, 1e-30)) - self.log_min) / self.log_step)
        return (np.clip(raw, -1, self.n_bins) + 1).astype(np.int64)

    def update(self, frame: pl.DataFrame) -> None:
        """Add one frame of `latent_acts` rows (ctx_id, pos, latent, value) with value > 0."""
        if frame.height == 0:
            return
        latent = frame["latent"].to_numpy()
        self.n_active += np.bincount(latent, minlength=self.n_latents)
        self.value_sum += np.bincount(latent, weights=frame["value"].to_numpy(), minlength=self.n_latents)
        per_ctx = frame.group_by(["latent", "ctx_id"]).agg(pl.col("value").max().alias("ctx_max"))
        ctx_latent = per_ctx["latent"].to_numpy()
        ctx_max = per_ctx["ctx_max"].to_numpy().astype(np.float32)
        self.n_contexts += np.bincount(ctx_latent, minlength=self.n_latents)
        np.maximum.at(self.max_act, ctx_latent, ctx_max)
        np.minimum.at(self.min_ctx_max, ctx_latent, ctx_max)
        flat = ctx_latent.astype(np.int64) * (self.n_bins + 2) + self.bin_of(ctx_max)
        cells, counts = np.unique(flat, return_counts=True)
        self.hist.reshape(-1)[cells] += counts.astype(np.int32)

    def bin_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper value bound of every bin, per latent: two [n_latents, n_bins + 2] arrays."""
        inner = np.exp(self.log_min + self.log_step * np.arange(self.n_bins + 1))
        lower = np.broadcast_to(np.concatenate([[0.0], inner]), self.hist.shape).copy()
        upper = np.broadcast_to(np.concatenate([inner, [np.inf]]), self.hist.shape).copy()
        lower[:, 0] = np.where(np.isfinite(self.min_ctx_max), self.min_ctx_max, 0.0)
        upper[:, -1] = self.max_act
        return lower, upper

    def decile_edges(self) -> np.ndarray:
        """[n_latents, 11] per-context-max edges: min, deciles 10..90 % (histogram-interpolated), max."""
        total = self.n_contexts.astype(np.float64)
        cum = np.cumsum(self.hist, axis=1, dtype=np.int64)
        lower, upper = self.bin_bounds()
        rows = np.arange(self.n_latents)
        edges = np.zeros((self.n_latents, N_DECILE_EDGES), dtype=np.float32)
        for i, q in enumerate(np.linspace(0.1, 0.9, 9), start=1):
            target = q * total
            b = np.argmax(cum >= target[:, None], axis=1)
            before = np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0)
            frac = (target - before) / np.maximum(self.hist[rows, b], 1)
            lo, hi = lower[rows, b], np.minimum(upper[rows, b], self.max_act)
            edges[:, i] = lo + np.clip(frac, 0.0, 1.0) * (hi - lo)
        edges[:, 0] = np.where(np.isfinite(self.min_ctx_max), self.min_ctx_max, 0.0)
        edges[:, -1] = self.max_act
        edges[:, 1:-1] = np.clip(edges[:, 1:-1], edges[:, :1], edges[:, -1:])
        return np.maximum.accumulate(edges, axis=1)

    def finalize(self, sae_id: str, n_tokens: int, cfg: LatentStatsConfig | None = None) -> pl.DataFrame:
        """One `latent_stats` row per latent (none dropped), with status and a readable reason.

        n_tokens: number of valid tokens that were encoded (the frequency denominator).
        """
        cfg = cfg or LatentStatsConfig()
        frequency = self.n_active / max(n_tokens, 1)
        mean_act = self.value_sum / np.maximum(self.n_active, 1)
        status, reason = _classify(self.n_active, self.n_contexts, frequency, n_tokens, cfg)
        edges = self.decile_edges()
        return pl.DataFrame(
            {
                "sae_id": [sae_id] * self.n_latents,
                "latent": np.arange(self.n_latents, dtype=np.int32),
                "n_active": self.n_active,
                "n_contexts": self.n_contexts,
                "frequency": frequency,
                "max_act": self.max_act,
                "mean_act": mean_act.astype(np.float32),
                "decile_edges": [row if n else [] for row, n in zip(edges.tolist(), self.n_active, strict=True)],
                "status": status,
                "reason": reason,
            },
            schema_overrides={"decile_edges": pl.List(pl.Float32)},
        )


def _classify(
    n_active: np.ndarray, n_contexts: np.ndarray, frequency: np.ndarray, n_tokens: int, cfg: LatentStatsConfig
) -> tuple[list[str], list[str]]:
    """Status ('ok' | 'dead' | 'too_dense' | 'too_few') and a human-readable reason per latent."""
    status, reason = [], []
    for active, contexts, freq in zip(n_active.tolist(), n_contexts.tolist(), frequency.tolist(), strict=True):
        if active == 0:
            status.append("dead")
            reason.append(f"never active on the {n_tokens} cached tokens")
        elif freq > cfg.max_frequency:
            status.append("too_dense")
            reason.append(
                f"active on {freq:.2%} of tokens, above max_frequency={cfg.max_frequency:.2%}; "
                "too dense to explain with a pattern"
            )
        elif contexts < cfg.min_contexts:
            status.append("too_few")
            reason.append(f"active in {contexts} contexts, fewer than min_contexts={cfg.min_contexts}")
        else:
            status.append("ok")
            reason.append("")
    return status, reason
