"""Every explainer, simulator and scorer implements its role's Protocol, and each one, called through that
Protocol on a planted latent (fires exactly on the word "cat"), gives the known answer."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from fixtures.llm import make_client, planted_record
from fixtures.llm_server import LLMTestServer

from explain.explainers.base import Explainer
from explain.explainers.llm import LLMExplainer
from explain.explainers.n2g import ALGORITHM_VERSION, N2GExplainer
from explain.explainers.prompts import PROMPT_VERSION
from explain.llm.client import LLMClient
from explain.records import Explanation, LatentRecord
from score.base import ScoreOutcome, Scorer
from score.judges.detection import DetectionScorer
from score.judges.fuzzing import FuzzingScorer
from score.prompts import SIMULATE_PROMPT_VERSION
from score.simulation import SimulationScorer
from score.simulators.base import SimulationFailure, Simulator, WindowSimulation
from score.simulators.llm import LLMSimulator
from score.simulators.n2g import N2GSimulator

CAT = planted_record(0)
"""Latent 0 of tests/fixtures/llm.py: fires exactly on "cat" (1-3 times per activating context)."""


def _explainers(client: LLMClient | None) -> list[Explainer]:
    return [N2GExplainer(), LLMExplainer(client)]


def _simulators(client: LLMClient | None) -> list[Simulator]:
    return [N2GSimulator(), LLMSimulator(client)]


def _scorers(client: LLMClient | None) -> list[Scorer]:
    return [SimulationScorer(N2GSimulator()), SimulationScorer(LLMSimulator(client)), DetectionScorer(client),
            FuzzingScorer(client)]


@pytest.fixture(scope="module")
def client() -> Iterator[LLMClient]:
    with LLMTestServer() as server:
        yield make_client(server.base_url)[0]


def test_every_implementation_satisfies_its_protocol() -> None:
    for explainer in _explainers(None):
        assert isinstance(explainer, Explainer) and not isinstance(explainer, Scorer | Simulator)
    for simulator in _simulators(None):
        assert isinstance(simulator, Simulator) and not isinstance(simulator, Scorer | Explainer)
    for scorer in _scorers(None):
        assert isinstance(scorer, Scorer) and not isinstance(scorer, Explainer | Simulator)
    assert not isinstance(object(), Explainer | Scorer | Simulator)
    assert not hasattr(LLMExplainer, "explain") and not hasattr(N2GSimulator, "simulate")  # one batch method each


def test_identities_are_json_and_name_what_changes_the_output() -> None:
    identities = [x.identity() for x in (*_explainers(None), *_simulators(None), *_scorers(None))]
    assert all(json.loads(json.dumps(i)) == i for i in identities)
    n2g, llm = identities[0], identities[1]
    assert n2g["explainer"] == "n2g" and n2g["algorithm"] == ALGORITHM_VERSION and n2g["max_n"] == 3
    assert llm["explainer"] == "llm" and llm["prompt_version"] == PROMPT_VERSION and llm["max_activating"] == 20
    assert identities[3]["prompt_version"] == SIMULATE_PROMPT_VERSION and identities[3]["threshold"] == 0.5
    assert identities[5] == {"scorer": "simulation", "simulator": identities[3]}
    assert N2GExplainer().identity() != N2GExplainer(N2GExplainer().config.model_copy(update={"max_n": 2})).identity()


def _cat_explanation(explainer: str) -> Explanation:
    if explainer == "n2g":
        return Explanation(0, "n2g", '"cat"', patterns=[{"ngram": ["cat"], "act": 3.0}])
    return Explanation(0, "llm", 'the word "cat"')


def test_explainers_find_the_planted_word(client: LLMClient) -> None:
    n2g, llm = (explainer.explain_many([CAT, _no_activations()]) for explainer in _explainers(client))
    assert n2g[0].ok and [p["ngram"] for p in n2g[0].patterns] == [["cat"]] and n2g[0].text == '"cat"'
    assert llm[0].ok and llm[0].text == 'the word "cat"'
    assert [e.status for e in (n2g[1], llm[1])] == ["failed", "failed"]  # a failure is a row, not an exception
    assert all(e.error for e in (n2g[1], llm[1]))


def test_simulators_predict_exactly_the_planted_word(client: LLMClient) -> None:
    for simulator in _simulators(client):
        (predicted,) = simulator.simulate_many([(_cat_explanation(simulator.name), CAT.score)])
        assert not isinstance(predicted, SimulationFailure), predicted
        for example, sim in zip(CAT.score, predicted, strict=True):
            assert isinstance(sim, WindowSimulation)
            assert sim.mode == {"n2g": "patterns", "llm": "logprobs"}[simulator.name]
            np.testing.assert_array_equal(sim.predicted_active(simulator.threshold), example.acts > 0)


def test_scorers_score_the_planted_explanation_perfectly_in_order(client: LLMClient) -> None:
    for scorer in _scorers(client):
        explainer = "n2g" if getattr(getattr(scorer, "simulator", None), "name", "llm") == "n2g" else "llm"
        failed = Explanation(0, explainer, "", status="failed", error="x")
        outcomes: list[ScoreOutcome] = scorer.score_many([_cat_explanation(explainer), failed], {0: CAT})
        assert [o.status for o in outcomes] == ["ok", "skipped"], (scorer.name, outcomes)
        row = outcomes[0].score_rows[0]
        assert row["scorer"] == scorer.name and row["latent"] == 0 and row["explainer"] == explainer
        assert row["precision"] == row["recall"] == 1.0, (scorer.name, row)
        assert row["mode"] == _expected_mode(scorer), (scorer.name, row)
        assert "sae_id" not in row and "run_id" not in row
        assert bool(outcomes[0].simulation_rows) == isinstance(scorer, SimulationScorer)


def _expected_mode(scorer: Scorer) -> str:
    """The `mode` of a scorer's row here: N2G matches patterns, the fake server gives logprobs, judges judge."""
    if not isinstance(scorer, SimulationScorer):
        return "judge"
    return "patterns" if scorer.simulator.name == "n2g" else "logprobs"


def _no_activations() -> LatentRecord:
    quiet = [e for e in CAT.explain if not e.is_activating]
    return LatentRecord("sae-test", 1, quiet, CAT.score)
