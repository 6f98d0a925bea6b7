"""Natural-population rows end to end: every scores row says how it was computed (`estimator`), an N2G run
has an exact and an ipw natural row per latent, and the reports and the summary pick the exact one."""

from __future__ import annotations

import math

import polars as pl
import pytest

from flows.reports.data import load_report_data
from flows.reports.summary import format_summary, score_summary
from flows.store import Store
from flows.store.schemas import table_schema


@pytest.mark.integration
def test_scores_rows_carry_their_estimator(tiny_run):
    cfg, summary = tiny_run
    scores = Store(cfg.store).read("scores").filter(pl.col("sae_id") == summary["sae_id"])
    by_population = scores.group_by("population").agg(pl.col("estimator").unique().sort())
    assert dict(by_population.iter_rows()) == {"sampled": ["sample"], "natural": ["exact", "ipw"]}
    for explainer in ("n2g", "n2g-random", "top-token", "always-on"):
        mine = scores.filter(pl.col("explainer") == explainer)
        exact = mine.filter(pl.col("estimator") == "exact").select("latent", pl.col("n_tokens").alias("exact"))
        ipw = mine.filter(pl.col("estimator") == "ipw").select("latent", "n_tokens")
        assert ipw.height >= 0.8 * exact.height > 0, explainer  # absent only where a stratum had no pick
        # the weights of a latent's score windows add up to its held-out tokens, exactly the exact row's count
        both = exact.join(ipw, on="latent")
        assert (both["n_tokens"] == both["exact"]).all(), explainer


@pytest.mark.integration
def test_score_examples_carry_weights_and_explain_examples_do_not(tiny_run):
    cfg, _ = tiny_run
    examples = Store(cfg.store).read("examples")
    assert examples.filter(pl.col("split") == "explain")["weight"].is_null().all()
    score = examples.filter(pl.col("split") == "score")
    assert score["weight"].null_count() < 0.2 * score.height
    assert (score.filter(pl.col("kind") == "similar")["weight"].drop_nulls() >= 1.0).all()  # neighbours 1, trigger >= 1
    assert (score.filter(pl.col("kind") != "similar")["weight"].drop_nulls() >= 1.0).all()  # N >= taken


@pytest.mark.integration
def test_reports_and_summary_headline_the_exact_natural_rows(tiny_run):
    cfg, summary = tiny_run
    store = Store(cfg.store)
    data = load_report_data(store, summary["sae_id"])
    headline = [r for rows in data.scores.values() for r in rows if r["explainer"] == "n2g"]
    assert headline and all((r["population"], r["estimator"]) == ("natural", "exact") for r in headline)
    table = score_summary(store, summary["sae_id"], summary["score_keys"])
    natural = table.filter(pl.col("population") == "natural")
    assert set(natural["estimator"]) == {"exact"} and natural.height == 4  # one row per explainer
    assert "natural (exact)" in format_summary(table) and "natural (ipw)" not in format_summary(table)


def _row(latent: int, explainer: str, population: str, estimator: str, precision: float) -> dict:
    """A full `scores` row (run-1, score-1) with the given identity and precision."""
    values = {"sae_id": "sae", "latent": latent, "explainer": explainer, "scorer": "simulation",
              "precision": precision, "recall": 0.5, "f1": 0.5, "auroc": 0.5, "correlation": 0.5, "threshold": 0.0,
              "n_tokens": 10, "n_positive": 2, "run_id": "run-1", "balanced_accuracy": math.nan,
              "score_key": f"{explainer}-{estimator}", "population": population, "mode": "patterns",
              "estimator": estimator, "decile_recall": [0.5] * 10}
    return {name: values.get(name, math.nan) for name in table_schema("scores").names}


def test_the_summary_shows_ipw_where_an_explainer_has_no_exact_rows(tmp_path):
    store = Store(tmp_path)
    rows = [_row(latent, "llm", "sampled", "sample", 0.9) for latent in range(3)]
    rows += [_row(latent, "llm", "natural", "ipw", 0.4) for latent in range(3)]
    rows += [_row(latent, "n2g", "natural", "ipw", 0.1) for latent in range(3)]
    rows += [_row(latent, "n2g", "natural", "exact", 0.3) for latent in range(2)]
    store.append("scores", pl.DataFrame(rows))
    table = score_summary(store, "sae")
    got = {(r["population"], r["explainer"]): (r["estimator"], r["precision"], r["latents"])
           for r in table.iter_rows(named=True)}
    assert got == {("natural", "llm"): ("ipw", 0.4, 3), ("natural", "n2g"): ("exact", 0.3, 2),
                   ("sampled", "llm"): ("sample", 0.9, 3)}
    text = format_summary(table)
    assert "natural (ipw)" in text and "natural (exact)" in text
    # the per-latent headline: exact where there is one, else ipw, else sampled
    data = load_report_data(store, "sae")
    headline = {key[1]: {r["explainer"]: r["estimator"] for r in rows} for key, rows in data.scores.items()}
    assert headline == {0: {"llm": "ipw", "n2g": "exact"}, 1: {"llm": "ipw", "n2g": "exact"},
                        2: {"llm": "ipw", "n2g": "ipw"}}
