"""Non-activating contexts per latent: random ones and hard ("similar") ones, all verified silent.

Random: drawn per latent without replacement from a generator seeded by (seed, latent), so two
latents get different negatives. Similar, two sources: contexts that contain one of the latent's
trigger tokens (the most common peak tokens of its top explain contexts), and embedding
neighbours: the contexts nearest (cosine) to the mean embedding of its top explain contexts,
where a context's embedding is a hashed, signed TF-IDF bag of its token ids (no model needed).
The neighbour search skips contexts where the latent fires and keeps a per-latent top-k while it
streams context chunks, so memory is O(latents x (pool + chunk)), never contexts x latents.
All candidates are checked against the cache again: any candidate where the latent has a non-zero
activation anywhere in the context is dropped.
The trigger-token pass also counts, per latent, its score-side contexts that hold a trigger token, and
`silent_trigger_counts` takes the active ones off with one streamed pass over the cache: the exact size
of the trigger stratum of the score examples' weights (explain/sampling/weights.py).
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import scipy.sparse as sp

from explain.sampling.activating import iter_whole_contexts
from explain.sampling.config import SamplingConfig
from explain.sampling.keys import (
    SALT_EMBEDDING,
    SALT_SIMILAR,
    merge_bottom_k,
    mix64,
    pair_hash,
    sort_key,
    split_of,
)

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


def similar_candidates(triggers: pl.DataFrame, contexts: pl.DataFrame,
                       cfg: SamplingConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per latent, up to similar_pool contexts containing its trigger tokens (uniform by hash key), and
    how many of its score-side contexts contain one (counted in the same pass, active ones included).

    Returns (latent, ctx_id, anchor (first trigger position), rank (order by key within the latent);
    latent, n_contexts). The pool is the bottom-k of a hash over every trigger context, so the silent
    score-side ones left in it after verification are a uniform sample of the latent's silent
    score-side trigger contexts.
    """
    pool: pl.DataFrame | None = None
    counts: list[pl.DataFrame] = []
    triggers = triggers.with_columns(pl.col("token_id").cast(pl.Int64))
    for offset in range(0, contexts.height, cfg.context_chunk):
        chunk = contexts.slice(offset, cfg.context_chunk).select("ctx_id", pl.col("token_ids").cast(pl.List(pl.Int64)))
        hits = _trigger_hits(chunk, triggers)
        if hits.height == 0:
            continue
        latent, ctx_id = hits["latent"].to_numpy(), hits["ctx_id"].to_numpy()
        score = split_of(cfg.seed, latent, ctx_id, cfg.explain_fraction) == "score"
        counts.append(hits.filter(pl.Series(score)).group_by("latent").agg(pl.len().cast(pl.Int64).alias("n_contexts")))
        hits = hits.with_columns(pl.Series("key", sort_key(pair_hash(cfg.seed, SALT_SIMILAR, latent, ctx_id))))
        pool = merge_bottom_k(pool, hits, "latent", "key", cfg.similar_pool)
    sizes = (pl.concat(counts).group_by("latent").agg(pl.col("n_contexts").sum()) if counts
             else pl.DataFrame(schema={"latent": pl.Int32, "n_contexts": pl.Int64}))
    if pool is None:
        empty = pl.DataFrame(schema={"latent": pl.Int32, "ctx_id": pl.Int64, "anchor": pl.Int32, "rank": pl.Int64})
        return empty, sizes
    pool = pool.sort(["latent", "key"])
    return pool.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("latent").alias("rank")).drop("key"), sizes


def holds_trigger(pairs: pl.DataFrame, contexts: pl.DataFrame, triggers: pl.DataFrame) -> pl.Series:
    """bool [pairs.height]: whether context ctx_id of each (latent, ctx_id) row holds a trigger token of
    that latent (anywhere in the context). triggers: latent, token_id."""
    keyed = pairs.select(pl.col("latent").cast(pl.Int32), pl.col("ctx_id").cast(pl.Int64)).with_row_index("_row")
    if keyed.height == 0:
        return pl.Series("trigger", [], dtype=pl.Boolean)
    tokens = (
        contexts.filter(pl.col("ctx_id").is_in(keyed["ctx_id"].unique().implode()))
        .select(pl.col("ctx_id").cast(pl.Int64), pl.col("token_ids").cast(pl.List(pl.Int64)).alias("token_id"))
        .explode("token_id").unique()
    )
    hit = (
        keyed.join(triggers.select(pl.col("latent").cast(pl.Int32), pl.col("token_id").cast(pl.Int64)), on="latent")
        .join(tokens, on=["ctx_id", "token_id"], how="semi")["_row"].unique()
    )
    return keyed["_row"].is_in(hit.implode()).alias("trigger")


