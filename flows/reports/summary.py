"""A plain-text summary of a run's scores: what the CLI prints at the end of `latent-atlas run`."""

from __future__ import annotations

import numpy as np
import polars as pl

from flows.store import Store
from flows.store.rows import latest_rows
from score.intervals import median_interval
from score.metrics import METRICS

POPULATION_ORDER = {"natural": 0, "sampled": 1}
"""The natural population is the headline; the sampled score set is kept for comparison with other tools."""


def score_summary(store: Store, sae_id: str, score_keys: list[str] | None = None) -> pl.DataFrame:
    """Median of each metric per (explainer, scorer), with the number of latents scored: over the rows of
    `score_keys` (a run's own settings) when given, else over every score of the SAE."""
    if not store.has("scores"):
        return pl.DataFrame()
    rows = store.scan("scores").filter(pl.col("sae_id") == sae_id)
    if score_keys is not None:
        rows = rows.filter(pl.col("score_key").is_in(score_keys))
    if "population" not in rows.collect_schema().names():  # a store written before populations existed
        rows = rows.with_columns(pl.lit("sampled").alias("population"))
    summary = (
        rows
        .group_by("population", "explainer", "scorer")
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
    header = (f"{'population':<12}{'explainer':<14}{'scorer':<12}{'latents':>8}" + "".join(f"{m:>13}" for m in METRICS)
              + f"{'F1 95% CI':>17}")
    lines = [header]
    for row in summary.iter_rows(named=True):
        cells = "".join(f"{row[m]:>13.3f}" if row[m] is not None else f"{'-':>13}" for m in METRICS)
        ci = f"[{row['f1_lo']:.3f}, {row['f1_hi']:.3f}]" if row.get("f1_lo") is not None else "-"
        lines.append(f"{row['population']:<12}{row['explainer']:<14}{row['scorer']:<12}{row['latents']:>8}{cells}"
                     f"{ci:>17}")
    return "\n".join(lines)


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
