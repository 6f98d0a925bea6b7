"""A plain-text summary of a run's scores: what the CLI prints at the end of `latent-atlas run`."""

from __future__ import annotations

import numpy as np
import polars as pl

from flows.store import Store
from flows.store.rows import latest_rows
from flows.store.schemas import table_schema
from score.deciles import N_DECILES
from score.intervals import median_interval
from score.metrics import METRICS

SUMMARY_METRICS = ("correlation", "auroc", "precision", "recall", "f1")
"""Column order of the summary: the graded agreement first (correlation and AUROC of the simulated
activation, as Bills et al. report simulation scores), then the thresholded precision, recall and F1."""

POPULATION_ORDER = {"natural": 0, "sampled": 1}
"""The natural population is the headline; the sampled score set is kept for comparison with other tools."""
ESTIMATOR_ORDER = {"exact": 0, "ipw": 1, "sample": 2}
"""Of a (population, explainer, scorer) with several estimators, the summary shows the first: a natural
row is exact where the explainer has exact rows (pattern explanations), else the ipw estimate."""


def headline_rows(store: Store, sae_id: str, score_keys: list[str] | None = None) -> pl.LazyFrame:
    """The score rows a summary reads: of `score_keys` (a run's own settings) when given, else every
    score of the SAE; one estimator per (population, explainer, scorer), the best it has."""
    rows = store.scan("scores").filter(pl.col("sae_id") == sae_id)
    if score_keys is not None:
        rows = rows.filter(pl.col("score_key").is_in(score_keys))
    names = rows.collect_schema().names()
    if "population" not in names:  # a store written before populations existed
        rows = rows.with_columns(pl.lit("sampled").alias("population"))
    if "estimator" not in names:  # before estimators: natural rows were exact, the rest the score set
        rows = rows.with_columns(pl.lit(None, dtype=pl.String).alias("estimator"))
    rows = rows.with_columns(pl.col("estimator").fill_null(
        pl.when(pl.col("population") == "natural").then(pl.lit("exact")).otherwise(pl.lit("sample"))))
    rows = _newest_per_key(store, rows)
    # one estimator per (population, explainer, scorer): the best one it has, over all its latents
    best = pl.col("_estimator_order").min().over("population", "explainer", "scorer")
    return (rows.with_columns(pl.col("estimator").replace_strict(ESTIMATOR_ORDER, default=9).alias("_estimator_order"))
            .filter(pl.col("_estimator_order") == best).drop("_estimator_order"))


def score_summary(store: Store, sae_id: str, score_keys: list[str] | None = None) -> pl.DataFrame:
    """Median of each metric per (population, explainer, scorer), with the number of latents scored and the
    estimator behind the rows (see `headline_rows`)."""
    if not store.has("scores"):
        return pl.DataFrame()
    rows = headline_rows(store, sae_id, score_keys)
    summary = (
        rows
        .group_by("population", "estimator", "explainer", "scorer")
        .agg(pl.len().alias("latents"), *[pl.col(m).fill_nan(None).median().alias(m) for m in METRICS],
             pl.col("f1").fill_nan(None).alias("_f1"))
        .with_columns(pl.col("population").replace_strict(POPULATION_ORDER, default=9).alias("_order"))
        .sort("_order", "scorer", "explainer")
        .drop("_order")
        .collect()
    )
    # 95% interval of the median F1 over latents (which latents an SAE has is the sampling unit here)
    bounds = [median_interval(np.array(v, dtype=np.float64), seed=0) for v in summary["_f1"].to_list()]
    return summary.drop("_f1").with_columns(pl.Series("f1_lo", [b[0] for b in bounds]),
                                            pl.Series("f1_hi", [b[1] for b in bounds]))


def format_summary(summary: pl.DataFrame) -> str:
    """Medians table: the natural population (every held-out token) first, then the sampled score set."""
    if summary.is_empty():
        return "no scores yet"
    header = (f"{'population':<17}{'explainer':<14}{'scorer':<12}{'latents':>8}"
              + "".join(f"{m:>13}" for m in SUMMARY_METRICS) + f"{'F1 95% CI':>17}")
    lines = [header]
    for row in summary.iter_rows(named=True):
        cells = "".join(f"{row[m]:>13.3f}" if row[m] is not None else f"{'-':>13}" for m in SUMMARY_METRICS)
        ci = f"[{row['f1_lo']:.3f}, {row['f1_hi']:.3f}]" if row.get("f1_lo") is not None else "-"
        lines.append(f"{population_label(row):<17}{row['explainer']:<14}{row['scorer']:<12}{row['latents']:>8}"
                     f"{cells}{ci:>17}")
    return "\n".join(lines)