def silent_trigger_counts(nonzeros: pl.LazyFrame, contexts: pl.DataFrame, triggers: pl.DataFrame,
                          score_hits: pl.DataFrame, cfg: SamplingConfig) -> pl.DataFrame:
    """latent, n_contexts: each latent's silent score-side contexts holding one of its trigger tokens, exactly.

    score_hits: latent, n_contexts of `similar_candidates` (every score-side trigger context); the ones
    where the latent fires are found in one streamed pass over the cache (whole contexts per chunk, so a
    (latent, context) pair is counted once) and taken off. Memory: one chunk's pairs.
    """
    with_triggers = triggers["latent"].unique().cast(pl.Int32)
    source = nonzeros.select(pl.col("latent").cast(pl.Int32), pl.col("ctx_id").cast(pl.Int64), "pos").filter(
        pl.col("latent").is_in(with_triggers.implode()))
    active: list[pl.DataFrame] = []
    for chunk in iter_whole_contexts(source, cfg.batch_rows):
        pairs = chunk.select("latent", "ctx_id").unique()
        score = split_of(cfg.seed, pairs["latent"].to_numpy(), pairs["ctx_id"].to_numpy(), cfg.explain_fraction)
        pairs = pairs.filter(pl.Series(score == "score"))
        pairs = pairs.filter(holds_trigger(pairs, contexts, triggers))
        active.append(pairs.group_by("latent").agg(pl.len().cast(pl.Int64).alias("active")))
    fired = (pl.concat(active).group_by("latent").agg(pl.col("active").sum()) if active
             else pl.DataFrame(schema={"latent": pl.Int32, "active": pl.Int64}))
    sizes = score_hits.with_columns(pl.col("latent").cast(pl.Int32)).join(fired, on="latent", how="left").select(
        "latent", (pl.col("n_contexts") - pl.col("active").fill_null(0)).alias("n_contexts"))
    if sizes.filter(pl.col("n_contexts") < 0).height:
        raise AssertionError("more active score-side trigger contexts than score-side trigger contexts")
    return sizes


