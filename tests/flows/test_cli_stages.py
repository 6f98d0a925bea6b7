"""The stage commands (encode, sample, explain, score, report), status, and the vocabulary they share with run.

Pipeline tests work on a copy of the session's `tiny_run` store, with the flags that give its settings,
so each command finds (or misses) exactly the inputs that run left behind.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import polars as pl
import pytest

from flows.cli.flags import run_config
from flows.cli.main import build_parser, main
from flows.cli.stages import STAGES, resolve_inputs
from flows.store import Store

SAE_FLAGS = ["--n-latents", "512", "--k", "16", "--dead-tokens", "20000", "--train-tokens", "40000",
             "--train-batch-size", "1024"]
TINY_FLAGS = ["--max-contexts", "160", "--layer", "2", *SAE_FLAGS, "--max-latents", "60"]
"""tests/conftest.py::TINY_RUN as flags (test_tiny_flags_are_the_tiny_run checks it)."""
COMMANDS = ("run", *STAGES, "train-sae", "status", "serve", "deploy")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def store(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run's store."""
    copy = tmp_path / "store"
    shutil.copytree(tiny_run[0].store, copy)
    return copy


def test_every_command_has_help_and_takes_verbose_after_its_name(capsys):
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "--verbose" in text
        if command in ("run", *STAGES):
            assert "--latents" in text and "ids and ranges" in text, command
    assert parser.parse_args(["explain", "-v"]).verbose and parser.parse_args(["-v", "explain"]).verbose
    assert not parser.parse_args(["explain"]).verbose


def test_train_sae_and_run_share_flags_and_defaults():
    """One vocabulary: the SAE and training settings are the same flags, with the same defaults."""
    parser = build_parser()
    train = parser.parse_args(["train-sae", "--activations", "a.npy", "--out", "o"])
    run = parser.parse_args(["run"])
    assert run_config(train).model_dump(exclude={"store"}) == run_config(run).model_dump(exclude={"store"})
    flags = ["--n-latents", "64", "--k", "4", "--train-tokens", "1000", "--dead-tokens", "500", "--device", "cpu"]
    train = run_config(parser.parse_args(["train-sae", "--activations", "a.npy", "--out", "o", *flags]))
    assert (train.sae.n_latents, train.sae.k, train.train.tokens, train.sae.dead_tokens, train.device) == (
        64, 4, 1000, 500, "cpu")


@pytest.mark.parametrize("command", ["sample", "explain", "score", "report", "status"])
def test_a_missing_store_is_an_error_and_is_not_created(command, tmp_path, capsys):
    typo = tmp_path / "typo"
    assert main([command, "--store", str(typo)]) == 2
    assert f"--store {typo}: no such store" in one_line_error(capsys)
    assert not typo.exists()


@pytest.mark.parametrize("command", ["run", "explain"])
def test_a_bad_latents_spec_is_a_one_line_error(command, tmp_path, capsys):
    assert main([command, "--store", str(tmp_path), "--latents", "9-2"]) == 2
    err = one_line_error(capsys)
    assert "--latents" in err and "bad latent selection '9-2'" in err


def test_report_of_a_directory_without_saes_writes_nothing(tmp_path, capsys):
    assert main(["report", "--store", str(tmp_path), "--sae-id", "all"]) == 2
    assert "no SAE in store" in one_line_error(capsys)
    assert not any(tmp_path.iterdir())


def test_dry_run_only_where_an_llm_is_called(tmp_path, capsys):
    assert main(["sample", "--store", str(tmp_path), "--dry-run"]) == 2
    assert "--dry-run applies to" in one_line_error(capsys)


@pytest.mark.integration
def test_tiny_flags_are_the_tiny_run(tiny_run):
    cfg, summary = tiny_run
    args = build_parser().parse_args(["sample", "--store", cfg.store, *TINY_FLAGS])
    assert run_config(args) == cfg
    data, sid = resolve_inputs(cfg)  # from the store and the settings, without loading the model
    assert sid == summary["sae_id"] and asdict(data) == summary["data"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "argv, message, make",
    [
        (["explain", "--sampling-window", "16"], "no examples for SAE {sid} under sample key ", "sample"),
        (["score", "--n2g-max-n", "2"], "no n2g explanations for SAE {sid} under explain key ", "explain"),
        (["sample", "--stats-min-contexts", "7"], "no latent statistics for SAE {sid} under stats key ", "encode"),
        (["sample", "--n-latents", "256"], "no SAE bert-L2-n256-k16-", "encode"),
        (["explain", "--ctx-len", "32"], "no contexts for dataset pydoc-topics-", "encode"),
        (["report", "--sae-id", "nope"], "no SAE nope in store", "encode"),
    ],
)
def test_missing_inputs_name_the_command_that_makes_them(argv, message, make, tiny_run, store, capsys):
    sid = tiny_run[1]["sae_id"]
    assert main([argv[0], "--store", str(store), *TINY_FLAGS, *argv[1:]]) == 2
    err = one_line_error(capsys)
    assert message.format(sid=sid) in err, err
    assert f"run `latent-atlas {make}` (or run) with the same flags first" in err


