"""Natural-population scores of pattern explanations equal a brute-force count over every held-out token
(match_patterns per context, scikit-learn for the metrics)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from explain.explainers.n2g import match_patterns
from explain.records import Explanation
from explain.sampling.keys import split_of
from score.base import Scorer
from score.deciles import decile_recall
from score.natural import HeldOutCorpus, NaturalPatternScorer

VOCAB = [f"w{i}" for i in range(12)]
N_CTX, T, SEED, FRACTION = 80, 16, 3, 0.5
BASE = 7 << 32  # a dataset prefix: only the low bits (the index) enter the split hash


def _corpus(rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    ids = rng.integers(0, len(VOCAB), size=(N_CTX, T))
    contexts = pl.DataFrame({"ctx_id": np.arange(N_CTX, dtype=np.int64) + BASE, "token_ids": ids.tolist(),
                             "tokens": [[VOCAB[i] for i in row] for row in ids]})
    return contexts, ids


def _truth(rng: np.random.Generator, ids: np.ndarray, n_latents: int) -> np.ndarray:
    """[n_latents, N_CTX, T] activations: each latent fires on a token id (mostly) plus noise."""
    acts = np.zeros((n_latents, N_CTX, T), dtype=np.float32)
    for latent in range(n_latents):
        fires = (ids == latent) & (rng.random(ids.shape) < 0.8) | (rng.random(ids.shape) < 0.03)
        acts[latent][fires] = rng.uniform(0.5, 4.0, int(fires.sum()))
    return acts


def _explanations() -> list[Explanation]:
    pats = [
        [{"ngram": ["w0"], "act": 2.0}],
        [{"ngram": ["w1"], "act": 1.0}, {"ngram": ["w3", "w1"], "act": 3.0}, {"ngram": ["w2", "w3", "w1"], "act": 5.0}],
        [{"ngram": ["w5", "w2"], "act": 1.5}, {"ngram": ["w11"], "act": 0.5}],
        [{"ngram": [], "act": 1.0}],  # always-on
        [{"ngram": ["nope"], "act": 1.0}],  # a token the corpus never has: predicts nothing
        [{"ngram": ["W5"], "act": 1.0, "ignore_case": True}],
        [{"ngram": ["w6", None], "act": 2.0}, {"ngram": ["w7", None, "w8"], "act": 1.0}],  # wildcards
        [{"ngram": ["w9", "w4"], "act": 2.0, "at": 0}, {"ngram": [None, "w10"], "act": 1.0, "at": 0},
         {"ngram": ["w1", "w2", "w3"], "act": 3.0, "at": 1}],  # patterns that read tokens after the predicted one
    ]
    return [Explanation(latent=i, explainer="n2g", text=str(p), patterns=p) for i, p in enumerate(pats)]


def _brute_force(explanation: Explanation, contexts: pl.DataFrame, acts: np.ndarray) -> dict:
    latent = explanation.latent
    held = split_of(SEED, np.full(N_CTX, latent), contexts["ctx_id"].to_numpy(), FRACTION) == "score"
    tokens = contexts["tokens"].to_list()
    pred = np.concatenate([match_patterns(explanation.patterns, tokens[r]) for r in np.nonzero(held)[0]])
    true = acts[latent][held].ravel()
    y = true > 0
    auroc = roc_auc_score(y, pred) if 0 < y.sum() < len(y) else math.nan
    corr = np.corrcoef(pred, true)[0, 1] if pred.std() > 0 and true.std() > 0 else math.nan
    return {"precision": precision_score(y, pred > 0, zero_division=0), "recall": recall_score(y, pred > 0),
            "f1": f1_score(y, pred > 0, zero_division=0), "auroc": auroc, "correlation": corr,
            "n_tokens": len(y), "n_positive": int(y.sum()), "decile_recall": decile_recall(true[y], pred[y] > 0)}


def test_natural_scores_equal_a_brute_force_count_over_held_out_tokens():
    rng = np.random.default_rng(0)
    contexts, ids = _corpus(rng)
    explanations = _explanations()
    acts = _truth(rng, ids, len(explanations))
    nz = np.nonzero(acts)
    cache = pl.DataFrame({"ctx_id": contexts["ctx_id"].to_numpy()[nz[1]], "pos": nz[2].astype(np.int32),
                          "latent": nz[0].astype(np.int32), "value": acts[nz]})

    def truth(latents: list[int]) -> pl.DataFrame:
        return cache.filter(pl.col("latent").is_in(latents))

    scorer = NaturalPatternScorer(HeldOutCorpus.from_contexts(contexts, SEED, FRACTION), truth)
    assert isinstance(scorer, Scorer)
    outcomes = scorer.score_many(explanations, {})
    assert [o.status for o in outcomes] == ["ok"] * len(explanations)
    for explanation, outcome in zip(explanations, outcomes, strict=True):
        expected, row = _brute_force(explanation, contexts, acts), outcome.score_rows[0]
        assert row["population"] == "natural" and row["n_tokens"] < N_CTX * T  # only the held-out half
        assert row["decile_recall"] == expected.pop("decile_recall"), explanation.latent
        for metric, value in expected.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(row[metric]), (explanation.latent, metric)
            else:
                assert row[metric] == pytest.approx(value, abs=1e-9), (explanation.latent, metric)
    always = outcomes[3].score_rows[0]
    assert always["recall"] == 1.0 and always["precision"] == pytest.approx(always["n_positive"] / always["n_tokens"])
    assert always["recall_lo"] == always["recall_hi"] == 1.0
    for outcome in outcomes[:3]:  # latents that fire and are predicted: intervals around the estimate
        row = outcome.score_rows[0]
        for metric in ("precision", "recall", "f1"):
            assert row[f"{metric}_lo"] <= row[metric] <= row[f"{metric}_hi"], (outcome.latent, metric)
        assert row["f1_hi"] - row["f1_lo"] > 0


def test_free_text_and_failed_explanations_are_skipped_with_a_reason():
    rng = np.random.default_rng(1)
    contexts, _ = _corpus(rng)
    scorer = NaturalPatternScorer(HeldOutCorpus.from_contexts(contexts, SEED, FRACTION),
                                  lambda latents: pl.DataFrame(schema={"ctx_id": pl.Int64, "pos": pl.Int32,
                                                                       "latent": pl.Int32, "value": pl.Float32}))
    outcomes = scorer.score_many([Explanation(latent=0, explainer="llm", text="cats"),
                                  Explanation(latent=1, explainer="n2g", text="", status="failed", patterns=[])], {})
    assert [o.status for o in outcomes] == ["skipped", "skipped"]
    assert "free-text" in outcomes[0].error and "failed" in outcomes[1].error
