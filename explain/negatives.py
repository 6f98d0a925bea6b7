"""Non-activating contexts per latent: random ones and hard ("similar") ones, both verified silent.

Random: drawn per latent without replacement from a generator seeded by (seed, latent), so two
latents get different negatives. Similar: contexts that contain one of the latent's trigger tokens
(the most common peak tokens of its top explain contexts). Both are checked against the cache:
any candidate where the latent has a non-zero activation anywhere in the context is dropped.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from explain.sample_keys import SALT_SIMILAR, merge_bottom_k, pair_hash, sort_key
from explain.sampling_config import SamplingConfig

log = logging.getLogger(__name__)

PAIR = ["latent", "ctx_id"]


def random_candidates(ok_stats: pl.DataFrame, ctx_ids: np.ndarray, cfg: SamplingConfig) -> pl.DataFrame:
    """Per ok latent, contexts drawn without replacement (generator seeded by (seed, latent)).

    ctx_ids [n_contexts]: every context id of the corpus. Returns latent, ctx_id, rank (draw order).
    """
    n_ctx = len(ctx_ids)
    latents, picks, ranks = [], [], []
    for latent, n_contexts in zip(ok_stats["latent"].to_list(), ok_stats["n_contexts"].to_list(), strict=True):
        n_draw = min(cfg.random_draws(n_contexts / max(n_ctx, 1)), n_ctx)
        idx = np.random.default_rng([cfg.seed, latent]).choice(n_ctx, size=n_draw, replace=False)
        latents.append(np.full(n_draw, latent, dtype=np.int32))
        picks.append(ctx_ids[idx])
        ranks.append(np.arange(n_draw, dtype=np.int64))
    if not latents:
        return pl.DataFrame(schema={"latent": pl.Int32, "ctx_id": pl.Int64, "rank": pl.Int64})
    return pl.DataFrame({"latent": np.concatenate(latents), "ctx_id": np.concatenate(picks).astype(np.int64),
                         "rank": np.concatenate(ranks)})


def trigger_tokens(top: pl.DataFrame, contexts: pl.DataFrame, n_tokens: int) -> pl.DataFrame:
    """Per latent, the n_tokens most frequent token ids at the peaks of its top contexts.

    top: latent, ctx_id, ctx_max, peak_pos. Returns latent, token_id.
    """
    peaks = (
        top.lazy()
        .join(contexts.lazy().select("ctx_id", "token_ids"), on="ctx_id")
        .select("latent", "ctx_max", pl.col("token_ids").list.get(pl.col("peak_pos")).alias("token_id"))
        .collect(engine="streaming")
    )
    ranked = (
        peaks.group_by(["latent", "token_id"])
        .agg(pl.len().alias("n"), pl.col("ctx_max").max().alias("best"))
        .sort(["latent", "n", "best", "token_id"], descending=[False, True, True, False])
    )
    return ranked.filter(pl.int_range(pl.len()).over("latent") < n_tokens).select("latent", "token_id")


def _trigger_hits(chunk: pl.DataFrame, triggers: pl.DataFrame) -> pl.DataFrame:
    """(latent, ctx_id, anchor) for contexts of the chunk holding a trigger token of that latent.

    anchor = first position of any of the latent's trigger tokens in the context.
    """
    tokens = (
        chunk.select("ctx_id", pl.col("token_ids").alias("token_id"),
                     pl.int_ranges(pl.col("token_ids").list.len()).alias("pos"))
        .explode(["token_id", "pos"])
        .join(triggers.select("token_id").unique(), on="token_id", how="semi")
        .group_by(["ctx_id", "token_id"])
        .agg(pl.col("pos").min())
    )
    return (
        tokens.join(triggers, on="token_id")
        .group_by(PAIR)
        .agg(pl.col("pos").min().cast(pl.Int32).alias("anchor"))
    )


def similar_candidates(triggers: pl.DataFrame, contexts: pl.DataFrame, cfg: SamplingConfig) -> pl.DataFrame:
    """Per latent, up to similar_pool contexts containing its trigger tokens (uniform by hash key).

    Returns latent, ctx_id, anchor (trigger position), rank (order by key within the latent).
    """
    pool: pl.DataFrame | None = None
    triggers = triggers.with_columns(pl.col("token_id").cast(pl.Int64))
    for offset in range(0, contexts.height, cfg.context_chunk):
        chunk = contexts.slice(offset, cfg.context_chunk).select("ctx_id", pl.col("token_ids").cast(pl.List(pl.Int64)))
        hits = _trigger_hits(chunk, triggers)
        if hits.height == 0:
            continue
        keys = pair_hash(cfg.seed, SALT_SIMILAR, hits["latent"].to_numpy(), hits["ctx_id"].to_numpy())
        hits = hits.with_columns(pl.Series("key", sort_key(keys)))
        pool = merge_bottom_k(pool, hits, "latent", "key", cfg.similar_pool)
    if pool is None:
        return pl.DataFrame(schema={"latent": pl.Int32, "ctx_id": pl.Int64, "anchor": pl.Int32, "rank": pl.Int64})
    pool = pool.sort(["latent", "key"])
    return pool.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("latent").alias("rank")).drop("key")


def drop_active(nonzeros: pl.LazyFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Candidates (latent, ctx_id, ...) minus those where the latent fires anywhere in the context.

    The cache is streamed and semi-joined against the (small) candidate set, so memory stays
    O(candidates) however large the cache is.
    """
    if candidates.height == 0:
        return candidates
    wanted = candidates.select(pl.col("latent").cast(pl.Int32), pl.col("ctx_id").cast(pl.Int64)).unique()
    active = (
        nonzeros.select(pl.col("latent").cast(pl.Int32), pl.col("ctx_id").cast(pl.Int64))
        .join(wanted.lazy(), on=PAIR, how="semi")
        .unique()
        .collect(engine="streaming")
    )
    kept = candidates.join(active, on=PAIR, how="anti")
    log.info("negatives: %d candidates, %d dropped because the latent fires there",
             candidates.height, candidates.height - kept.height)
    return kept
