"""Per-latent statistics in one streaming pass over the sparse cache (the `latent_stats` table).

Memory is O(n_latents x (n_bins + sketch)): counters plus a fixed log-spaced histogram of each
latent's per-context maximum activation, from which decile edges are read. The deciles are over
contexts (their max activation), because that is what sampling stratifies.

Co-occurrence (column `cooccurring`): for each latent, the latents that fire on the same tokens
most often. Per update, each latent contributes at most `cooccurrence_probes` of its tokens (the
smallest hash keys of (ctx_id, pos, latent), so rare latents count every token and the cost is
O(n_latents x probes x k) per update); the co-active latents on those tokens are counted into a
per-latent Misra-Gries summary of `cooccurrence_sketch` counters (merged update by update: add,
subtract the (sketch+1)-th largest count, keep the positive ones). A partner firing on more than
1/(sketch+1) of a latent's probed co-activations is never lost; with no truncation the counts are
exact.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from explain.sampling.keys import SALT_COOCCURRENCE, context_index, mix64, pair_hash

N_DECILE_EDGES = 11
"""min, the 9 interior decile edges, max."""


class LatentStatsConfig(BaseModel):
    """Which latents are worth explaining."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    min_contexts: int = Field(default=10, ge=1)
    """A latent active in fewer contexts than this is 'too_few' (not enough examples to explain+score)."""
    max_frequency: float = Field(default=0.1, gt=0.0, le=1.0)
    """A latent active on a larger fraction of tokens than this is 'too_dense' (not explained)."""
    n_cooccurring: int = Field(default=5, ge=0)
    """Top co-occurring latents listed per latent (column `cooccurring`); 0 turns the count off."""
    cooccurrence_sketch: int = Field(default=32, ge=1)
    """Misra-Gries counters kept per latent (memory n_latents x sketch); must be >= n_cooccurring."""
    cooccurrence_probes: int = Field(default=8, ge=1)
    """Tokens per latent and update whose co-active latents are counted (bounds the cost per update)."""


