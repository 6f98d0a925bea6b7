"""`latent-atlas sweep` on a planted activation file: a grid of SAEs as Prefect tasks, sae_metrics, sae_fits, plot."""

import json

import polars as pl
import pytest
from fixtures.planted_dictionary import PlantedDictionary

from flows.store import Store


@pytest.fixture
def planted_file(tmp_path):
    path = tmp_path / "planted.npy"
    PlantedDictionary(d=16, n_atoms=64, active=3, seed=0).save(path, 12_000)
    return path


def test_sweep_trains_the_grid_fits_and_plots(prefect_server, planted_file, tmp_path, capsys):
    from flows.cli.main import main

    store = tmp_path / "store"
    args = ["sweep", "--activations", str(planted_file), "--n-latents", "32,64,128", "--k", "2,4",
            "--train-tokens", "30000", "--train-batch-size", "500", "--store", str(store)]
    assert main(args) == 0
    out = capsys.readouterr().out
    metrics = Store(store).read("sae_metrics")
    assert metrics.height == 6 and sorted(zip(metrics["n_latents"], metrics["k"], strict=True)) == [
        (n, k) for n in (32, 64, 128) for k in (2, 4)]
    assert metrics["fvu_heldout"].is_between(0, 1).all() and (metrics["heldout_tokens"] == 1200).all()
    assert (metrics["tokens"] == 30000).all() and (~metrics["fvu_above_one"]).all()
    fits = Store(store).read("sae_fits")
    assert sorted(fits["fit"]) == ["frontier", "joint_nk"]
    joint = json.loads(fits.filter(pl.col("fit") == "joint_nk")["coefficients"][0])
    assert set(joint) == {"alpha", "beta_k", "beta_n", "gamma", "zeta", "eta"}
    plot = store / fits["plot"][0]
    assert plot.exists() and "plotly" in plot.read_text()[:100_000]
    assert "joint_nk" in out and "frontier" in out
    # a rerun trains and evaluates nothing again: the same SAEs, no new metrics rows
    assert main(args) == 0
    assert Store(store).read("sae_metrics").height == 6


def test_an_sae_worse_than_the_mean_is_flagged_in_metrics_and_summary(planted_file, tmp_path):
    import torch

    from flows.config import RunConfig
    from flows.reports.summary import fvu_warning
    from flows.stages.sae_metrics import evaluate_sae
    from flows.sweep import file_data_ref
    from sae.config import SAEConfig
    from sae.formats import save_sae
    from sae.model import TopKSAE

    store = Store(tmp_path / "store")
    sae = TopKSAE(SAEConfig(d_in=16, n_latents=32, k=2, normalize_activations="none"))
    with torch.no_grad():
        sae.b_dec.fill_(10.0)  # a constant offset far from the data: FVU >> 1
    save_sae(sae, store.sae_dir("bad"))
    cfg = RunConfig(store=str(store.root))
    row = evaluate_sae(cfg, file_data_ref(planted_file), "bad")
    assert row["fvu_heldout"] > 1 and row["fvu_above_one"] and row["heldout_rows"] == "10800-12000"
    assert row["tokens"] is None and "bare activation file" in row["notes"]  # loaded: no training stats
    assert "reconstructs worse than predicting the mean" in fvu_warning(store, "bad")
    assert fvu_warning(store, "other") == ""
