"""A run that dies mid-stage keeps what it finished, and the rerun completes it without duplicates."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from flows.stages import score as score_stages
from flows.store import Store

pytestmark = pytest.mark.integration


def test_crash_in_scoring_then_rerun_scores_every_latent_once(tiny_run, tmp_path, monkeypatch):
    from flows.pipeline import pipeline

    cfg, _ = tiny_run
    shutil.copytree(cfg.store, tmp_path / "store")
    for table in ("scores", "simulations"):
        shutil.rmtree(tmp_path / "store" / table)
    cfg = cfg.model_copy(update={"store": str(tmp_path / "store")})
    store = Store(cfg.store)
    expected = store.read("explanations").filter(pl.col("status") == "ok").select("latent", "explainer").unique()

    real_score_chunk, calls = score_stages._score_chunk, []

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("machine lost")
        return real_score_chunk(*args, **kwargs)

    monkeypatch.setattr(score_stages, "CHUNK_LATENTS", 16)
    monkeypatch.setattr(score_stages, "_score_chunk", dies_on_third_chunk)
    with pytest.raises(RuntimeError, match="machine lost"):
        pipeline(cfg)
    kept = store.read("scores")
    assert kept.height == 32  # the two finished chunks are in the store
    assert store.read("runs").sort("started_at")["status"].to_list()[-1] == "failed"

    monkeypatch.setattr(score_stages, "_score_chunk", real_score_chunk)
    pipeline(cfg)
    scores = store.read("scores")
    assert scores.group_by("latent", "explainer", "scorer", "population").len()["len"].max() == 1
    assert scores.select("latent", "explainer").unique().sort(["explainer", "latent"]).equals(
        expected.sort(["explainer", "latent"]))
    sims = store.read("simulations")
    assert sims.group_by("latent", "explainer", "ctx_id").len()["len"].max() == 1
