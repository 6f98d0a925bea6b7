"""The run summary: metric columns led by correlation and AUROC, recall by activation decile per natural
explainer (medians over latents equal a direct computation from `scores`)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from flows.reports.summary import SUMMARY_METRICS, decile_summary, format_summary, score_summary, summary_text
from flows.store import Store

pytestmark = pytest.mark.integration


def test_decile_medians_equal_the_scores_table(tiny_run):
    cfg, summary = tiny_run
    store = Store(cfg.store)
    deciles = decile_summary(store, summary["sae_id"], summary["score_keys"])
    rows = store.read("scores").filter(pl.col("score_key").is_in(summary["score_keys"])
                                       & (pl.col("population") == "natural") & (pl.col("explainer") == "n2g")
                                       & (pl.col("estimator") == "exact"))
    assert rows.height > 0 and rows["decile_recall"].list.len().unique().to_list() == [10]
    got = deciles.filter(pl.col("explainer") == "n2g").row(0, named=True)
    matrix = np.array([[np.nan if v is None else v for v in r] for r in rows["decile_recall"].to_list()])
    for d in range(10):
        column = matrix[:, d][~np.isnan(matrix[:, d])]
        assert got[f"d{d + 1}"] == pytest.approx(float(np.median(column)))
    always = deciles.filter(pl.col("explainer") == "always-on").row(0, named=True)
    assert all(always[f"d{d + 1}"] == 1.0 for d in range(10))  # predicts every token: every decile covered


def test_summary_leads_with_correlation_and_auroc(tiny_run):
    cfg, summary = tiny_run
    store = Store(cfg.store)
    header = format_summary(score_summary(store, summary["sae_id"], summary["score_keys"])).splitlines()[0]
    assert SUMMARY_METRICS[:2] == ("correlation", "auroc")
    assert header.index("correlation") < header.index("auroc") < header.index("precision") < header.index("f1")
    text = summary_text(store, summary["sae_id"], summary["score_keys"], summary["stats_key"], summary["explain_keys"])
    assert "recall by activation decile" in text and "not scored" in text
