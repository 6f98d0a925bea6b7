"""The `latent-atlas` command line: train-sae from a file, run --sae, and one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import torch

from flows.cli.main import build_parser, main
from flows.store import Store


def test_every_command_has_help(capsys):
    parser = build_parser()
    for command in ("run", "train-sae", "report", "encode", "sample", "explain", "score", "status"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, "--help"])
        assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--n-latents" in text and "Active latents per token" in text
    assert "--activations" in text and "--out" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--corpus", "missing.jsonl"], "--corpus missing.jsonl: no such file"),
        (["run", "--layer", "17"], "--layer 17 is out of range"),
        (["run", "--k", "0"], "--k"),
        (["run", "--scorer", "vibes"], "unknown scorer 'vibes'"),
        (["run", "--explainer", "llm"], "needs an LLM: pass --llm-model"),
        (["train-sae", "--activations", "nope.npy", "--n-latents", "8", "--k", "2", "--out", "x"], "nope.npy"),
    ],
)
def test_user_mistakes_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_train_sae_from_an_activation_file(tmp_path, capsys):
    """A planted 2-sparse dictionary in a .npy file: the trained SAE reconstructs it well."""
    from sae.formats import load_sae, load_sae_metadata
    from sae.metrics import fvu

    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((64, 32)).astype(np.float32)
    codes = np.zeros((20_000, 64), dtype=np.float32)
    for row in codes:
        row[rng.choice(64, 2, replace=False)] = rng.uniform(1, 3, 2)
    np.save(tmp_path / "acts.npy", codes @ atoms)
    out = tmp_path / "sae"
    argv = ["train-sae", "--activations", str(tmp_path / "acts.npy"), "--n-latents", "128", "--k", "4",
            "--train-tokens", "200000", "--train-batch-size", "512", "--normalize-activations", "none", "--device",
            "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert "saved SAE" in capsys.readouterr().out
    assert "layer" not in load_sae_metadata(out)["metadata"]  # a file outside a store: no model or layer known
    sae = load_sae(out)
    x = torch.from_numpy((codes @ atoms)[:2000])
    x_hat = sae.decode(*sae.encode(x))
    assert sae.cfg.n_latents == 128 and sae.cfg.k == 4
    assert fvu(x, x_hat) < 0.1


@pytest.mark.integration
def test_run_with_an_existing_sae(tiny_run, tmp_path):
    """`run --sae DIR` explains a given SAE instead of training one."""
    cfg, summary = tiny_run
    store = tmp_path / "store"
    shutil.copytree(cfg.store, store)
    given = tmp_path / "given_sae"
    shutil.copytree(Store(store).sae_dir(summary["sae_id"]), given)
    argv = ["run", "--store", str(store), "--max-contexts", "160", "--layer", "2", "--max-latents", "10",
            "--sae", str(given)]
    assert main(argv) == 0
    scores = Store(store).read("scores")
    loaded = [s for s in scores["sae_id"].unique() if s != summary["sae_id"]]
    assert len(loaded) == 1 and loaded[0].startswith("loaded-bert-L2-")  # named by content, not by its path
    ours = scores.filter((pl.col("sae_id") == loaded[0]) & (pl.col("explainer") == "n2g")
                         & (pl.col("population") == "natural") & (pl.col("estimator") == "exact"))
    assert ours.height == 10
