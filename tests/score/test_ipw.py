"""IPW natural-population estimates: known answers from designs whose inclusion probabilities we control,
and the weighted metrics against scikit-learn / numpy on datasets replicated by integer weights."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from explain.records import Example, Explanation, LatentRecord
from score.ipw import ipw_scores, ipw_totals, weighted_auroc, weighted_binary, weighted_pearson
from score.simulation import SimulationScorer
from score.simulators.base import SimulationItem, SimulationResult, WindowSimulation

WIDTH = 8


def _population(rng: np.random.Generator, sizes: Sequence[int], fire: Sequence[float]) -> list[list[tuple]]:
    """Strata of windows [(true [WIDTH], sim [WIDTH], its WindowSimulation)]: the latent fires on a share
    `fire[h]` of stratum h's tokens; the simulation agrees with the truth on ~70% of the firing tokens and
    adds a few false alarms."""
    strata = []
    for n, p in zip(sizes, fire, strict=True):
        units = []
        for _ in range(n):
            true = np.where(rng.random(WIDTH) < p, rng.uniform(0.5, 3.0, WIDTH), 0.0).astype(np.float32)
            sim = np.where(true > 0, rng.random(WIDTH) < 0.7, rng.random(WIDTH) < 0.05) * rng.uniform(0.2, 2, WIDTH)
            units.append((true, sim.astype(np.float32), WindowSimulation(sim, mode="patterns")))
        strata.append(units)
    return strata


def _population_truth(strata: list[list[tuple]]) -> dict[str, float]:
    true = np.concatenate([t for units in strata for t, _, _ in units]) > 0
    sim = np.concatenate([s for units in strata for _, s, _ in units])
    pred = sim > 0
    return {"tp": float(np.sum(true & pred)), "n_pred": float(pred.sum()), "n_true": float(true.sum()),
            "n_tokens": float(true.size), "precision": precision_score(true, pred), "recall": recall_score(true, pred),
            "f1": f1_score(true, pred), "auroc": roc_auc_score(true, sim),
            "correlation": float(np.corrcoef(np.concatenate([t for u in strata for t, _, _ in u]), sim)[0, 1])}


def _estimate(strata: list[list[tuple]], picks: Sequence[Sequence[int]], totals: bool = False) -> dict:
    """The IPW estimate from a stratified sample: picks[h] indexes stratum h's sampled units (weight N_h / n_h)."""
    true, windows, weights = [], [], []
    for units, chosen in zip(strata, picks, strict=True):
        for i in chosen:
            true.append(units[i][0])
            windows.append(units[i][2])
            weights.append(len(units) / len(chosen))
    if totals:
        return {k: float(v.sum()) for k, v in ipw_totals(true, windows, weights, 0.0).items()}
    return ipw_scores(true, windows, weights, 0.0)


def test_horvitz_thompson_totals_are_unbiased_over_every_possible_sample():
    """All C(5,2) * C(4,1) * C(3,3) stratified samples enumerated: the mean estimate is the population total."""
    strata = _population(np.random.default_rng(0), (5, 4, 3), (0.6, 0.2, 0.0))
    truth = _population_truth(strata)
    takes = (2, 1, 3)
    samples = list(itertools.product(*[itertools.combinations(range(len(u)), k) for u, k in zip(strata, takes,
                                                                                                 strict=True)]))
    assert len(samples) == 10 * 4 * 1
    estimates = [_estimate(strata, picks, totals=True) for picks in samples]
    for name in ("tp", "n_pred", "n_true", "n_tokens"):
        assert np.mean([e[name] for e in estimates]) == pytest.approx(truth[name], rel=1e-12), name


