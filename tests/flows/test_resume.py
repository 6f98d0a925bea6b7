"""A run that dies mid-stage keeps what it finished, and the rerun completes it without duplicates."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from flows.stages import score as score_stages
from flows.store import Store

pytestmark = pytest.mark.integration


def _fresh_scores(tiny_run, tmp_path):  # noqa: ANN001
    cfg, _ = tiny_run
    shutil.copytree(cfg.store, tmp_path / "store")
    for table in ("scores", "simulations"):
        shutil.rmtree(tmp_path / "store" / table)
    cfg = cfg.model_copy(update={"store": str(tmp_path / "store"), "chunk_latents": 16})
    store = Store(cfg.store)
    expected = store.read("explanations").filter(pl.col("status") == "ok").select("latent", "explainer").unique()
    return cfg, store, expected


def _assert_scored_once(store: Store, expected: pl.DataFrame) -> None:
    scores = store.read("scores")
    assert scores.group_by("latent", "explainer", "scorer", "population", "estimator").len()["len"].max() == 1
    assert scores.select("latent", "explainer").unique().sort(["explainer", "latent"]).equals(
        expected.sort(["explainer", "latent"]))
    sims = store.read("simulations")
    assert sims.group_by("latent", "explainer", "ctx_id").len()["len"].max() == 1


def _crash_on(calls_that_fail: set[int], monkeypatch):  # noqa: ANN001
    """Make the score stage's chunk writer raise on those calls (1-based); returns the call log: per call,
    the population of its scorer and how many latents it scored (None for a call that crashed)."""
    real, calls = score_stages._score_chunk, []

    def crashing(scorer, *args, **kwargs):  # noqa: ANN001, ANN202
        population = getattr(scorer, "population", "sampled")
        if len(calls) + 1 in calls_that_fail:
            calls.append((population, None))
            raise RuntimeError("machine lost")
        calls.append((population, real(scorer, *args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(score_stages, "_score_chunk", crashing)
    return calls


def test_a_transient_task_failure_is_retried_and_the_run_completes(tiny_run, tmp_path, monkeypatch):
    import flows.pipeline as pipeline_module

    cfg, store, expected = _fresh_scores(tiny_run, tmp_path)
    monkeypatch.setattr(pipeline_module, "score_latents",
                        pipeline_module.score_latents.with_options(retry_delay_seconds=0))
    calls = _crash_on({3}, monkeypatch)
    pipeline_module.pipeline(cfg)
    n_chunks = sum(-(-n // 16) for n in expected.group_by("explainer").len()["len"].to_list()) * 2  # 2 scorers
    assert len(calls) == n_chunks + 1  # the failed chunk ran once more
    assert store.read("runs").sort("started_at")["status"].to_list()[-1] == "ok"
    _assert_scored_once(store, expected)


def test_crash_in_scoring_then_rerun_scores_every_latent_once(tiny_run, tmp_path, monkeypatch):
    import flows.pipeline as pipeline_module

    cfg, store, expected = _fresh_scores(tiny_run, tmp_path)
    monkeypatch.setattr(pipeline_module, "score_latents", pipeline_module.score_latents.with_options(retries=0))
    real = score_stages._score_chunk
    calls = _crash_on({3}, monkeypatch)
    with pytest.raises(RuntimeError, match="machine lost"):
        pipeline_module.pipeline(cfg)
    kept = store.read("scores")
    finished = sum(n for population, n in calls if n is not None and population == "sampled")
    assert len(calls) >= 3 and finished > 0
    # every chunk that finished before the crash is in the store, one sampled row per latent it scored
    assert kept.filter(pl.col("population") == "sampled").height == finished
    assert store.read("runs").sort("started_at")["status"].to_list()[-1] == "failed"

    monkeypatch.setattr(score_stages, "_score_chunk", real)
    pipeline_module.pipeline(cfg)
    _assert_scored_once(store, expected)