class CooccurrenceSketch:
    """Per-latent Misra-Gries summaries of co-active latents: [n_latents, size] partners and counts."""

    def __init__(self, n_latents: int, size: int, probes: int):
        self.n_latents = n_latents
        self.size = size
        self.probes = probes
        self.partner = np.full((n_latents, size), -1, dtype=np.int32)
        """[n_latents, size] partner latent ids, in slot order (-1: empty slot; `top` ranks them)."""
        self.count = np.zeros((n_latents, size), dtype=np.int64)
        """[n_latents, size] Misra-Gries counts (lower bounds of the probed co-activations)."""

    def probe_rows(self, ctx_id: np.ndarray, pos: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Indices of the rows [n] that probe: per latent, the `probes` rows of smallest hash key."""
        h = mix64(pair_hash(0, SALT_COOCCURRENCE, latent, ctx_id) ^ pos.astype(np.uint64))
        key = (latent.astype(np.int64) << 31) | (h >> np.uint64(33)).astype(np.int64)
        order = np.argsort(key)
        sorted_latent = latent[order]
        rank = np.arange(len(order)) - np.searchsorted(sorted_latent, sorted_latent, side="left")
        return order[rank < self.probes]

    def update(self, ctx_id: np.ndarray, pos: np.ndarray, latent: np.ndarray) -> None:
        """Count, for each probe row (i fires on token t), every other latent that fires on t."""
        if len(latent) == 0:
            return
        token = _token_index(ctx_id.astype(np.int64), pos.astype(np.int64))
        n_tok = int(token.max()) + 1
        active = _incidence(token, latent, n_tok, self.n_latents)
        probe = self.probe_rows(ctx_id, pos, latent)
        probes = sp.csr_matrix((np.ones(len(probe), np.int32), (latent[probe], token[probe])),
                               shape=(self.n_latents, n_tok))
        pairs = (probes @ active).tocoo()
        off = pairs.row != pairs.col
        self.merge(sp.csr_matrix((pairs.data[off].astype(np.int64), (pairs.row[off], pairs.col[off])),
                                 shape=pairs.shape))

    def merge(self, pairs: sp.csr_matrix) -> None:
        """Add co-activation counts [n_latents, n_latents] (sparse) and keep each row's Misra-Gries summary:
        subtract the row's (size+1)-th largest count, keep the positive ones (at most `size`)."""
        held = self.count > 0
        rows = np.nonzero(held)[0]
        sketch = sp.csr_matrix((self.count[held], (rows, self.partner[held])), shape=pairs.shape)
        total = (pairs + sketch).tocsr()
        total.eliminate_zeros()
        total.sum_duplicates()
        rows = np.repeat(np.arange(self.n_latents, dtype=np.int64), np.diff(total.indptr))
        counts = total.data.astype(np.int64)
        floor = np.zeros(self.n_latents, dtype=np.int64)
        long = np.nonzero(np.diff(total.indptr) > self.size)[0]
        if len(long):
            ordered = np.sort((rows << 32) | (0xFFFFFFFF - np.minimum(counts, 0xFFFFFFFF)))
            floor[long] = 0xFFFFFFFF - (ordered[total.indptr[long] + self.size] & 0xFFFFFFFF)
        counts = counts - floor[rows]
        keep = counts > 0
        rows, cols, counts = rows[keep], total.indices[keep], counts[keep]
        slot = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
        self.partner.fill(-1)
        self.count.fill(0)
        self.partner[rows, slot] = cols
        self.count[rows, slot] = counts

    def top(self, m: int) -> list[list[int]]:
        """Per latent, up to m partners with the highest counts (ties: lower latent id first)."""
        order = np.lexsort((np.where(self.partner >= 0, self.partner, np.iinfo(np.int32).max), -self.count), axis=1)
        partners = np.take_along_axis(self.partner, order[:, :m], axis=1).tolist()
        return [[p for p in row if p >= 0] for row in partners]


def _incidence(token: np.ndarray, latent: np.ndarray, n_tok: int, n_latents: int) -> sp.csr_matrix:
    """[n_tok, n_latents] 0/1 matrix of which latent fires on which token (rows in token order: no sort)."""
    ones = np.ones(len(latent), np.int32)
    if np.all(token[1:] >= token[:-1]):
        indptr = np.searchsorted(token, np.arange(n_tok + 1))
        return sp.csr_matrix((ones, latent.astype(np.int32), indptr), shape=(n_tok, n_latents))
    return sp.csr_matrix((ones, (token, latent)), shape=(n_tok, n_latents))


def _token_index(ctx_id: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Dense index [n] of each row's token (ctx_id, pos), numbered in (ctx_id, pos) order."""
    key = context_index(ctx_id) * (int(pos.max()) + 1) + pos  # one dataset per cache: the index is unique
    if len(key) < 2 or np.all(key[1:] >= key[:-1]):
        return np.concatenate([[0], np.cumsum(key[1:] != key[:-1])])
    return np.unique(key, return_inverse=True)[1].reshape(-1)


class LatentStatsAccumulator:
    """Streaming per-latent counters over `latent_acts` frames.

    Each frame passed to `update` must hold whole contexts (as `sparse_activation_frame` makes),
    so that a context's rows are never split across two updates.
    """

    def __init__(self, n_latents: int, n_bins: int = 256, hist_min: float = 1e-3, hist_max: float = 1e3,
                 cfg: LatentStatsConfig | None = None):
        """n_bins log-spaced bins on [hist_min, hist_max], plus one underflow and one overflow bin.

        cfg: statuses and co-occurrence settings (also the default of `finalize`).
        """
        if not 0 < hist_min < hist_max:
            raise ValueError("need 0 < hist_min < hist_max")
        self.cfg = cfg or LatentStatsConfig()
        if self.cfg.n_cooccurring > self.cfg.cooccurrence_sketch:
            raise ValueError("cooccurrence_sketch must be >= n_cooccurring")
        self.cooccurrence = (CooccurrenceSketch(n_latents, self.cfg.cooccurrence_sketch,
                                                self.cfg.cooccurrence_probes)
                             if self.cfg.n_cooccurring else None)
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
        if self.cooccurrence is not None:
            self.cooccurrence.update(frame["ctx_id"].to_numpy(), frame["pos"].to_numpy(), latent)

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
        cfg: statuses and how many co-occurring latents to list (default: the constructor's cfg;
        what is counted was fixed by the constructor's cfg).
        """
        cfg = cfg or self.cfg
        frequency = self.n_active / max(n_tokens, 1)
        mean_act = self.value_sum / np.maximum(self.n_active, 1)
        status, reason = _classify(self.n_active, self.n_contexts, frequency, n_tokens, cfg)
        edges = self.decile_edges()
        cooccurring = (self.cooccurrence.top(cfg.n_cooccurring) if self.cooccurrence is not None
                       else [[] for _ in range(self.n_latents)])
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
                "cooccurring": cooccurring,
            },
            schema_overrides={"decile_edges": pl.List(pl.Float32), "cooccurring": pl.List(pl.Int32)},
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