def token_weights(contexts: pl.DataFrame, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token id [max_id + 1]: its hash bucket in 0..dims-1 and its signed IDF weight.

    idf = log(n_contexts / document frequency): 0 for a token found in every context.
    """
    df = (
        contexts.lazy().select(pl.col("token_ids").list.unique().explode().alias("token_id")).drop_nulls()
        .group_by("token_id").len().collect(engine="streaming")
    )
    ids = df["token_id"].to_numpy().astype(np.int64)
    size = int(ids.max()) + 1 if len(ids) else 1
    idf = np.zeros(size, dtype=np.float64)
    idf[ids] = np.log(max(contexts.height, 1) / df["len"].to_numpy())
    h = mix64(np.arange(size, dtype=np.uint64) ^ mix64(np.array([SALT_EMBEDDING], dtype=np.uint64)))
    sign = np.where((h >> np.uint64(63)) == 1, -1.0, 1.0)
    return (h % np.uint64(dims)).astype(np.int64), (sign * idf).astype(np.float32)


def embed_contexts(chunk: pl.DataFrame, bucket: np.ndarray, weight: np.ndarray, dims: int) -> np.ndarray:
    """L2-normalised embeddings [n, dims] (float32) of the chunk's contexts (column token_ids)."""
    n = chunk.height
    lengths = chunk["token_ids"].list.len().to_numpy().astype(np.int64)
    flat = chunk["token_ids"].explode().drop_nulls().to_numpy().astype(np.int64)
    cell = np.repeat(np.arange(n, dtype=np.int64), lengths) * dims + bucket[flat]
    vectors = np.bincount(cell, weights=weight[flat], minlength=n * dims).reshape(n, dims).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def latent_queries(top: pl.DataFrame, contexts: pl.DataFrame, bucket: np.ndarray, weight: np.ndarray,
                   cfg: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """(latents [L], unit queries [L, dims]): mean embedding of each latent's explain_top best contexts."""
    best = top.sort(["latent", "top_key"]).filter(pl.int_range(pl.len()).over("latent") < max(cfg.explain_top, 1))
    latents, latent_row = np.unique(best["latent"].to_numpy(), return_inverse=True)
    ctx_ids, ctx_row = np.unique(best["ctx_id"].to_numpy(), return_inverse=True)
    chunk = contexts.filter(pl.col("ctx_id").is_in(pl.Series(ctx_ids).implode())).sort("ctx_id")
    if chunk.height != len(ctx_ids):
        raise ValueError(f"contexts hold {chunk.height} of the {len(ctx_ids)} top contexts (missing or repeated ids)")
    emb = embed_contexts(chunk, bucket, weight, cfg.embedding_dims)
    member = sp.csr_matrix((np.ones(best.height, np.float32), (latent_row.reshape(-1), ctx_row.reshape(-1))),
                           shape=(len(latents), len(ctx_ids)))
    queries = np.asarray(member @ emb, dtype=np.float32)
    return latents, queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)


def _mask_active(scores: np.ndarray, nonzeros: pl.LazyFrame, latents: np.ndarray, ids: np.ndarray) -> None:
    """Set scores [L, C] to -inf where latent latents[l] fires in context ids[c] (ids sorted)."""
    active = (
        nonzeros.select(pl.col("latent").cast(pl.Int32), pl.col("ctx_id").cast(pl.Int64))
        .filter(pl.col("ctx_id").is_between(int(ids[0]), int(ids[-1])))
        .filter(pl.col("latent").is_in(pl.Series(latents, dtype=pl.Int32).implode()))
        .unique()
        .collect(engine="streaming")
    )
    row = np.searchsorted(latents, active["latent"].to_numpy())
    col = np.searchsorted(ids, active["ctx_id"].to_numpy())
    hit = ids[np.minimum(col, len(ids) - 1)] == active["ctx_id"].to_numpy()
    scores[row[hit], col[hit]] = -np.inf


def _merge_top(best: tuple[np.ndarray, np.ndarray], scores: np.ndarray, ids: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Running per-latent top-k (scores [L, k], ctx_ids [L, k]) merged with a chunk's scores [L, C]."""
    if scores.shape[1] > k:  # negated in place: no second [L, C] float copy
        idx = np.argpartition(np.negative(scores, out=scores), k - 1, axis=1)[:, :k]
        np.negative(scores, out=scores)
    else:
        idx = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    all_scores = np.hstack([best[0], np.take_along_axis(scores, idx, axis=1)])
    all_ids = np.hstack([best[1], ids[idx]])
    order = np.lexsort((all_ids, -all_scores), axis=1)[:, :k]
    return np.take_along_axis(all_scores, order, axis=1), np.take_along_axis(all_ids, order, axis=1)


def _anchors(pairs: pl.DataFrame, contexts: pl.DataFrame, queries: np.ndarray, bucket: np.ndarray,
             weight: np.ndarray, block: int = 65536) -> np.ndarray:
    """Per (row, ctx_id) pair [P]: position of the context token that adds most to its cosine."""
    ids = np.unique(pairs["ctx_id"].to_numpy())
    chunk = contexts.filter(pl.col("ctx_id").is_in(pl.Series(ids).implode())).sort("ctx_id")
    lengths = chunk["token_ids"].list.len().to_numpy().astype(np.int64)
    flat = chunk["token_ids"].explode().drop_nulls().to_numpy().astype(np.int64)
    padded = np.full((len(ids), max(int(lengths.max(initial=0)), 1)), -1, dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    padded[np.repeat(np.arange(len(ids)), lengths), np.arange(len(flat)) - starts] = flat
    rows, ctx_at = pairs["row"].to_numpy(), np.searchsorted(ids, pairs["ctx_id"].to_numpy())
    anchors = np.zeros(pairs.height, dtype=np.int32)
    for lo in range(0, pairs.height, block):
        tok = padded[ctx_at[lo:lo + block]]
        safe = np.maximum(tok, 0)
        gain = queries[rows[lo:lo + block, None], bucket[safe]] * weight[safe]
        anchors[lo:lo + block] = np.where(tok >= 0, gain, -np.inf).argmax(axis=1)
    return anchors


def neighbour_candidates(nonzeros: pl.LazyFrame, contexts: pl.DataFrame, top: pl.DataFrame,
                         cfg: SamplingConfig) -> pl.DataFrame:
    """Per latent of `top`, its neighbour_pool nearest contexts by embedding where it never fires.

    top: latent, ctx_id, top_key (the activating pass's top pool). Returns latent, ctx_id,
    anchor (most query-like token), rank (0 = nearest); only contexts with cosine > 0.
    """
    empty = pl.DataFrame(schema={"latent": pl.Int32, "ctx_id": pl.Int64, "anchor": pl.Int32, "rank": pl.Int64})
    if top.height == 0 or contexts.height == 0:
        return empty
    bucket, weight = token_weights(contexts, cfg.embedding_dims)
    latents, queries = latent_queries(top, contexts, bucket, weight, cfg)
    k, n_latents = cfg.neighbour_pool, len(latents)
    best = (np.full((n_latents, k), -np.inf, dtype=np.float32), np.full((n_latents, k), -1, dtype=np.int64))
    ordered = contexts.select("ctx_id", "token_ids")
    ordered = ordered if ordered["ctx_id"].is_sorted() else ordered.sort("ctx_id")
    step = max(1, min(cfg.context_chunk, cfg.neighbour_block // max(n_latents, 1)))
    for offset in range(0, ordered.height, step):
        chunk = ordered.slice(offset, step)
        ids = chunk["ctx_id"].to_numpy().astype(np.int64)
        scores = queries @ embed_contexts(chunk, bucket, weight, cfg.embedding_dims).T
        _mask_active(scores, nonzeros, latents, ids)
        best = _merge_top(best, scores, ids, k)
    rank = np.broadcast_to(np.arange(k), best[0].shape)
    keep = best[0] > 0
    pairs = pl.DataFrame({"row": np.nonzero(keep)[0], "latent": latents[np.nonzero(keep)[0]].astype(np.int32),
                          "ctx_id": best[1][keep], "rank": rank[keep].astype(np.int64)})
    if pairs.height == 0:
        return empty
    anchors = _anchors(pairs, contexts, queries, bucket, weight)
    log.info("embedding neighbours: %d candidates for %d latents", pairs.height, n_latents)
    return pairs.with_columns(pl.Series("anchor", anchors, dtype=pl.Int32)).select(empty.columns)


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
