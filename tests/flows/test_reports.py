"""Reports from a tiny hand-made store: files exist, numbers appear, text is escaped, links resolve."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import polars as pl
import pytest

from flows.reports import write_reports
from flows.store import Store

SAE = "sae-tiny"
XSS = "<script>alert(1)</script>"
TOKENS = {
    10: ["the", "cat", "sat", "on", "the", "mat", "##s", "."],
    11: ["a", XSS, "dog", "ran", "home", "fast", "now", "!"],
    20: ["red", "green", "blue", "cat", "x", "y", "z", "w"],
    21: ["one", "two", "three", "four", "five", "six", "seven", "eight"],
}


def _fill(store: Store) -> None:
    store.append("runs", pl.DataFrame([{
        "run_id": "run-1", "flow": "pipeline", "status": "completed", "started_at": datetime(2025, 1, 1, tzinfo=UTC),
        "finished_at": datetime(2025, 1, 1, 0, 10, tzinfo=UTC), "config": "{}", "code_version": "abc",
        "error": "", "config_hash": "abc123", "keys": "{}", "inputs": "{}"}]))
    store.append("contexts", pl.DataFrame({
        "dataset_id": ["d"] * 4, "ctx_id": list(TOKENS), "token_ids": [list(range(8))] * 4,
        "tokens": list(TOKENS.values())}))
    store.append("latent_stats", pl.DataFrame({
        "sae_id": [SAE] * 4, "latent": [0, 1, 2, 3], "n_active": [40, 30, 20, 0], "n_contexts": [4, 3, 2, 0],
        "frequency": [0.0123, 0.01, 0.005, 0.0], "max_act": [4.5, 3.0, 2.0, 0.0],
        "decile_edges": [[0.5] * 11, [0.5] * 11, [0.5] * 11, []], "cooccurring": [[1], [0], [], []],
        "stats_key": ["stats-1"] * 4,
        "mean_act": [1.0, 1.0, 1.0, 0.0], "status": ["ok", "ok", "ok", "dead"],
        "reason": ["", "", "", "never active on the 1000 cached tokens"]}))
    examples = []
    for latent in (0, 1, 2):
        examples += [
            {"sae_id": SAE, "latent": latent, "split": "explain", "kind": "activating", "quantile": 9,
             "ctx_id": 10, "start": 0, "acts": [0.0, 4.5, 0.0, 0.0, 0.0, 1.0]},
            {"sae_id": SAE, "latent": latent, "split": "score", "kind": "activating", "quantile": 5,
             "ctx_id": 11, "start": 1, "acts": [2.0, 0.0, 0.0, 0.0]},
            {"sae_id": SAE, "latent": latent, "split": "score", "kind": "random", "quantile": -1,
             "ctx_id": 21, "start": 2, "acts": [0.0, 0.0, 0.0, 0.0]},
        ]
    store.append("examples", pl.DataFrame(examples).with_columns(pl.lit("sample-1").alias("sample_key"),
                                                                 pl.lit(None, dtype=pl.Float64).alias("weight")))
    patterns = '[{"ngram": ["the", "cat"], "act": 4.0}, {"ngram": ["<b>"], "act": 1.0}]'
    store.append("explanations", pl.DataFrame([
        _explanation(0, "n2g", "the cat <b>bold</b>", patterns=patterns),
        _explanation(1, "n2g", "dog"),
        _explanation(0, "n2g-random", "dog"),
        _explanation(1, "n2g-random", "the cat <b>bold</b>", patterns=patterns),
        _explanation(2, "n2g", "", status="failed", error="no pattern survived pruning"),
    ]))
    store.append("scores", pl.DataFrame([
        _score(0, "n2g", 0.875, 0.625), _score(1, "n2g", 0.5, 0.25),
        _score(0, "n2g-random", 0.0, 0.0), _score(1, "n2g-random", 0.125, 0.0625),
    ]))
    sims = []
    for latent in (0, 1):
        for explainer in ("n2g", "n2g-random"):
            sims += [
                {"sae_id": SAE, "latent": latent, "explainer": explainer, "scorer": "simulation", "ctx_id": 11,
                 "true_acts": [2.0, 0.0, 0.0, 0.0], "sim_acts": [1.0, 0.0, 3.0, 0.0], "score_key": "score-1",
                 "p_active": None},
                {"sae_id": SAE, "latent": latent, "explainer": explainer, "scorer": "simulation", "ctx_id": 21,
                 "true_acts": [0.0, 0.0, 0.0, 0.0], "sim_acts": [0.0, 0.0, 0.0, 0.0], "score_key": "score-1",
                 "p_active": None},
            ]
    store.append("simulations", pl.DataFrame(sims))


def _explanation(latent: int, explainer: str, text: str, status: str = "ok", error: str = "",
                 patterns: str = "") -> dict:
    return {"sae_id": SAE, "latent": latent, "explainer": explainer, "model": "", "prompt_version": "",
            "explanation": text, "status": status, "error": error, "prompt_tokens": 0, "completion_tokens": 0,
            "cost_usd": 0.0, "run_id": "run-1", "created_at": datetime(2025, 1, 1, 0, 5, tzinfo=UTC),
            "patterns": patterns, "explain_key": "explain-1"}


def _score(latent: int, explainer: str, precision: float, recall: float) -> dict:
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"sae_id": SAE, "latent": latent, "explainer": explainer, "scorer": "simulation",
            "precision": precision, "recall": recall, "f1": f1, "auroc": 0.75, "correlation": float("nan"),
            "threshold": 0.0, "n_tokens": 8, "n_positive": 1, "run_id": "run-1", "balanced_accuracy": float("nan"),
            "score_key": "score-1", "population": "sampled", "mode": "patterns", "estimator": "sample",
            "decile_recall": None,
            **{f"{m}_{side}": float("nan") for m in ("precision", "recall", "f1") for side in ("lo", "hi")}}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    store = Store(tmp_path_factory.mktemp("store"))
    _fill(store)
    index = write_reports(store)
    assert index == store.reports_dir() / "index.html"
    return store.reports_dir()


def test_files_exist(reports: Path) -> None:
    assert (reports / "index.html").is_file()
    pages = sorted(p.name for p in (reports / "latents" / SAE).glob("*.html"))
    assert pages == ["0.html", "1.html", "2.html", "3.html"]


def test_numbers_and_statuses_appear(reports: Path) -> None:
    index = (reports / "index.html").read_text()
    assert "0.875" in index and "0.625" in index  # latent 0 precision / recall
    assert "0.729" in index  # latent 0 F1 = 2*.875*.625/1.5
    assert "never active on the 1000 cached tokens" in index  # unexplained latent's reason
    assert "no pattern survived pruning" in index  # failed explanation's error
    assert "n2g-random" in index and "<svg" in index
    page = (reports / "latents" / SAE / "0.html").read_text()
    assert "0.875" in page and "4.500" in page  # score, max act
    assert 'title="true 2 / sim 1"' in page  # score-set token carries true vs simulated activation


def test_text_is_escaped(reports: Path) -> None:
    for path in reports.rglob("*.html"):
        text = path.read_text()
        assert "alert(1)</script>" not in text, path
        assert "<b>bold</b>" not in text and '"<b>"' not in text, path
    page = (reports / "latents" / SAE / "1.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "the cat &lt;b&gt;bold&lt;/b&gt;" in (reports / "index.html").read_text()


def test_links_resolve(reports: Path) -> None:
    n_links = 0
    for path in reports.rglob("*.html"):
        for href in re.findall(r'href="([^"]+)"', path.read_text()):
            assert not href.startswith(("http:", "https:", "//")), href
            assert (path.parent / unquote(href)).resolve().is_file(), (path, href)
            n_links += 1
    assert n_links >= 4 + 4 * 2  # index -> every latent; every latent -> index and a neighbour


def test_filter_to_one_sae(tmp_path: Path) -> None:
    store = Store(tmp_path)
    _fill(store)
    write_reports(store, sae_id="other-sae")
    assert not (store.reports_dir() / "latents" / SAE).exists()
    assert "nothing scored yet" in (store.reports_dir() / "index.html").read_text()


def test_empty_store(tmp_path: Path) -> None:
    index = write_reports(Store(tmp_path))
    assert index.is_file()
