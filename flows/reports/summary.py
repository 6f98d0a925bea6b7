"""A plain-text summary of a run's scores: what the CLI prints at the end of `latent-atlas run`."""

from __future__ import annotations

import polars as pl

from flows.store import Store
from score.metrics import METRICS


def score_summary(store: Store, sae_id: str, score_keys: list[str] | None = None) -> pl.DataFrame:
    """Median of each metric per (explainer, scorer), with the number of latents scored: over the rows of
    `score_keys` (a run's own settings) when given, else over every score of the SAE."""
    if not store.has("scores"):
        return pl.DataFrame()
    rows = store.scan("scores").filter(pl.col("sae_id") == sae_id)
    if score_keys is not None:
        rows = rows.filter(pl.col("score_key").is_in(score_keys))
    return (
        rows
        .group_by("explainer", "scorer")
        .agg(pl.len().alias("latents"), *[pl.col(m).fill_nan(None).median().alias(m) for m in METRICS])
        .sort("scorer", "explainer")
        .collect()
    )


def format_summary(summary: pl.DataFrame) -> str:
    if summary.is_empty():
        return "no scores yet"
    header = f"{'explainer':<14}{'scorer':<12}{'latents':>8}" + "".join(f"{m:>13}" for m in METRICS)
    lines = [header]
    for row in summary.iter_rows(named=True):
        cells = "".join(f"{row[m]:>13.3f}" if row[m] is not None else f"{'-':>13}" for m in METRICS)
        lines.append(f"{row['explainer']:<14}{row['scorer']:<12}{row['latents']:>8}{cells}")
    return "\n".join(lines)