def decile_summary(store: Store, sae_id: str, score_keys: list[str] | None = None) -> pl.DataFrame:
    """Per natural (explainer, scorer): the median over latents of the recall in each activation decile
    (d1 weakest .. d10 strongest; score/deciles.py): which strengths of activation an explanation covers."""
    if not store.has("scores") or "decile_recall" not in store.scan("scores").collect_schema().names():
        return pl.DataFrame()
    rows = (headline_rows(store, sae_id, score_keys)
            .filter((pl.col("population") == "natural") & pl.col("decile_recall").is_not_null())
            .select("estimator", "explainer", "scorer", "decile_recall").collect())
    if rows.is_empty():
        return pl.DataFrame()
    deciles = rows.with_columns(pl.col("decile_recall").list.to_struct(
        fields=[f"d{i + 1}" for i in range(N_DECILES)])).unnest("decile_recall")
    names = [f"d{i + 1}" for i in range(N_DECILES)]
    return deciles.group_by("estimator", "explainer", "scorer").agg(
        *[pl.col(n).median() for n in names]).sort("scorer", "explainer")


def format_deciles(deciles: pl.DataFrame) -> str:
    """The decile table as text: one line per natural (explainer, scorer)."""
    if deciles.is_empty():
        return ""
    names = [f"d{i + 1}" for i in range(N_DECILES)]
    lines = ["recall by activation decile (natural population, median over latents; d1 weakest):",
             f"{'explainer':<14}{'scorer':<12}" + "".join(f"{n:>7}" for n in names)]
    for row in deciles.iter_rows(named=True):
        cells = "".join(f"{row[n]:>7.2f}" if row[n] is not None else f"{'-':>7}" for n in names)
        lines.append(f"{row['explainer']:<14}{row['scorer']:<12}{cells}")
    return "\n".join(lines)


def population_label(row: dict) -> str:
    """"natural (exact)", "natural (ipw)" or "sampled": the population and, for natural rows, how it was
    computed (a reader must not take an estimate for an exact count)."""
    population, estimator = row.get("population") or "sampled", row.get("estimator")
    return f"{population} ({estimator})" if population == "natural" and estimator else population


def unscored_summary(store: Store, sae_id: str, stats_key: str, explain_keys: list[str]) -> str:
    """One line: how many latents have no score, by reason (statistics status, failed explanation)."""
    reasons: dict[str, int] = {}
    if store.has("latent_stats"):
        stats = store.scan("latent_stats").filter((pl.col("sae_id") == sae_id) & (pl.col("stats_key") == stats_key))
        for status, n in stats.filter(pl.col("status") != "ok").group_by("status").len().collect().iter_rows():
            reasons[str(status)] = int(n)
    if store.has("explanations"):
        failed = store.scan("explanations").filter((pl.col("sae_id") == sae_id)
                                                   & pl.col("explain_key").is_in(explain_keys))
        latest = latest_rows(failed, ["latent", "explainer"], "created_at").filter(pl.col("status") != "ok")
        for explainer, status, n in latest.group_by("explainer", "status").len().iter_rows():
            reasons[f"{explainer} {status}"] = int(n)
    if not reasons:
        return "not scored: none"
    return "not scored: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))


def summary_text(store: Store, sae_id: str, score_keys: list[str], stats_key: str, explain_keys: list[str]) -> str:
    """What a command prints after scoring: the medians table, recall by decile, and what was not scored."""
    parts = [format_summary(score_summary(store, sae_id, score_keys)),
             format_deciles(decile_summary(store, sae_id, score_keys)),
             unscored_summary(store, sae_id, stats_key, explain_keys), fvu_warning(store, sae_id)]
    return "\n\n".join(p for p in parts if p)


def fvu_warning(store: Store, sae_id: str) -> str:
    """One line when the SAE's newest sae_metrics row says it reconstructs worse than the mean (FVU > 1)."""
    if not store.has("sae_metrics"):
        return ""
    rows = store.scan("sae_metrics").filter(pl.col("sae_id") == sae_id).sort("created_at").collect()
    if rows.height == 0 or not rows["fvu_above_one"][-1]:
        return ""
    return (f"WARNING: SAE {sae_id} has held-out FVU {rows['fvu_heldout'][-1]:.3f} > 1: it reconstructs worse "
            "than predicting the mean (check the SAE's layer, normalisation and training)")


def _newest_per_key(store: Store, rows: pl.LazyFrame) -> pl.LazyFrame:
    """One row per `scores` key: that of the most recently started run (a key scored twice, e.g. by two
    runs at once, counts once)."""
    key = list(table_schema("scores").key)
    if not store.has("runs"):
        return latest_rows(rows, key).lazy()
    started = store.scan("runs").select("run_id", pl.col("started_at").alias("_started")).unique("run_id")
    rows = rows.join(started, on="run_id", how="left", maintain_order="left")
    return latest_rows(rows, key, "_started").lazy().drop("_started")
