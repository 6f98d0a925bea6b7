"""Per-latent example sets (the `examples` table) from the sparse cache, in bounded memory.

For each latent with status "ok":
- explain split: the top contexts by max activation, more activating contexts spread over the
  activation deciles, random contexts verified silent, and hard negatives (kind "similar");
- score split: activating contexts spread over deciles, random and similar negatives.
Hard negatives come from two sources, both stored as kind "similar" (the examples table has no
source column): contexts holding the latent's trigger tokens, and its nearest silent contexts by
embedding (see explain/sampling/negatives.py). In each (latent, split) the trigger source fills
similar_needs()[0] slots first; embedding neighbours then fill the rest of the similar quota
(their share, plus whatever the trigger source left empty). similar_embedding_fraction=0 turns
the embedding source off.
Every (latent, context) pair is assigned to exactly one split by a seeded hash before drawing,
so the two splits never share a context; this is asserted on the result. Duplicate windows (same
token ids) are removed, keeping the higher-priority example
(top > quantile > similar by trigger > similar by embedding > random).
Every score example has a `weight`: how many natural (score-side) tokens each of its tokens stands
for, so the score set also estimates scores on ordinary text (explain/sampling/weights.py).
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from explain.sampling.activating import scan_pools
from explain.sampling.config import SamplingConfig
from explain.sampling.keys import split_of
from explain.sampling.negatives import (
    drop_active,
    neighbour_candidates,
    random_candidates,
    silent_trigger_counts,
    similar_candidates,
    trigger_tokens,
)
from explain.sampling.weights import TriggerStratum, with_weights
from explain.sampling.windows import gather_acts, place_windows, with_window_hash

__all__ = ["SamplingConfig", "assert_disjoint_splits", "sample_examples"]

log = logging.getLogger(__name__)

_OUTPUT_COLUMNS = ["sae_id", "latent", "split", "kind", "quantile", "ctx_id", "start", "acts", "weight"]
"""The `examples` columns this module computes (dtypes: flows/store/schemas.py, applied by the store)."""
_CANDIDATE_COLUMNS = ["latent", "ctx_id", "split", "group", "kind", "quantile", "anchor", "rank"]
_PRIORITY = {"top": 0, "quantile": 1, "similar": 2, "neighbour": 3, "random": 4}
_KIND = {"similar": "similar", "neighbour": "similar", "random": "random"}


def _activating_candidates(top: pl.DataFrame, quantile: pl.DataFrame) -> pl.DataFrame:
    """Top pool (rank by activation) + quantile pool (round-robin over deciles, highest first)."""
    top_c = top.sort(["latent", "ctx_max", "ctx_id"], descending=[False, True, False]).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).over("latent").alias("rank"), pl.lit("top").alias("group"))
    rank_in_decile = pl.int_range(pl.len(), dtype=pl.Int64).over(["latent", "split", "decile"])
    quant_c = quantile.sort(["latent", "split", "decile", "key"]).with_columns(
        (rank_in_decile * 10 + (9 - pl.col("decile"))).alias("rank"), pl.lit("quantile").alias("group"))
    both = pl.concat([top_c, quant_c], how="diagonal_relaxed")
    return both.with_columns(pl.lit("activating").alias("kind"), pl.col("decile").alias("quantile"),
                             pl.col("peak_pos").alias("anchor"))


def _negative_candidates(nonzeros: pl.LazyFrame, contexts: pl.DataFrame, ok_stats: pl.DataFrame,
                         top: pl.DataFrame, cfg: SamplingConfig) -> tuple[pl.DataFrame, TriggerStratum]:
    """Random and similar candidates with a split, verified silent for their latent, and the latents'
    trigger tokens with the exact number of silent score-side contexts holding one."""
    ctx_ids = np.sort(contexts["ctx_id"].to_numpy())
    random_c = random_candidates(ok_stats, ctx_ids, cfg).with_columns(
        pl.lit(-1, dtype=pl.Int32).alias("anchor"), pl.lit("random").alias("group"))
    triggers = trigger_tokens(top, contexts, cfg.n_trigger_tokens)
    similar_c, score_hits = similar_candidates(triggers, contexts, cfg)
    similar_c = similar_c.with_columns(pl.lit("similar").alias("group"))
    stratum = TriggerStratum(triggers, silent_trigger_counts(nonzeros, contexts, triggers, score_hits, cfg))
    parts = [similar_c, random_c]
    if cfg.similar_embedding_fraction > 0 and (cfg.explain_similar or cfg.score_similar):
        parts.append(neighbour_candidates(nonzeros, contexts, top, cfg).with_columns(
            pl.lit("neighbour").alias("group")))
    both = pl.concat(parts, how="diagonal_relaxed")
    both = both.with_columns(
        pl.Series("split", split_of(cfg.seed, both["latent"].to_numpy(), both["ctx_id"].to_numpy(),
                                    cfg.explain_fraction), dtype=pl.String),
        pl.col("group").replace_strict(_KIND, return_dtype=pl.String).alias("kind"),
        pl.lit(-1, dtype=pl.Int32).alias("quantile"))
    return drop_active(nonzeros, both), stratum


def _need(cfg: SamplingConfig) -> pl.DataFrame:
    """How many examples each (split, group) gets."""
    rows = [("explain", "top", cfg.explain_top), ("explain", "quantile", cfg.explain_quantile),
            ("explain", "random", cfg.explain_random), ("score", "quantile", cfg.score_activating),
            ("score", "random", cfg.score_random)]
    for split in ("explain", "score"):
        by_trigger, total = cfg.similar_needs(split)
        rows += [(split, "similar", by_trigger), (split, "neighbour", total)]
    return pl.DataFrame(rows, schema={"split": pl.String, "group": pl.String, "need": pl.Int64}, orient="row")


def _similar_left(pool: pl.DataFrame, chosen: list[pl.DataFrame]) -> pl.DataFrame:
    """Neighbour pool with need = similar total minus the trigger-token picks of its (latent, split)."""
    taken = pl.concat(chosen).filter(pl.col("group") == "similar").group_by(["latent", "split"]).agg(
        pl.len().cast(pl.Int64).alias("taken"))
    return pool.join(taken, on=["latent", "split"], how="left").with_columns(
        (pl.col("need") - pl.col("taken").fill_null(0)).alias("need")).drop("taken")


def _select(candidates: pl.DataFrame, contexts: pl.DataFrame, cfg: SamplingConfig) -> pl.DataFrame:
    """Fill groups in priority order (top, quantile, similar, neighbour, random): each takes its `need`
    best candidates per (latent, split) whose context and window a previous pick has not used."""
    ordered = candidates.with_columns(
        pl.col("group").replace_strict(_PRIORITY, return_dtype=pl.Int32).alias("priority"),
        pl.col("anchor").fill_null(-1),
    ).join(_need(cfg), on=["split", "group"], how="inner").sort(["latent", "priority", "rank", "ctx_id"])
    placed = with_window_hash(place_windows(ordered, contexts, cfg), contexts)
    chosen: list[pl.DataFrame] = []
    for group in sorted(_PRIORITY, key=_PRIORITY.get):
        pool = placed.filter(pl.col("group") == group)
        for taken in chosen:
            pool = pool.join(taken.select("latent", "ctx_id"), on=["latent", "ctx_id"], how="anti")
            pool = pool.join(taken.select("latent", "window_hash"), on=["latent", "window_hash"], how="anti")
        pool = pool.sort(["latent", "rank", "ctx_id"])
        pool = pool.unique(subset=["latent", "ctx_id"], keep="first", maintain_order=True)
        pool = pool.unique(subset=["latent", "window_hash"], keep="first", maintain_order=True)
        if group == "neighbour":
            pool = _similar_left(pool, chosen)
        chosen.append(pool.filter(pl.int_range(pl.len()).over(["latent", "split"]) < pl.col("need")))
    return pl.concat(chosen, how="vertical").sort(["latent", "split", "priority", "rank", "ctx_id"])


def assert_disjoint_splits(examples: pl.DataFrame) -> None:
    """Raise if any latent has a context in both its explain and its score split."""
    if examples.height == 0:
        return
    shared = examples.group_by(["latent", "ctx_id"]).agg(pl.col("split").n_unique().alias("n")).filter(
        pl.col("n") > 1)
    if shared.height:
        raise AssertionError(f"explain/score share contexts: {shared.head(5).rows()}")


def sample_examples(nonzeros: pl.LazyFrame, contexts: pl.DataFrame, stats: pl.DataFrame,
                    cfg: SamplingConfig, sae_id: str) -> pl.DataFrame:
    """Examples table rows for every "ok" latent of `stats` (latent_stats rows of this SAE).

    nonzeros: the latent_acts cache (ctx_id, pos, latent, value; rows of a context contiguous).
    contexts: ctx_id, token_ids (list[int]); every context of the corpus the cache was built on.
    Returns sae_id, latent, split, kind, quantile, ctx_id, start, acts (list[f32]), weight (f64) where
    acts[i] is the latent's activation on contexts.tokens[start + i] and weight is null for explain
    examples (explain/sampling/weights.py).
    """
    ok_stats = stats.filter(pl.col("status") == "ok").select("latent", "n_contexts", "decile_edges")
    if ok_stats.height == 0 or contexts.height == 0:
        return pl.DataFrame({name: [] for name in _OUTPUT_COLUMNS})
    scan = scan_pools(nonzeros, ok_stats, cfg)
    negatives, stratum = _negative_candidates(nonzeros, contexts, ok_stats, scan.top, cfg)
    candidates = pl.concat(
        [_activating_candidates(scan.top, scan.quantile).select(_CANDIDATE_COLUMNS),
         negatives.select(_CANDIDATE_COLUMNS)],
        how="vertical_relaxed",
    )
    chosen = with_weights(_select(candidates, contexts, cfg), scan.counts, stratum, contexts, cfg)
    activating = gather_acts(nonzeros, chosen.filter(pl.col("kind") == "activating"), cfg.window)
    silent = chosen.filter(pl.col("kind") != "activating").with_columns(
        pl.lit(0.0, dtype=pl.Float32).repeat_by(pl.col("length")).alias("acts"))
    examples = pl.concat([activating, silent], how="vertical_relaxed").sort(
        ["latent", "split", "priority", "rank", "ctx_id"])
    examples = examples.with_columns(pl.lit(sae_id).alias("sae_id")).select(_OUTPUT_COLUMNS)
    assert_disjoint_splits(examples)
    log.info("sampled %d examples for %d latents", examples.height, ok_stats.height)
    return examples
