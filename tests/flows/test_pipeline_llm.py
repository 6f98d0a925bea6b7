"""`latent-atlas run --explainer llm` end to end against the local fake OpenAI-compatible server.

Starts from a copy of the tiny N2G run's store (so data, SAE and examples are reused), explains with
the LLM, scores with simulation, detection and fuzzing, and checks: every selected latent ends with an
explanation row, ok ones are scored, calls are logged, a rerun makes zero requests, a dry run sends
nothing, and the API key appears in no table, report or log.
"""

from __future__ import annotations

import io
import logging
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import polars as pl
import pytest
from fixtures.llm_server import LLMTestServer

from flows.cli.main import main
from flows.store import Store

pytestmark = pytest.mark.integration

SECRET = "sk-test-SENTINEL-do-not-leak-1234"


def _args(store: Path, base_url: str, *extra: str) -> list[str]:
    return ["run", "--store", str(store), "--max-contexts", "160", "--n-latents", "512", "--k", "16",
            "--train-tokens", "40000", "--train-batch-size", "1024", "--layer", "2", "--max-latents", "24",
            "--dead-tokens", "20000", "--explainer", "llm", "--llm-model", "fake-model", "--llm-base-url",
            base_url, "--llm-api-key-env", "ATLAS_TEST_KEY", "--scorer", "simulation,detection,fuzzing", *extra]


class _AllRecords(logging.Handler):
    """Every log record of the run, formatted, at DEBUG level (what any log sink could receive)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def llm_run(tiny_run, tmp_path_factory):
    cfg, _ = tiny_run
    store = tmp_path_factory.mktemp("llm") / "store"
    shutil.copytree(cfg.store, store)
    mp = pytest.MonkeyPatch()
    mp.setenv("ATLAS_TEST_KEY", SECRET)
    records, root = _AllRecords(), logging.getLogger()
    old_level = root.level
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    out = io.StringIO()
    try:
        with LLMTestServer() as server, redirect_stdout(out), redirect_stderr(out):
            server.add_fault("429", times=2)
            server.add_fault("prose", task="explain", times=1)
            assert main(_args(store, server.base_url, "--dry-run")) == 0
            dry_requests = server.state.total
            assert main(_args(store, server.base_url)) == 0
            first = server.state.total
            assert main(_args(store, server.base_url)) == 0
            second = server.state.total
    finally:
        root.removeHandler(records)
        root.setLevel(old_level)
        mp.undo()
    return store, dry_requests, first, second, "\n".join(records.lines) + out.getvalue()


def test_dry_run_sends_nothing(llm_run):
    _, dry, _, _, output = llm_run
    assert dry == 0
    assert "dry run: 24 latents" in output


def test_every_selected_latent_has_an_llm_explanation_row(llm_run):
    store = Store(llm_run[0])
    expl = store.read("explanations").filter(pl.col("explainer") == "llm")
    assert expl["latent"].n_unique() == 24
    assert set(expl["status"]) <= {"ok", "failed"}
    assert (expl["status"] == "ok").sum() >= 20


def test_ok_explanations_are_scored_by_every_scorer(llm_run):
    store = Store(llm_run[0])
    ok = set(store.read("explanations").filter((pl.col("explainer") == "llm") & (pl.col("status") == "ok"))
             ["latent"])
    scores = store.read("scores").filter(pl.col("explainer") == "llm")
    for scorer in ("simulation", "detection", "fuzzing"):
        assert set(scores.filter(pl.col("scorer") == scorer)["latent"]) == ok, scorer
    assert store.read("scores").filter(pl.col("explainer") == "llm-random").height > 0


def test_calls_are_logged_and_a_rerun_pays_nothing(llm_run):
    store_path, _, first, second, _ = llm_run
    calls = Store(store_path).read("llm_calls")
    assert first > 0 and second == first
    assert calls.filter(pl.col("status") != "cached").height == first
    assert set(calls["purpose"]) >= {"explain", "simulation", "detection", "fuzzing"}


def test_the_api_key_is_written_nowhere(llm_run):
    store_path, *_, output = llm_run
    for path in Path(store_path).rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert "llm" in output and SECRET not in output
