"""The whole pipeline flow end to end on a tiny config, under one Prefect test server.

Real model (the embedded MiniLM), real corpus (a slice of pydoc topics), a small SAE trained briefly.
Checks the store contract: all tables, every scored latent has its explanation and simulation rows,
precision/recall/F1 recomputed from `simulations` with scikit-learn equal `scores`, splits disjoint,
and a rerun resumes instead of redoing work.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from flows.store import Store
from flows.store.ids import ctx_id_base

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def finished_run(tiny_run):
    return tiny_run


def test_every_table_is_written(finished_run):
    cfg, _ = finished_run
    store = Store(cfg.store)
    for table in ("runs", "contexts", "latent_stats", "latent_acts", "examples", "explanations",
                  "simulations", "scores", "llm_calls"):
        assert store.has(table), table
    assert store.read("llm_calls").is_empty() and "request_hash" in store.read("llm_calls").columns
    runs = store.read("runs")
    assert runs["status"].to_list() == ["ok"]
    assert json.loads(runs["config"][0])["sae"]["n_latents"] == 512
    inputs = json.loads(runs["inputs"][0])
    assert inputs["sae_id"] == finished_run[1]["sae_id"] and len(inputs["model_fingerprint"]) == 64
    assert set(json.loads(runs["keys"][0])) == {"stats_key", "sample_key", "explain_keys", "score_keys"}


def test_scored_latents_have_explanations_and_simulations(finished_run):
    cfg, summary = finished_run
    store = Store(cfg.store)
    scores = store.read("scores")
    assert scores.filter(pl.col("explainer") == "n2g").height >= 20
    keys = ["sae_id", "latent", "explainer"]
    missing = scores.select(keys).join(store.read("explanations").select(keys), on=keys, how="anti")
    assert missing.is_empty()
    sims = store.read("simulations").select(keys).unique()
    assert scores.select(keys).join(sims, on=keys, how="anti").is_empty()
    assert summary["sae_id"] in set(scores["sae_id"])


def test_scores_recompute_from_simulations(finished_run):
    cfg, _ = finished_run
    store = Store(cfg.store)
    sims = store.read("simulations")
    sampled = store.read("scores").filter(pl.col("population") == "sampled")  # natural rows: see test_natural
    for row in sampled.head(40).iter_rows(named=True):
        mine = sims.filter((pl.col("latent") == row["latent"]) & (pl.col("explainer") == row["explainer"])
                           & (pl.col("scorer") == row["scorer"]))
        y_true = np.concatenate(mine["true_acts"].to_list()) > 0
        y_pred = np.concatenate(mine["sim_acts"].to_list()) > row["threshold"]
        assert precision_score(y_true, y_pred, zero_division=0) == pytest.approx(row["precision"])
        assert recall_score(y_true, y_pred, zero_division=0) == pytest.approx(row["recall"])
        assert f1_score(y_true, y_pred, zero_division=0) == pytest.approx(row["f1"])


def test_explain_and_score_examples_share_no_context(finished_run):
    cfg, _ = finished_run
    examples = Store(cfg.store).read("examples")
    by_split = examples.group_by("latent", "split").agg(pl.col("ctx_id").unique())
    explain = by_split.filter(pl.col("split") == "explain").select("latent", pl.col("ctx_id").alias("e"))
    score = by_split.filter(pl.col("split") == "score").select("latent", pl.col("ctx_id").alias("s"))
    both = explain.join(score, on="latent")
    assert both.height > 0
    for e, s in zip(both["e"].to_list(), both["s"].to_list(), strict=True):
        assert not set(e) & set(s)


def test_every_scored_latent_has_sampled_and_natural_rows_for_the_explainer_and_each_baseline(finished_run):
    cfg, _ = finished_run
    scores = Store(cfg.store).read("scores")
    n2g = set(scores.filter(pl.col("explainer") == "n2g")["latent"])
    for explainer in ("n2g", "n2g-random", "top-token", "always-on"):
        for population, estimator in (("sampled", "sample"), ("natural", "exact")):  # ipw: test_ipw_rows.py
            rows = scores.filter((pl.col("explainer") == explainer) & (pl.col("population") == population)
                                 & (pl.col("estimator") == estimator))
            assert set(rows["latent"]) == n2g and rows.height == len(n2g), (explainer, population)
    always = scores.filter(pl.col("explainer") == "always-on")
    assert always["recall"].min() == 1.0  # predicts every token


def test_real_explanations_beat_the_random_baseline(finished_run):
    cfg, _ = finished_run
    scores = Store(cfg.store).read("scores")
    med = scores.group_by("explainer").agg(pl.col("f1").median())
    f1 = dict(zip(med["explainer"], med["f1"], strict=True))
    assert f1["n2g"] > f1["n2g-random"] + 0.1


def test_rerun_resumes_without_redoing_work(finished_run, tmp_path):
    """On a copy of the session's store: the shared store stays as the first run left it."""
    import shutil

    from flows.pipeline import pipeline

    cfg, _ = finished_run
    shutil.copytree(cfg.store, tmp_path / "store")
    cfg = cfg.model_copy(update={"store": str(tmp_path / "store")})
    store = Store(cfg.store)
    before = {t: len(store.parts(t)) for t in ("explanations", "scores", "simulations", "examples")}
    pipeline(cfg)
    after = {t: len(store.parts(t)) for t in before}
    assert after == before
    assert store.read("runs")["status"].to_list() == ["ok", "ok"]


