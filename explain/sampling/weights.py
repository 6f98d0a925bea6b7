"""Inverse-probability weights of the score examples: how many natural tokens each window token stands for.

The natural population of a latent is every token of every context on its score side (the contexts
`split_of` assigns to "score" for that latent: everything the explainer never sees). The score set
samples it unevenly on purpose (every activation decile, verified silent windows, hard negatives), so
a score on the score set is not a score on ordinary text. Weighting every window token by the number
of population tokens it stands for (Horvitz-Thompson, one weight per window) turns weighted sums over
the score set into estimates of population totals (score/ipw.py). The population is cut into strata,
each with its own sample (the groups of `_select`, explain/sampling/examples.py):

- decile d (group "quantile"): the peak windows of the latent's N_d score-side contexts whose max
  activation falls in decile d (N_d counted exactly by the activating pass). The picks are a uniform
  sample of them (bottom-k by hash), so each of the taken_d picked windows stands for N_d / taken_d
  windows: weight N_d / taken_d. Backfill and de-duplication change taken_d, not the rule.
- embedding neighbours (group "neighbour", kind "similar"): the nearest silent contexts, chosen
  deterministically, so certainty units: weight 1, each window stands for itself, and its context
  belongs to no other stratum.
- trigger stratum: the N_T silent score-side contexts that hold one of the latent's trigger tokens
  (explain/sampling/negatives.py: counted exactly, those the neighbours took left out). Two samples
  fall in it: the trigger-token hard negatives (group "similar": the bottom-k of a hash among them, a
  uniform sample) and the random picks whose context holds a trigger token (post-stratified: the
  random draw is uniform over the silent contexts no other group took, so given how many land here
  they are a uniform sample of the stratum's other contexts). Together the k + r_T contexts are a
  uniform sample of the stratum, and each of their windows stands for an equal share of its tokens:
  weight N_T * ctx_len / (window tokens of the k + r_T windows).
- plain stratum (group "random" without a trigger token): everything else: the silent contexts with
  no trigger token, the activating contexts outside their peak windows and the neighbours' contexts
  outside their windows. Random windows are uniform draws with a uniform start, so each stands for
  weight = (score tokens - N_act * window_len - N_T * ctx_len - neighbour tokens) / their tokens.

Why stratify: false alarms cluster where the latent's trigger tokens occur, and the hard negatives
are drawn exactly there, so the trigger stratum gets k + r_T windows instead of the r_T a random draw
alone puts in it. Why one weight for the whole stratum although the hard negatives' windows are not
uniform in their contexts: the alternative, hard negatives standing for the windows at the trigger and
random picks for the rest of those contexts, cannot be written with one weight per window (a random
window near the trigger counts tokens the hard negatives already stand for), and its best version
(mixed with the random-only estimate in proportion to the two sample sizes) gave the same median
precision within 0.006 in a Monte Carlo of both designs on the exact N2G predictions of the default
run. The price is one approximation: a hard negative's window is centred on the first trigger token,
where the stratum's false alarms are denser (on the default run the trigger contexts' N2G predictions
are ~1.8x as dense in those windows as in the rest of the contexts), so with few random picks in the
stratum its false alarms are over-counted (precision low, not high); the more random picks land in
it, the smaller the effect. When a stratum has no pick its tokens go to the other sample: trigger-
stratum tokens without any window there to the plain random windows (the unstratified estimate),
plain tokens without a plain random pick to the random windows in the trigger stratum (random picks
are a uniform sample of all silent contexts); no random window at all leaves the latent without
weights.

What stratification cannot fix is the plain stratum's size. On the default run a latent's silent
contexts hold a median of ~30 predicted tokens among ~50k, and its silent trigger contexts (a median
of 3) hold only ~8% of them: most false alarms are in plain text, which 20 random windows of 32 tokens
mostly miss, and a latent whose random windows see none gets the precision inside its activating and
hard-negative windows. The totals stay unbiased, precision (a ratio) and its median over latents do
not: the default run's median ipw precision is 0.75 against 0.62 exact (0.80 without the trigger
stratum, 0.65 with --sampling-score-random 80; recall 0.35 vs 0.36), and the Monte Carlo puts it at
0.74, 0.66, 0.65, 0.64 and 0.62 with 20, 50, 70, 80 and 200 random windows (0.80, 0.68, 0.66, 0.65
and 0.62 without the trigger stratum). More random windows cost simulator calls: a choice of the run.

Why the out-of-window tokens of activating contexts go to the plain stratum: no example samples them
(a score window is centred on the peak), so some stratum must stand in. On the default run (exact N2G
counts per stratum, expected values) letting each peak window stand for its whole context overstates
the median precision badly (0.74 vs 0.62 exact): the peak window is where the latent and its pattern
agree most; letting random windows stand for them gives 0.61. The price: the latent's activations
outside the peak window (about 12% of its held-out activations there) count as silent, so recall and
always-on's precision come out ~10% low, and predictions there are assumed to occur at the plain
contexts' rate. Smaller approximations: a random window's start is uniform, so a context's middle
tokens are covered more often than its edges (equal weights assume no position effect); duplicate
windows (same tokens) are taken once although their copies count in the strata; the neighbours are
picked after the hard negatives (a neighbour a hard negative took is replaced by the next one), so
the hard negatives are uniform over the trigger stratum up to that.

A latent whose weights cannot represent its population (a decile without a pick, no random window at
all, or contexts of unequal lengths) gets null weights on every score example: its natural estimate is
absent rather than wrong. Explain examples always have a null weight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from explain.sampling.config import SamplingConfig
from explain.sampling.keys import SALT_SPLIT, pair_hash, unit_interval
from explain.sampling.negatives import holds_trigger

log = logging.getLogger(__name__)

TRIGGER_GROUP, NEIGHBOUR_GROUP, RANDOM_GROUP = "similar", "neighbour", "random"
"""The `_select` groups of the trigger-token hard negatives, the embedding neighbours, the random picks."""


@dataclass(frozen=True)
class TriggerStratum:
    """What the weights need to know of the trigger stratum (explain/sampling/negatives.py)."""

    tokens: pl.DataFrame
    """latent, token_id: each latent's trigger tokens."""
    sizes: pl.DataFrame
    """latent, n_contexts: its silent score-side contexts holding one of them (exact; neighbours included)."""