@pytest.mark.integration
def test_encode_on_an_existing_store_finds_its_sae(tiny_run, store, capsys):
    assert main(["encode", "--store", str(store), *TINY_FLAGS]) == 0
    assert f"SAE {tiny_run[1]['sae_id']}: 512 latents" in capsys.readouterr().out


@pytest.mark.integration
def test_sample_draws_examples_under_a_new_sample_key(tiny_run, store, capsys):
    sid = tiny_run[1]["sae_id"]
    before = Store(store).read("examples")["sample_key"].unique().to_list()
    assert main(["sample", "--store", str(store), *TINY_FLAGS, "--sampling-window", "16"]) == 0
    assert "examples drawn for 60 latents now, 60 in all" in capsys.readouterr().out
    examples = Store(store).read("examples").filter(~pl.col("sample_key").is_in(before))
    assert examples["sae_id"].unique().to_list() == [sid] and examples["latent"].n_unique() == 60


@pytest.mark.integration
def test_explain_then_score_exactly_the_selected_latents(tiny_run, store, capsys):
    """`--latents 0-9,20` under a new explain key (--n2g-max-n 2): those ok latents and no other."""
    sid = tiny_run[1]["sae_id"]
    flags = ["--store", str(store), *TINY_FLAGS, "--n2g-max-n", "2", "--latents", "0-9,20"]
    stats = Store(store).read("latent_stats").filter((pl.col("sae_id") == sid) & (pl.col("status") == "ok"))
    wanted = sorted(set(stats["latent"].to_list()) & {*range(10), 20})
    assert wanted
    known = set(Store(store).read("explanations")["explain_key"].unique().to_list())
    assert main(["explain", *flags]) == 0
    assert f"{len(wanted)} selected latents explained by n2g" in capsys.readouterr().out
    explanations = Store(store).read("explanations").filter(~pl.col("explain_key").is_in(known))
    assert sorted(explanations["latent"].to_list()) == wanted

    assert main(["score", *flags]) == 0
    assert "natural (exact)" in capsys.readouterr().out
    runs = Store(store).read("runs").sort("started_at")
    assert runs["flow"].to_list()[-2:] == ["explain", "score"] and set(runs["status"].to_list()) == {"ok"}
    keys = json.loads(runs["keys"][-1])
    scores = Store(store).read("scores").filter(pl.col("score_key").is_in(keys["score_keys"])
                                                 & (pl.col("explainer") == "n2g"))
    ok = explanations.filter(pl.col("status") == "ok")["latent"].to_list()
    assert set(scores["latent"].to_list()) == set(ok)
    assert json.loads(runs["inputs"][-1])["sae_id"] == sid


@pytest.mark.integration
def test_report_and_status_of_a_store(tiny_run, store, capsys):
    assert main(["report", "--store", str(store), *TINY_FLAGS]) == 0
    assert "dashboard:" in capsys.readouterr().out and (store / "reports" / "index.html").exists()
    assert main(["report", "--store", str(store), "--sae-id", "all"]) == 0
    assert main(["status", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "runs: " in out and "estimator" in out and tiny_run[1]["sae_id"] in out


@pytest.mark.integration
def test_train_sae_on_a_stores_activations_is_the_runs_sae(tiny_run, tmp_path, capsys):
    """run's SAE and training flags, on run's activation file: run's SAE, which records model and layer."""
    import torch

    from sae.formats import load_sae, load_sae_metadata

    cfg, summary = tiny_run
    data = summary["data"]
    out = tmp_path / "sae"
    assert main(["train-sae", "--activations", data["activations_path"], "--out", str(out), *SAE_FLAGS]) == 0
    assert "(model all-MiniLM-L6-v2, layer 2)" in capsys.readouterr().out
    meta = load_sae_metadata(out)["metadata"]
    assert (meta["model"], meta["layer"], meta["dataset_id"]) == ("all-MiniLM-L6-v2", 2, data["dataset_id"])
    assert meta["model_fingerprint"] == data["model_fingerprint"]
    ours, runs = load_sae(out), load_sae(Store(cfg.store).sae_dir(summary["sae_id"]))
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(ours, name), getattr(runs, name), atol=1e-5, rtol=1e-4)
