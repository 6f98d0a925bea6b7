"""Score rows for the dashboard and the latent pages: every population and estimator, not only the headline.

`ReportData.scores` holds one headline row per (latent, explainer, scorer); the pages also show the
sampled and ipw rows beside it, and the dashboard draws one distribution per population.
"""

from __future__ import annotations

import math

import polars as pl

from flows.reports.data import LatentKey, _grouped, _in_keys, _latest, _read
from flows.store import Store

SCORE_FIELDS = ("scorer", "population", "estimator", "precision", "recall", "f1", "auroc", "correlation",
                "balanced_accuracy", "n_tokens", "n_positive", "mode", "precision_lo", "precision_hi",
                "recall_lo", "recall_hi", "f1_lo", "f1_hi")
"""What a latent page shows of a score row (the others are keys and bookkeeping)."""


def all_score_rows(store: Store, sae_id: str | None, keys: dict[str, set[str]],
                   latent: int | None = None) -> pl.DataFrame:
    """The current score rows (of `keys`; of one `latent` when given), newest per (sae, latent, explainer,
    scorer, population, estimator)."""
    where = _in_keys(keys, "score_key")
    if latent is not None:
        where = (pl.col("latent") == latent) if where is None else where & (pl.col("latent") == latent)
    frame = _read(store, "scores", sae_id, where)
    if frame.is_empty():
        return frame
    if "estimator" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("estimator"))
    return _latest(frame, ["sae_id", "latent", "explainer", "scorer", "population", "estimator"])


def scores_by_latent(frame: pl.DataFrame) -> dict[LatentKey, list[dict]]:
    return _grouped(frame)


def clean(value: object, digits: int = 3) -> object:
    """JSON-safe: NaN and inf become null, floats are rounded (the pages show 3 digits)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, digits)
    return value


def score_view(row: dict) -> dict:
    """One score row as a latent page shows it."""
    return {f: clean(row.get(f)) for f in SCORE_FIELDS if f in row}