def score_tokens(latents: np.ndarray, ctx_ids: np.ndarray, ctx_len: int, cfg: SamplingConfig,
                 block: int = 1 << 22) -> np.ndarray:
    """int64 [len(latents)]: tokens on each latent's score side, counted exactly with the split hash.

    ctx_ids [n_contexts]: every context of the corpus, each ctx_len tokens long. Latents go in blocks
    of ~block (latent, context) pairs so memory stays bounded for large corpora.
    """
    out = np.zeros(len(latents), dtype=np.int64)
    per_block = max(1, block // max(len(ctx_ids), 1))
    for lo in range(0, len(latents), per_block):
        chunk = latents[lo:lo + per_block]
        lat = np.repeat(chunk.astype(np.int64), len(ctx_ids))
        ctx = np.tile(ctx_ids, len(chunk))
        # same rule as keys.split_of, without building the string array
        explain = unit_interval(pair_hash(cfg.seed, SALT_SPLIT, lat, ctx)) < cfg.explain_fraction
        out[lo:lo + len(chunk)] = (~explain).reshape(len(chunk), -1).sum(axis=1) * ctx_len
    return out


def with_weights(chosen: pl.DataFrame, counts: pl.DataFrame, stratum: TriggerStratum, contexts: pl.DataFrame,
                 cfg: SamplingConfig) -> pl.DataFrame:
    """`chosen` (the selected examples: latent, split, group, quantile, ctx_id, length, ...) plus `weight` (f64).

    counts: latent, split, decile, n_contexts (explain/sampling/activating.py::ActivatingScan.counts).
    contexts: ctx_id, token_ids of every context of the corpus. See the module docstring for the rule.
    """
    null = chosen.with_columns(pl.lit(None, dtype=pl.Float64).alias("weight"))
    lengths = contexts["token_ids"].list.len().unique()
    if chosen.height == 0 or lengths.len() != 1:
        if lengths.len() > 1:
            log.warning("contexts of unequal lengths: no natural-population weights")
        return null
    ctx_len = int(lengths[0])
    window_len = min(ctx_len, cfg.window)
    # post-stratification: does the context of a score random pick or neighbour hold a trigger token
    asked = (pl.col("split") == "score") & pl.col("group").is_in([RANDOM_GROUP, NEIGHBOUR_GROUP])
    flags = chosen.filter(asked).select("latent", "ctx_id")
    flags = flags.with_columns(holds_trigger(flags, contexts, stratum.tokens).alias("_trigger"))
    chosen = chosen.join(flags.unique(["latent", "ctx_id"]), on=["latent", "ctx_id"], how="left").with_columns(
        pl.when(pl.col("split") != "score").then(False).when(pl.col("group") == TRIGGER_GROUP).then(True)
        .when(asked).then(pl.col("_trigger")).otherwise(False).alias("_trigger"))
    score = chosen.filter(pl.col("split") == "score")
    latents = np.sort(score["latent"].unique().to_numpy())
    totals = pl.DataFrame({"latent": latents.astype(np.int32),
                           "tokens": score_tokens(latents, contexts["ctx_id"].to_numpy(), ctx_len, cfg)})
    deciles = _decile_weights(score, counts)
    silent = _silent_weights(score, counts, stratum.sizes, totals, ctx_len, window_len)
    # a non-empty stratum without picks: the latent's weights cannot add up to its population
    broken = pl.concat([deciles.filter(pl.col("weight").is_null()).select("latent"),
                        silent.filter(pl.col("broken")).select("latent")]).unique()
    weighted = (
        chosen.with_columns(pl.col("quantile").alias("_decile"))
        .join(deciles.select("latent", pl.col("decile").alias("_decile"), pl.col("weight").alias("_wq")),
              on=["latent", "_decile"], how="left")
        .join(silent.select("latent", "_wt", "_wrt", "_wp"), on="latent", how="left")
        .with_columns(
            pl.when(pl.col("split") != "score").then(None)
            .when(pl.col("latent").is_in(broken["latent"].implode())).then(None)
            .when(pl.col("group") == "quantile").then(pl.col("_wq"))
            .when(pl.col("group") == NEIGHBOUR_GROUP).then(pl.lit(1.0))  # certainty units
            .when(pl.col("group") == TRIGGER_GROUP).then(pl.col("_wt"))
            .when((pl.col("group") == RANDOM_GROUP) & pl.col("_trigger")).then(pl.col("_wrt"))
            .when(pl.col("group") == RANDOM_GROUP).then(pl.col("_wp"))
            .otherwise(None)
            .cast(pl.Float64).alias("weight"))
        .drop("_decile", "_wq", "_wt", "_wrt", "_wp", "_trigger")
    )
    if broken.height:
        log.info("natural-population weights: %d of %d latents have a stratum without picks (no estimate)",
                 broken.height, len(latents))
    return weighted


def _decile_weights(score: pl.DataFrame, counts: pl.DataFrame) -> pl.DataFrame:
    """latent, decile, weight = N_d / taken_d for every non-empty score-side decile (null: no pick)."""
    taken = score.filter(pl.col("group") == "quantile").group_by("latent", pl.col("quantile").alias("decile")).agg(
        pl.len().cast(pl.Int64).alias("taken"))
    strata = counts.filter((pl.col("split") == "score") & pl.col("latent").is_in(score["latent"].unique().implode()))
    both = strata.join(taken, on=["latent", "decile"], how="full", coalesce=True).with_columns(
        pl.col("n_contexts").fill_null(0), pl.col("taken").fill_null(0))
    if both.filter(pl.col("taken") > pl.col("n_contexts")).height:
        raise AssertionError("a decile has more score picks than score-side contexts")
    return both.with_columns(
        pl.when(pl.col("taken") > 0).then(pl.col("n_contexts") / pl.col("taken")).otherwise(None).alias("weight"))


def _silent_weights(score: pl.DataFrame, counts: pl.DataFrame, sizes: pl.DataFrame, totals: pl.DataFrame,
                    ctx_len: int, window_len: int) -> pl.DataFrame:
    """Per latent: _wt (trigger-token hard negatives), _wrt (random picks holding a trigger token), _wp
    (other random picks) and broken (plain tokens to stand for, but no random window)."""
    def tokens_of(rows: pl.Expr) -> pl.Expr:
        return pl.col("length").filter(rows).sum().cast(pl.Int64)

    group, trigger = pl.col("group"), pl.col("_trigger")
    picks = score.group_by("latent").agg(
        tokens_of(group == TRIGGER_GROUP).alias("hard"), tokens_of((group == RANDOM_GROUP) & trigger).alias("r_trig"),
        tokens_of((group == RANDOM_GROUP) & ~trigger).alias("r_plain"), tokens_of(group == NEIGHBOUR_GROUP).alias("nb"),
        ((group == NEIGHBOUR_GROUP) & trigger).sum().cast(pl.Int64).alias("nb_trig"),
        ((group.is_in([TRIGGER_GROUP, RANDOM_GROUP])) & trigger).sum().cast(pl.Int64).alias("in_trig"))
    n_active = counts.filter(pl.col("split") == "score").group_by("latent").agg(
        pl.col("n_contexts").sum().alias("n_active"))
    table = (
        totals.join(n_active, on="latent", how="left").join(picks, on="latent", how="left")
        .join(sizes.select(pl.col("latent").cast(pl.Int32), pl.col("n_contexts").alias("n_trig")), on="latent",
              how="left")
        .with_columns(pl.exclude("latent", "tokens").fill_null(0))
        # the neighbours' contexts are certainty units, in no stratum
        .with_columns((pl.col("n_trig") - pl.col("nb_trig")).alias("n_trig"))
    )
    if table.filter(pl.col("in_trig") > pl.col("n_trig")).height:
        raise AssertionError("more score picks hold a trigger token than there are silent trigger contexts")
    trig_tokens = pl.col("n_trig") * ctx_len
    plain_tokens = pl.col("tokens") - pl.col("n_active") * window_len - trig_tokens - pl.col("nb")
    in_trig = pl.col("hard") + pl.col("r_trig")
    # a stratum without a window: its tokens go to the other stratum's random windows (module docstring)
    table = table.with_columns(
        pl.when(in_trig > 0).then(trig_tokens).otherwise(0).alias("_stand_t"),
        (plain_tokens + pl.when(in_trig > 0).then(0).otherwise(trig_tokens)).alias("_stand_p"))
    if table.filter(pl.col("_stand_p") < 0).height:
        raise AssertionError("strata hold more tokens than the latent's score side")
    wt = pl.col("_stand_t") / in_trig
    return table.select(
        "latent",
        pl.when(in_trig > 0).then(wt).otherwise(None).alias("_wt"),
        pl.when(pl.col("r_trig") == 0).then(None)
        .when(pl.col("r_plain") > 0).then(wt).otherwise(wt + pl.col("_stand_p") / pl.col("r_trig")).alias("_wrt"),
        pl.when(pl.col("r_plain") > 0).then(pl.col("_stand_p") / pl.col("r_plain")).otherwise(None).alias("_wp"),
        ((pl.col("_stand_p") > 0) & (pl.col("r_plain") == 0) & (pl.col("r_trig") == 0)).alias("broken"),
    )
