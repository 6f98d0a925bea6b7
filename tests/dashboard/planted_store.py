"""A tiny hand-made store with known answers for the report, export and dashboard tests.

One SAE (`SAE`, 5 latents): 0 and 1 explained and scored (n2g) with a random baseline; 2's explanation
failed; 3 is dead; 4 too dense. Context 11 carries a <script> token and an <img onerror> token, and
latent 1's explanation carries script too: if any of them ran, it would set window.__xss.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from flows.store import Store

SAE = "sae-tiny"
SCRIPT = "<script>window.__xss=1</script>"
IMG = "<img src=x onerror=window.__xss=2>"
TOKENS = {
    10: ["the", "cat", "sat", "on", "the", "mat", "##s", "."],
    11: ["a", SCRIPT, "dog", IMG, "home", "fast", "now", "!"],
    20: ["red", "green", "blue", "cat", "x", "y", "z", "w"],
    21: ["one", "two", "three", "four", "five", "six", "seven", "eight"],
}
ACTS = {0: [4.5, 1.0, 2.0, 0.5, 3.0], 1: [3.0, 0.2, 2.9], 4: [1.0, 1.0, 2.0, 2.0]}
"""latent_acts values per latent (the histogram's known answer)."""
EXPLANATION_1 = f"dog {SCRIPT} {IMG}"


def sae_cfg() -> dict:
    return {"d_sae": 5, "k": 2, "metadata": {"model": "tiny-model", "layer": 2},
            "sae_config": {"n_latents": 5, "k": 2},
            "training_stats": {"fvu": 0.125, "l0": 2.0, "dead_fraction": 0.2, "tokens_seen": 4096}}


def fill(root: Path, run_status: str = "ok") -> Store:
    """Write the planted tables under `root`; return the store."""
    store = Store(root)
    (store.sae_dir(SAE)).mkdir(parents=True, exist_ok=True)
    (store.sae_dir(SAE) / "cfg.json").write_text(json.dumps(sae_cfg()))
    store.append("runs", pl.DataFrame([run_row("run-1", run_status, datetime(2025, 1, 1, tzinfo=UTC))]))
    store.append("contexts", pl.DataFrame({
        "dataset_id": ["d"] * 4, "ctx_id": list(TOKENS), "token_ids": [list(range(8))] * 4,
        "tokens": list(TOKENS.values())}))
    store.append("latent_stats", pl.DataFrame({
        "sae_id": [SAE] * 5, "latent": [0, 1, 2, 3, 4], "n_active": [5, 3, 20, 0, 4], "n_contexts": [4, 3, 2, 0, 4],
        "frequency": [0.0123, 0.01, 0.005, 0.0, 0.75], "max_act": [4.5, 3.0, 2.0, 0.0, 2.0],
        "decile_edges": [[0.5] * 11, [0.5] * 11, [0.5] * 11, [], [0.5] * 11], "cooccurring": [[1], [0], [], [], [0]],
        "stats_key": ["stats-1"] * 5, "mean_act": [1.0, 1.0, 1.0, 0.0, 1.5],
        "status": ["ok", "ok", "ok", "dead", "too_dense"],
        "reason": ["", "", "", "never active on the 1000 cached tokens", "active on 75% of tokens"]}))
    store.append("latent_acts", pl.DataFrame(
        [{"sae_id": SAE, "ctx_id": 20, "pos": i, "latent": latent, "value": v}
         for latent, values in ACTS.items() for i, v in enumerate(values)]))
    examples = []
    for latent in (0, 1, 2, 4):
        examples += [
            {"sae_id": SAE, "latent": latent, "split": "explain", "kind": "activating", "quantile": 9,
             "ctx_id": 10, "start": 0, "acts": [0.0, 4.5, 0.0, 0.0, 0.0, 1.0]},
            {"sae_id": SAE, "latent": latent, "split": "score", "kind": "activating", "quantile": 5,
             "ctx_id": 11, "start": 0, "acts": [0.0, 2.0, 0.0, 1.5]},
            {"sae_id": SAE, "latent": latent, "split": "score", "kind": "random", "quantile": -1,
             "ctx_id": 21, "start": 2, "acts": [0.0, 0.0, 0.0, 0.0]},
        ]
    store.append("examples", pl.DataFrame(examples).with_columns(pl.lit("sample-1").alias("sample_key"),
                                                                 pl.lit(None, dtype=pl.Float64).alias("weight")))
    patterns = '[{"ngram": ["the", "cat"], "act": 4.0}, {"ngram": ["<b>"], "act": 1.0}]'
    store.append("explanations", pl.DataFrame([
        explanation(0, "n2g", "the cat <b>bold</b>", patterns=patterns),
        explanation(1, "n2g", EXPLANATION_1),
        explanation(0, "n2g-random", "dog"),
        explanation(1, "n2g-random", "the cat <b>bold</b>", patterns=patterns),
        explanation(2, "n2g", "", status="failed", error="no pattern survived pruning"),
    ]))
    store.append("scores", pl.DataFrame([
        score(0, "n2g", 0.875, 0.625), score(1, "n2g", 0.5, 0.25),
        score(0, "n2g-random", 0.0, 0.0), score(1, "n2g-random", 0.125, 0.0625),
        score(0, "n2g", 0.75, 0.5, population="natural", estimator="exact"),
    ]))
    sims = []
    for latent in (0, 1):
        for explainer in ("n2g", "n2g-random"):
            sims += [
                {"sae_id": SAE, "latent": latent, "explainer": explainer, "scorer": "simulation", "ctx_id": 11,
                 "true_acts": [0.0, 2.0, 0.0, 1.5], "sim_acts": [1.0, 2.0, 0.0, 0.0], "score_key": "score-1",
                 "p_active": None},
            ]
    store.append("simulations", pl.DataFrame(sims))
    return store


def run_row(run_id: str, status: str, started: datetime) -> dict:
    keys = {"stats_key": "stats-1", "sample_key": "sample-1", "explain_keys": ["explain-1"], "score_keys": ["score-1"]}
    return {"run_id": run_id, "flow": "pipeline", "status": status, "started_at": started, "finished_at": started,
            "config": "{}", "code_version": "abc", "error": "", "config_hash": "abc123", "keys": json.dumps(keys),
            "inputs": json.dumps({"sae_id": SAE, "model": "tiny-model"})}


def explanation(latent: int, explainer: str, text: str, status: str = "ok", error: str = "",
                patterns: str = "") -> dict:
    return {"sae_id": SAE, "latent": latent, "explainer": explainer, "model": "", "prompt_version": "",
            "explanation": text, "status": status, "error": error, "prompt_tokens": 0, "completion_tokens": 0,
            "cost_usd": 0.0, "run_id": "run-1", "created_at": datetime(2025, 1, 1, 0, 5, tzinfo=UTC),
            "patterns": patterns, "explain_key": "explain-1"}


def score(latent: int, explainer: str, precision: float, recall: float, population: str = "sampled",
          estimator: str = "sample") -> dict:
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"sae_id": SAE, "latent": latent, "explainer": explainer, "scorer": "simulation",
            "precision": precision, "recall": recall, "f1": f1, "auroc": 0.75, "correlation": float("nan"),
            "threshold": 0.0, "n_tokens": 8, "n_positive": 1, "run_id": "run-1", "balanced_accuracy": float("nan"),
            "score_key": "score-1", "population": population, "mode": "patterns", "estimator": estimator,
            "decile_recall": None,
            **{f"{m}_{side}": float("nan") for m in ("precision", "recall", "f1") for side in ("lo", "hi")}}
