"""One streaming pass over `latent_acts` that keeps bounded pools of activating contexts per latent.

For every (latent, context) pair the pass knows the context's max activation and its position
(the peak), the split the pair belongs to (fixed by a hash before anything is drawn) and its
activation decile (from the stats' decile edges). It keeps, per latent, the top explain contexts by
max activation and, per (latent, split, decile), a uniform bottom-k sample, and it counts every
(latent, split, decile) stratum's contexts (the population sizes the score examples' weights need,
explain/sampling/weights.py): memory is O(n_latents x pool size), whatever the corpus size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from explain.sampling.config import SamplingConfig
from explain.sampling.keys import (
    SALT_QUANTILE,
    descending_key,
    group_id,
    merge_bottom_k,
    pair_hash,
    sort_key,
    split_of,
)

log = logging.getLogger(__name__)


def iter_whole_contexts(nonzeros: pl.LazyFrame, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Stream `latent_acts` in chunks of ~batch_rows rows, never splitting a context across chunks.

    Rows of one context are contiguous in the cache (each Parquet part holds whole contexts); the
    trailing context of a chunk is carried into the next one.
    """
    carry: pl.DataFrame | None = None
    for batch in nonzeros.collect_batches(chunk_size=batch_rows, maintain_order=True):
        if carry is not None and carry.height:
            batch = pl.concat([carry, batch], how="vertical")
        if batch.height == 0:
            continue
        last = batch["ctx_id"][-1]
        carry = batch.filter(pl.col("ctx_id") == last)
        yield batch.filter(pl.col("ctx_id") != last)
    if carry is not None and carry.height:
        yield carry


def interior_edges(ok_stats: pl.DataFrame) -> np.ndarray:
    """[max_latent + 1, 9] interior decile edges of each ok latent (+inf rows for the rest)."""
    n_rows = int(ok_stats["latent"].max()) + 1 if ok_stats.height else 0
    edges = np.full((n_rows, 9), np.inf, dtype=np.float32)
    if ok_stats.height:
        full = np.array(ok_stats["decile_edges"].to_list(), dtype=np.float32)
        edges[ok_stats["latent"].to_numpy()] = full[:, 1:10]
    return edges


def summarise_pairs(chunk: pl.DataFrame, edges: np.ndarray, cfg: SamplingConfig) -> pl.DataFrame:
    """Whole-context rows -> one row per (latent, ctx_id): ctx_max, peak_pos, split, decile, key."""
    # first row per pair after a stable sort by value = its max, at its first peak position
    pairs = (
        chunk.select("latent", "ctx_id", pl.col("value").alias("ctx_max"), pl.col("pos").alias("peak_pos"))
        .sort(["ctx_max", "peak_pos"], descending=[True, False], maintain_order=True)
        .unique(subset=["latent", "ctx_id"], keep="first")
    )
    latent = pairs["latent"].to_numpy()
    ctx_id = pairs["ctx_id"].to_numpy()
    ctx_max = pairs["ctx_max"].to_numpy()
    decile = (ctx_max[:, None] > edges[latent]).sum(axis=1).astype(np.int32)
    split = split_of(cfg.seed, latent, ctx_id, cfg.explain_fraction)
    return pairs.with_columns(
        pl.Series("split", split),
        pl.Series("decile", decile),
        pl.Series("key", sort_key(pair_hash(cfg.seed, SALT_QUANTILE, latent, ctx_id))),
        pl.Series("top_key", descending_key(ctx_max, ctx_id)),
        pl.Series("gid", group_id(latent, (split == "score", 2), (decile, 10))),
    )


@dataclass(frozen=True)
class ActivatingScan:
    """What the activating pass keeps: two candidate pools and the size of every stratum."""

    top: pl.DataFrame
    """Per latent, the ~explain_top * oversample explain-split contexts with the highest max activation."""
    quantile: pl.DataFrame
    """Per (latent, split, decile), quantile_pool contexts of smallest hash key (a uniform sample)."""
    counts: pl.DataFrame
    """latent, split, decile, n_contexts: how many of the latent's contexts of that split have their max
    activation in that decile (every context, not just the pooled ones); only non-empty strata."""


def scan_pools(nonzeros: pl.LazyFrame, ok_stats: pl.DataFrame, cfg: SamplingConfig) -> ActivatingScan:
    """One streaming pass: the top and quantile pools of the ok latents and their strata's sizes.

    Pool columns: latent, ctx_id, ctx_max, peak_pos, split, decile, key, top_key, gid.
    """
    edges = interior_edges(ok_stats)
    ok_latents = ok_stats["latent"].cast(pl.Int32)
    source = nonzeros.filter(pl.col("latent").is_in(ok_latents.implode()))
    n_top = math.ceil(cfg.explain_top * cfg.oversample)
    top: pl.DataFrame | None = None
    quantile: pl.DataFrame | None = None
    # gid = latent * 20 + is_score * 10 + decile; a chunk holds whole contexts, so each (latent, ctx)
    # pair is counted once across chunks
    counts = np.zeros(len(edges) * 20, dtype=np.int64)
    n_rows = 0
    for chunk in iter_whole_contexts(source, cfg.batch_rows):
        n_rows += chunk.height
        pairs = summarise_pairs(chunk, edges, cfg)
        counts += np.bincount(pairs["gid"].to_numpy(), minlength=len(counts))
        top = merge_bottom_k(top, pairs.filter(pl.col("split") == "explain"), "latent", "top_key", n_top)
        quantile = merge_bottom_k(quantile, pairs, "gid", "key", cfg.quantile_pool)
    log.info("activating pass: %d non-zero rows of %d ok latents", n_rows, ok_stats.height)
    empty = _empty_pairs()
    return ActivatingScan(top if top is not None else empty, quantile if quantile is not None else empty,
                          _stratum_counts(counts))


def scan_activating(
    nonzeros: pl.LazyFrame, ok_stats: pl.DataFrame, cfg: SamplingConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The pools alone, (top, quantile), of `scan_pools` (columns: latent, ctx_id, ctx_max, peak_pos,
    split, decile, key)."""
    scan = scan_pools(nonzeros, ok_stats, cfg)
    return scan.top, scan.quantile


def _stratum_counts(counts: np.ndarray) -> pl.DataFrame:
    """Counts indexed by gid ([(max_latent + 1) * 20]) -> rows latent, split, decile, n_contexts (n > 0)."""
    gid = np.nonzero(counts)[0]
    return pl.DataFrame({
        "latent": (gid // 20).astype(np.int32),
        "split": np.where((gid // 10) % 2 == 1, "score", "explain"),
        "decile": (gid % 10).astype(np.int32),
        "n_contexts": counts[gid],
    }, schema={"latent": pl.Int32, "split": pl.String, "decile": pl.Int32, "n_contexts": pl.Int64})


def _empty_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema={"latent": pl.Int32, "ctx_id": pl.Int64, "ctx_max": pl.Float32,
                                "peak_pos": pl.Int32, "split": pl.String, "decile": pl.Int32, "key": pl.Int64,
                                "top_key": pl.Int64, "gid": pl.Int64})