def test_reports_are_written(finished_run):
    cfg, summary = finished_run
    index = Store(cfg.store).reports_dir() / "index.html"
    assert index.exists()
    assert summary["sae_id"] in index.read_text()


def test_streaming_run_on_a_second_corpus_in_the_same_store(tiny_run, tmp_path):
    """`--stream-activations` trains and encodes straight from the model (no new .npy); a second
    dataset in a store gets its own context ids (its prefix, then the index), so ctx_id names one context."""
    import shutil

    from flows.pipeline import pipeline

    cfg, summary = tiny_run
    shutil.copytree(cfg.store, tmp_path / "store")
    npy_before = sorted((tmp_path / "store").rglob("*.npy"))
    data = cfg.data.model_copy(update={"stream_activations": True, "max_contexts": 120})
    second = cfg.model_copy(update={"store": str(tmp_path / "store"), "data": data, "max_latents": 20})
    result = pipeline(second)
    store = Store(second.store)
    assert result["sae_id"] != summary["sae_id"]
    assert sorted((tmp_path / "store").rglob("*.npy")) == npy_before
    contexts = store.read("contexts")
    first_ids = set(contexts.filter(pl.col("dataset_id") == summary["data"]["dataset_id"])["ctx_id"])
    second_ids = set(contexts.filter(pl.col("dataset_id") == result["data"]["dataset_id"])["ctx_id"])
    base = ctx_id_base(result["data"]["dataset_id"])
    assert len(second_ids) == 120 and not second_ids & first_ids
    assert sorted(second_ids) == list(range(base, base + 120))
    mine = store.read("examples").filter(pl.col("sae_id") == result["sae_id"])
    assert set(mine["ctx_id"]) <= second_ids
    assert store.read("scores").filter((pl.col("sae_id") == result["sae_id"])
                                       & (pl.col("explainer") == "n2g")).height >= 15


def test_natural_rows_equal_a_brute_force_count_over_the_stores_held_out_tokens(finished_run):
    """Recomputed from the store alone: the corpus, the latent cache and the stored patterns."""
    from explain.explainers.n2g import match_patterns
    from explain.sampling.keys import split_of

    cfg, summary = finished_run
    store = Store(cfg.store)
    contexts = store.read("contexts").filter(pl.col("dataset_id") == summary["data"]["dataset_id"]).sort("ctx_id")
    ctx_ids, tokens = contexts["ctx_id"].to_numpy(), contexts["tokens"].to_list()
    natural = store.read("scores").filter((pl.col("estimator") == "exact") & (pl.col("explainer") == "n2g"))
    explanations = store.read("explanations").filter(pl.col("explainer") == "n2g")
    acts = pl.read_parquet(store.table_dir("latent_acts") / summary["sae_id"])
    examples = store.read("examples").filter(pl.col("split") == "explain")
    for row in natural.sort("latent").head(6).iter_rows(named=True):
        latent = row["latent"]
        held = split_of(cfg.seed, np.full(len(ctx_ids), latent), ctx_ids, cfg.sampling.explain_fraction) == "score"
        shown = set(examples.filter(pl.col("latent") == latent)["ctx_id"])
        assert not shown & set(ctx_ids[held])  # the explainer never saw a held-out context
        patterns = json.loads(explanations.filter(pl.col("latent") == latent)["patterns"][0])
        pred = np.concatenate([match_patterns(patterns, tokens[r]) for r in np.nonzero(held)[0]]) > 0
        truth = np.zeros((len(ctx_ids), len(tokens[0])), dtype=bool)
        mine = acts.filter(pl.col("latent") == latent)
        truth[np.searchsorted(ctx_ids, mine["ctx_id"].to_numpy()), mine["pos"].to_numpy()] = True
        y = truth[held].ravel()
        assert row["n_tokens"] == y.size and row["n_positive"] == int(y.sum())
        assert row["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
        assert row["recall"] == pytest.approx(recall_score(y, pred, zero_division=0))