def test_every_unit_sampled_gives_the_population_scores_exactly():
    """pi = 1: weights 1, and the estimate is the population's own precision, recall, F1, AUROC, correlation."""
    strata = _population(np.random.default_rng(1), (30, 20, 50), (0.5, 0.1, 0.0))
    truth = _population_truth(strata)
    row = _estimate(strata, [range(len(u)) for u in strata])
    for name in ("precision", "recall", "f1", "auroc", "correlation"):
        assert row[name] == pytest.approx(truth[name], abs=1e-9), name
    assert row["n_tokens"] == truth["n_tokens"] and row["n_positive"] == truth["n_true"]


def test_ipw_precision_and_recall_match_the_population_on_average_where_the_sample_does_not():
    """An enriched design like the score set's: activating strata oversampled, silent tokens undersampled.
    Precision and recall are ratios of two unbiased totals, so only nearly unbiased (O(1/n))."""
    strata = _population(np.random.default_rng(2), (40, 60, 400), (0.7, 0.3, 0.0))
    truth = _population_truth(strata)  # the silent stratum's false alarms are what the sampled precision misses
    rng = np.random.default_rng(3)
    precision, recall, sampled = [], [], []
    for _ in range(2000):
        picks = [rng.choice(len(u), size=k, replace=False) for u, k in zip(strata, (20, 20, 50), strict=True)]
        totals = _estimate(strata, picks, totals=True)  # the ratios below are ipw_scores' (checked above)
        precision.append(totals["tp"] / totals["n_pred"])
        recall.append(totals["tp"] / totals["n_true"])
        sampled.append(_sampled_precision(strata, picks))
    assert np.mean(precision) == pytest.approx(truth["precision"], abs=0.006)
    assert np.mean(recall) == pytest.approx(truth["recall"], abs=0.006)
    assert np.mean(sampled) - truth["precision"] > 0.15  # why the weights are needed


def _sampled_precision(strata: list[list[tuple]], picks: Sequence[Sequence[int]]) -> float:
    true = np.concatenate([strata[h][i][0] for h, chosen in enumerate(picks) for i in chosen]) > 0
    pred = np.concatenate([strata[h][i][1] for h, chosen in enumerate(picks) for i in chosen]) > 0
    return float(np.sum(true & pred) / max(np.sum(pred), 1))  # numpy: sklearn costs ms per call


def _replicated(rng: np.random.Generator, n: int = 300) -> tuple[np.ndarray, ...]:
    """Labels, tied graded scores, truths and integer weights (zeros included), plus the replicated data."""
    y = rng.random(n) < 0.3
    score = np.round(rng.random(n) + 0.4 * y, 1)  # ties
    truth = np.where(y, rng.uniform(0.5, 2, n), 0.0)
    w = rng.integers(0, 5, n)
    return y, score, truth, w, np.repeat(y, w), np.repeat(score, w), np.repeat(truth, w)


def test_weighted_metrics_equal_the_unweighted_ones_on_the_replicated_data():
    y, score, truth, w, y_rep, score_rep, truth_rep = _replicated(np.random.default_rng(4))
    expected = roc_auc_score(y_rep, score_rep)
    assert weighted_auroc(y, score, w) == pytest.approx(expected, abs=1e-12)
    assert weighted_auroc(y, score, w) == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)
    assert weighted_pearson(truth, score, w) == pytest.approx(np.corrcoef(truth_rep, score_rep)[0, 1], abs=1e-12)
    assert weighted_pearson(truth, score, w) == pytest.approx(statistics.correlation(truth_rep, score_rep), abs=1e-12)
    pred = score > 0.7
    binary = weighted_binary(y, pred, w)
    pred_rep = np.repeat(pred, w)
    assert binary["precision"] == pytest.approx(precision_score(y_rep, pred_rep), abs=1e-12)
    assert binary["recall"] == pytest.approx(recall_score(y_rep, pred_rep), abs=1e-12)
    assert binary["f1"] == pytest.approx(f1_score(y_rep, pred_rep), abs=1e-12)


