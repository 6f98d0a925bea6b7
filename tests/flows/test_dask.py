"""Explain and score fanned out over a 2-worker Dask LocalCluster give the same tables as one process."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from flows.store import Store

pytestmark = pytest.mark.integration

VOLATILE = ["run_id", "created_at"]
"""Columns that name the run or the moment, not the result."""


def _table(store: Store, table: str, keys: list[str]) -> pl.DataFrame:
    frame = store.read(table)
    return frame.drop([c for c in VOLATILE if c in frame.columns]).sort(keys)


def test_two_dask_workers_give_the_same_explanations_and_scores(tiny_run, tmp_path):
    from flows.pipeline import pipeline

    cfg, summary = tiny_run
    root = tmp_path / "store"
    shutil.copytree(cfg.store, root)
    for table in ("explanations", "scores", "simulations", "runs"):
        shutil.rmtree(root / table, ignore_errors=True)
    parallel = cfg.model_copy(update={"store": str(root), "workers": 2})
    result = pipeline(parallel)
    assert result["sae_id"] == summary["sae_id"]
    one, two = Store(cfg.store), Store(root)
    keys = {"explanations": ["explainer", "latent"],
            "scores": ["explainer", "scorer", "population", "estimator", "latent"],
            "simulations": ["explainer", "scorer", "latent", "ctx_id"]}
    for table, key in keys.items():
        key = [k for k in key if k in one.read(table).columns]
        expected, got = _table(one, table, key), _table(two, table, key)
        assert got.height == expected.height > 0, table
        assert got.equals(expected), table
