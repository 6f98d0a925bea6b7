"""Planted latents: N2G patterns that match exactly the trigger tokens score 1/1 on held-out windows,
the random baseline scores near the base rate, and `scores` can be recomputed from `simulations`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from explain.explainers.n2g import N2GConfig, N2GExplainer, match_patterns
from explain.records import Example, Explanation, LatentRecord
from score.base import ScoreOutcome
from score.baselines import random_baseline_explanations
from score.simulation import SimulationScorer
from score.simulators.base import SimulationFailure, SimulationItem, SimulationResult, Simulator, WindowSimulation
from score.simulators.n2g import N2GSimulator

SCORE_ROW_KEYS = ["latent", "explainer", "scorer", "precision", "recall", "f1", "auroc", "correlation", "threshold",
                  "n_tokens", "n_positive", "balanced_accuracy", "mode", "population", "estimator", "precision_lo",
                  "precision_hi", "recall_lo", "recall_hi", "f1_lo", "f1_hi"]
"""The `scores` columns score/ fills (the flows add sae_id, run_id and score_key)."""
SIMULATION_ROW_KEYS = ["latent", "explainer", "scorer", "ctx_id", "true_acts", "sim_acts", "p_active"]
"""The `simulations` columns score/ fills, in table order (the flows add sae_id)."""

VOCAB = [f"w{i}" for i in range(40)]
# latent -> patterns that fire exactly on its trigger (the last token of each n-gram)
PLANTED = {
    0: [{"ngram": ["w1"], "act": 2.0}, {"ngram": ["w2"], "act": 2.0}],
    1: [{"ngram": ["w10"], "act": 1.0}],
    2: [{"ngram": ["w20", "w21"], "act": 1.5}],
    3: [{"ngram": ["w30"], "act": 3.0}],
}


def fake_match_patterns(patterns: list[dict], tokens: list[str]) -> np.ndarray:
    """Ground truth of the planted latents (independent of explain.explainers.n2g): max act of the n-grams ending
    at each token."""
    pred = np.zeros(len(tokens), dtype=np.float32)
    for i in range(len(tokens)):
        for pattern in patterns:
            ngram = pattern["ngram"]
            if i + 1 >= len(ngram) and tokens[i + 1 - len(ngram) : i + 1] == ngram:
                pred[i] = max(pred[i], pattern["act"])
    return pred


def _window(rng: np.random.Generator, latent: int, ctx_id: int, plant: bool, width: int = 16) -> Example:
    tokens = [str(t) for t in rng.choice(VOCAB, size=width)]
    if plant:
        ngram = PLANTED[latent][int(rng.integers(len(PLANTED[latent])))]["ngram"]
        at = int(rng.integers(len(ngram) - 1, width))
        tokens[at + 1 - len(ngram) : at + 1] = ngram
    # truth, with varying magnitudes: the latent fires exactly where its trigger n-gram ends
    acts = (fake_match_patterns(PLANTED[latent], tokens) > 0) * rng.uniform(0.5, 4.0, width)
    return Example(ctx_id=ctx_id, tokens=tokens, acts=acts.astype(np.float32), kind="activating" if plant else "random")


def _record(latent: int, seed: int = 0) -> LatentRecord:
    rng = np.random.default_rng(seed + latent)
    explain = [_window(rng, latent, 1000 * latent + i, plant=i % 2 == 0) for i in range(10)]
    score = [_window(rng, latent, 1000 * latent + 100 + i, plant=i % 2 == 0) for i in range(40)]
    record = LatentRecord(sae_id="sae-test", latent=latent, explain=explain, score=score)
    record.assert_disjoint()
    return record


def _explanation(latent: int, explainer: str = "n2g") -> Explanation:
    text = " | ".join(" ".join(p["ngram"]) for p in PLANTED[latent])
    return Explanation(latent=latent, explainer=explainer, text=text, patterns=PLANTED[latent])


class _FixedSimulator:
    """A test simulator: `predict(tokens)` per window (values, or a WindowSimulation), same for every explanation."""

    name = "fixed"
    threshold = 0.0

    def __init__(self, predict) -> None:  # noqa: ANN001
        self.predict = predict

    def identity(self) -> dict:
        return {"simulator": self.name}

    def simulate_many(self, items: Sequence[SimulationItem]) -> list[SimulationResult]:
        return [[_as_window(self.predict(e.tokens)) for e in examples] for _, examples in items]


def _as_window(predicted: np.ndarray | WindowSimulation) -> WindowSimulation:
    return predicted if isinstance(predicted, WindowSimulation) else WindowSimulation(np.asarray(predicted))


@pytest.fixture
def simulator() -> N2GSimulator:
    return N2GSimulator()  # the real explain.explainers.n2g.match_patterns


def score_latent(explanation: Explanation, record: LatentRecord, simulator: Simulator) -> ScoreOutcome:
    """One latent through SimulationScorer (the record keyed by the explanation's latent)."""
    (outcome,) = SimulationScorer(simulator).score_many([explanation], {explanation.latent: record})
    return outcome


def test_n2g_simulator_is_a_simulator(simulator: N2GSimulator) -> None:
    assert isinstance(simulator, Simulator)
    assert simulator.threshold == 0.0
    record = _record(2)
    expected = [match_patterns(PLANTED[2], e.tokens) for e in record.score]
    (got,) = simulator.simulate_many([(_explanation(2), record.score)])
    assert all(np.array_equal(a, b.values) for a, b in zip(expected, got, strict=True))
    assert {(w.mode, w.p_active) for w in got} == {("patterns", None)}


def test_any_simulator_is_scored() -> None:
    record = _record(0)
    ones = _FixedSimulator(lambda tokens: np.ones(len(tokens)))
    assert isinstance(ones, Simulator)
    assert score_latent(_explanation(0), record, ones).score_rows[0]["recall"] == 1.0


def test_planted_patterns_score_perfectly_and_random_baseline_near_base_rate(simulator: N2GSimulator) -> None:
    records = {latent: _record(latent) for latent in PLANTED}
    explanations = [_explanation(latent) for latent in PLANTED]
    for explanation in explanations:
        result = score_latent(explanation, records[explanation.latent], simulator).score_rows[0]
        assert (result["precision"], result["recall"], result["f1"]) == (1.0, 1.0, 1.0)
        assert result["auroc"] == 1.0
    for baseline in random_baseline_explanations(explanations, seed=0):
        assert baseline.explainer == "n2g-random"
        result = score_latent(baseline, records[baseline.latent], simulator).score_rows[0]
        base_rate = result["n_positive"] / result["n_tokens"]
        assert result["precision"] <= base_rate + 0.05
        assert result["f1"] < 0.2


def test_n2g_explainer_end_to_end_scores_perfectly_on_held_out_windows(simulator: N2GSimulator) -> None:
    """explain.explainers.n2g mines patterns from the explain set only; they must generalise to the score set."""
    for latent in PLANTED:
        record = _record(latent, seed=11)
        (explanation,) = N2GExplainer(N2GConfig()).explain_many([record])
        assert explanation.ok, explanation.error
        result = score_latent(explanation, record, simulator).score_rows[0]
        assert (result["precision"], result["recall"]) == (1.0, 1.0), (latent, explanation.patterns)


def test_rows_have_the_store_columns(simulator: N2GSimulator) -> None:
    scored = score_latent(_explanation(1), _record(1), simulator)
    assert list(scored.score_rows[0]) == SCORE_ROW_KEYS
    assert all(list(row) == SIMULATION_ROW_KEYS for row in scored.simulation_rows)
    assert [row["ctx_id"] for row in scored.simulation_rows] == [e.ctx_id for e in _record(1).score]
    assert "sae_id" not in scored.score_rows[0] and "run_id" not in scored.score_rows[0]  # the flows add them
    assert scored.score_rows[0]["threshold"] == 0.0 and scored.score_rows[0]["mode"] == "patterns"
    assert all(row["p_active"] is None for row in scored.simulation_rows)


def _stored(rows: list[dict], tmp_path, name: str) -> pl.DataFrame:  # noqa: ANN001
    """Rows through a Parquet file, activations as float32 (the `simulations` table's dtype)."""
    frame = pl.DataFrame(rows, infer_schema_length=None)
    lists = [c for c in ("true_acts", "sim_acts", "p_active") if c in frame.columns]
    frame.with_columns(pl.col(c).cast(pl.List(pl.Float32())) for c in lists).write_parquet(tmp_path / name)
    return pl.read_parquet(tmp_path / name)


def test_scores_recomputed_from_simulations_with_sklearn(tmp_path, simulator: N2GSimulator) -> None:
    records = {latent: _record(latent, seed=7) for latent in PLANTED}
    explanations = [_explanation(latent) for latent in PLANTED]
    # a noisy explainer too, so the recomputation is not trivially 1.0 everywhere
    explanations += random_baseline_explanations(explanations, seed=3)
    scored = [o for o in SimulationScorer(simulator).score_many(explanations, records) if o.ok]
    key = ["latent", "explainer", "scorer"]
    sims = _stored([row for s in scored for row in s.simulation_rows], tmp_path, "simulations.parquet")
    scores = _stored([s.score_rows[0] for s in scored], tmp_path, "scores.parquet")
    assert scores.height == 2 * len(PLANTED)
    for row in scores.iter_rows(named=True):
        sel = sims.filter(*[pl.col(k) == row[k] for k in key])
        y_true = np.concatenate([np.asarray(a) for a in sel["true_acts"]]) > 0
        y_pred = np.concatenate([np.asarray(a) for a in sel["sim_acts"]]) > row["threshold"]
        assert y_true.size == row["n_tokens"]
        assert precision_score(y_true, y_pred, zero_division=0) == pytest.approx(row["precision"], abs=1e-12)
        assert recall_score(y_true, y_pred, zero_division=0) == pytest.approx(row["recall"], abs=1e-12)
        assert f1_score(y_true, y_pred, zero_division=0) == pytest.approx(row["f1"], abs=1e-12)


def _mixed(latent: int):  # noqa: ANN202
    """Predicts 3.0 everywhere (all active by sim_acts > 0); windows with an odd number of distinct tokens also
    carry p_active: 0.9 on the planted trigger, 0.2 elsewhere (so there p_active decides, and gets it right)."""
    def predict(tokens: list[str]) -> WindowSimulation:
        values = np.full(len(tokens), 3.0, dtype=np.float32)
        if len(set(tokens)) % 2 == 0:
            return WindowSimulation(values)
        p_active = np.where(fake_match_patterns(PLANTED[latent], tokens) > 0, 0.9, 0.2)
        return WindowSimulation(values, p_active, "logprobs")
    return predict


def test_mixed_windows_binarise_each_by_what_it_has_and_recompute_from_the_rows(tmp_path) -> None:  # noqa: ANN001
    scored = []
    for latent in PLANTED:
        simulator = _FixedSimulator(_mixed(latent))
        scored.append(score_latent(_explanation(latent), _record(latent, seed=5), simulator))
    sims = _stored([row for s in scored for row in s.simulation_rows], tmp_path, "simulations.parquet")
    assert sims.schema["p_active"] == pl.List(pl.Float32())
    for outcome in scored:
        row = outcome.score_rows[0]
        assert row["mode"] == "mixed"
        mine = sims.filter(pl.col("latent") == row["latent"])
        with_p = mine["p_active"].is_not_null()
        assert 0 < with_p.sum() < mine.height  # both kinds of window
        y_true = np.concatenate([np.asarray(a) for a in mine["true_acts"]]) > 0
        y_pred = np.concatenate([np.asarray(p) > 0.5 if p is not None else np.asarray(v) > row["threshold"]
                                 for p, v in zip(mine["p_active"], mine["sim_acts"], strict=True)])
        assert precision_score(y_true, y_pred, zero_division=0) == pytest.approx(row["precision"], abs=1e-12)
        assert recall_score(y_true, y_pred, zero_division=0) == pytest.approx(row["recall"], abs=1e-12)
        assert f1_score(y_true, y_pred, zero_division=0) == pytest.approx(row["f1"], abs=1e-12)
        assert row["recall"] == 1.0
        by_values = np.concatenate([np.asarray(v) for v in mine["sim_acts"]]) > row["threshold"]
        assert precision_score(y_true, by_values) < row["precision"]  # sim_acts alone would score it differently


def test_failed_explanations_are_not_scored(simulator: N2GSimulator) -> None:
    failed = Explanation(latent=1, explainer="llm", text="", status="failed", error="parse error")
    not_ok = score_latent(failed, _record(1), simulator)
    assert not_ok.status == "skipped" and not not_ok.score_rows and "failed" in not_ok.error
    wrong = score_latent(_explanation(2), _record(1), simulator)
    assert wrong.status == "skipped" and not wrong.score_rows and "latent 2" in wrong.error
    scorer = SimulationScorer(simulator)
    scored = [o for o in scorer.score_many([failed, _explanation(1)], {1: _record(1)}) if o.ok]
    assert [s.score_rows[0]["latent"] for s in scored] == [1]
    outcomes = scorer.score_many([failed, _explanation(1), _explanation(3)], {1: _record(1)})
    assert [(o.latent, o.status) for o in outcomes] == [(1, "skipped"), (1, "ok"), (3, "skipped")]  # in order


def test_misaligned_simulator_output_raises() -> None:
    short = _FixedSimulator(lambda tokens: np.zeros(len(tokens) - 1))
    with pytest.raises(ValueError, match="15 values for 16 tokens"):
        score_latent(_explanation(1), _record(1), short)


def test_free_text_explanation_needs_patterns(simulator: N2GSimulator) -> None:
    (result,) = simulator.simulate_many([(Explanation(latent=1, explainer="llm", text="cats"), _record(1).score)])
    assert isinstance(result, SimulationFailure) and "no N2G patterns" in result.error
    outcome = score_latent(Explanation(latent=1, explainer="llm", text="cats"), _record(1), simulator)
    assert outcome.status == "failed" and "no N2G patterns" in outcome.error and not outcome.score_rows


def test_empty_batch_scores_nothing(simulator: N2GSimulator) -> None:
    assert SimulationScorer(simulator).score_many([], {}) == []