def test_weighted_metrics_degenerate_cases():
    y = np.array([True, False, True])
    assert np.isnan(weighted_auroc(y, np.array([1.0, 0.0, 2.0]), np.array([1.0, 0.0, 1.0])))  # no negative weight
    assert np.isnan(weighted_pearson(np.array([1.0, 2.0, 3.0]), np.full(3, 0.5), np.array([1.0, 2.0, 3.0])))
    assert np.isnan(weighted_pearson(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 0.0]), np.array([0, 1.0, 0])))
    assert weighted_binary(y, np.zeros(3, dtype=bool), np.ones(3)) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_window_weights_equal_replicated_windows():
    """ipw_scores with integer window weights = the plain scores of the windows repeated that many times."""
    rng = np.random.default_rng(5)
    strata = _population(rng, (25,), (0.4,))[0]
    w = rng.integers(0, 4, len(strata)).astype(float)
    row = ipw_scores([t for t, _, _ in strata], [window for _, _, window in strata], w, 0.0)
    true = np.concatenate([t for (t, _, _), k in zip(strata, w, strict=True) for _ in range(int(k))])
    sim = np.concatenate([s for (_, s, _), k in zip(strata, w, strict=True) for _ in range(int(k))])
    assert row["precision"] == pytest.approx(precision_score(true > 0, sim > 0), abs=1e-12)
    assert row["recall"] == pytest.approx(recall_score(true > 0, sim > 0), abs=1e-12)
    assert row["auroc"] == pytest.approx(roc_auc_score(true > 0, sim), abs=1e-12)
    assert row["correlation"] == pytest.approx(np.corrcoef(true, sim)[0, 1], abs=1e-12)
    assert row["n_tokens"] == true.size and row["n_positive"] == int(np.sum(true > 0))
    assert row["precision_lo"] <= row["precision"] <= row["precision_hi"]


class _Echo:
    """Simulator that predicts activation 1 on the token "x" (a fixed rule, so the test knows the answer)."""

    name, threshold = "echo", 0.0

    def identity(self) -> dict:
        return {"simulator": self.name}

    def simulate_many(self, items: Sequence[SimulationItem]) -> list[SimulationResult]:
        return [[WindowSimulation(np.array([t == "x" for t in e.tokens], np.float32), mode="patterns")
                 for e in examples] for _, examples in items]


def _weighted_record(weights: Sequence[float | None]) -> LatentRecord:
    score = [Example(ctx_id=i, tokens=["x", "y", "x", "y"], acts=np.array([1.0, 0, 0, 0] if i % 2 else [0.0] * 4,
                                                                          np.float32),
                     kind="activating" if i % 2 else "random", weight=w) for i, w in enumerate(weights)]
    return LatentRecord(sae_id="s", latent=7, explain=[], score=score)


def test_the_scorer_adds_a_natural_ipw_row_only_when_every_example_has_a_weight():
    explanation = Explanation(latent=7, explainer="llm", text="x")
    # windows 0, 2 silent (2 false alarms each), 1, 3 fire once where predicted (1 hit, 1 false alarm each)
    (both,) = SimulationScorer(_Echo()).score_many([explanation], {7: _weighted_record([9.0, 1.0, 9.0, 1.0])})
    sampled, natural = both.score_rows
    assert (sampled["population"], sampled["estimator"]) == ("sampled", "sample")
    assert (natural["population"], natural["estimator"]) == ("natural", "ipw")
    assert sampled["precision"] == pytest.approx(2 / 8)
    assert natural["precision"] == pytest.approx(2 / (2 * 2 + 2 * 9 * 2))  # silent windows weigh 9
    assert natural["recall"] == sampled["recall"] == 1.0
    assert natural["n_tokens"] == 4 * (9 + 1 + 9 + 1) and natural["mode"] == sampled["mode"] == "patterns"
    assert list(natural) == list(sampled)  # the same columns
    (one,) = SimulationScorer(_Echo()).score_many([explanation], {7: _weighted_record([9.0, None, 9.0, 1.0])})
    assert [r["estimator"] for r in one.score_rows] == ["sample"]  # absent, not wrong
