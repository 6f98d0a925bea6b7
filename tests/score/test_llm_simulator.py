"""The batched LLM simulator against the fake server: request counts from the plan, per-window faults
re-asked alone (recovered or the latent failed, never misaligned), replies keyed by window index and
every level by its token position, logprob expected values and P(active) mapped to the right window and
position, the score row's mode, and precision recomputed from the simulation rows."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
from fixtures.llm import make_client, planted_records
from fixtures.llm_server import FaultRule, LLMTestServer, data_block, window_fault
from sklearn.metrics import precision_score, recall_score

from explain.explainers.llm import LLMExplainer
from explain.llm.client import LLMClient
from explain.records import Explanation, LatentRecord
from score.base import ScoreOutcome
from score.simulation import SimulationScorer
from score.simulators.llm import LLMSimulator, LLMSimulatorConfig

N_WINDOWS = 20  # 10 activating + 10 quiet score windows per planted latent


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(logprobs="ignore") as srv:
        yield srv


def _setup(server: LLMTestServer, n: int = 2, **client_overrides: object
           ) -> tuple[LLMClient, list[LatentRecord], list[Explanation]]:
    records = planted_records(n, n_score=10, n_quiet=10)
    client, _ = make_client(server.base_url, **client_overrides)
    explanations = LLMExplainer(client).explain_many(records)
    assert all(e.ok for e in explanations)
    server.reset_counts()
    return client, records, explanations


def _simulate(client: LLMClient, records: list[LatentRecord], explanations: list[Explanation],
              **config: object) -> list[ScoreOutcome]:
    simulator = LLMSimulator(client, LLMSimulatorConfig(**config))  # type: ignore[arg-type]
    return SimulationScorer(simulator).score_many(explanations, {r.latent: r for r in records})


def _sims(outcome: ScoreOutcome) -> dict[int, list[float]]:
    return {row["ctx_id"]: list(row["sim_acts"]) for row in outcome.simulation_rows}


def _expected_sims(record: LatentRecord) -> dict[int, list[float]]:
    """What the fake model predicts: 10 exactly on the planted trigger, 0 elsewhere."""
    return {e.ctx_id: [10.0 if a > 0 else 0.0 for a in e.acts] for e in record.score}


def _windows_sent(server: LLMTestServer) -> list[list[list[str]]]:
    """Per simulate request: the token lists of its windows."""
    out = []
    for body in server.state.bodies:
        data = data_block(body["messages"][-1]["content"])
        if data.get("task") == "simulate":
            out.append([[tok for _, tok in w["tokens"]] for w in data["windows"]])
    return out


@pytest.mark.parametrize("per_call, calls", [(1, 20), (3, 7), (10, 2), (32, 1)])
def test_requests_per_latent_equal_the_plan(server: LLMTestServer, per_call: int, calls: int) -> None:
    client, records, explanations = _setup(server)
    simulator = LLMSimulator(None, LLMSimulatorConfig(windows_per_call=per_call))
    plans = [simulator.plan(e.text, r) for e, r in zip(explanations, records, strict=True)]
    assert [len(p) for p in plans] == [calls, calls] == [math.ceil(N_WINDOWS / per_call)] * 2
    outcomes = _simulate(client, records, explanations, windows_per_call=per_call)
    assert server.state.requests["simulate"] == sum(len(p) for p in plans) == 2 * calls
    sent = sorted(json.dumps(b["messages"]) for b in server.state.bodies)
    assert sent == sorted(json.dumps(m) for p in plans for m, _ in p)  # the plan renders the exact prompts
    for outcome, record in zip(outcomes, records, strict=True):
        assert outcome.status == "ok" and outcome.score_rows[0]["precision"] == outcome.score_rows[0]["recall"] == 1.0
        assert _sims(outcome) == _expected_sims(record)


def test_default_batches_mix_window_kinds(server: LLMTestServer) -> None:
    client, records, explanations = _setup(server, n=1)
    batches = LLMSimulator(None).batches(0, records[0].score)
    assert [len(b) for b in batches] == [10, 10]
    assert all({records[0].score[i].kind for i in b} == {"activating", "random"} for b in batches)
    assert batches == LLMSimulator(None).batches(0, records[0].score)  # deterministic: reruns hit the cache


@pytest.mark.parametrize("fault", ["wrong_length", "garbage_window", "missing_window", "shifted_window"])
def test_bad_window_is_re_asked_alone_and_recovered_aligned(server: LLMTestServer, fault: str) -> None:
    client, records, explanations = _setup(server)
    batches = LLMSimulator(None).batches(1, records[1].score)  # either may get the fault: pick a position
    target = next(j for j in range(1, 10) if all(records[1].score[b[j]].is_activating for b in batches))
    server.add_fault(fault, task="simulate", times=1, contains='\\"dog\\"', window=target)
    outcomes = _simulate(client, records, explanations)
    assert server.state.requests["simulate"] == 2 * 2 + 1  # planned batches + one re-ask
    retried = [w for w in _windows_sent(server) if len(w) == 1]
    assert len(retried) == 1
    batch = next(w for w in _windows_sent(server) if retried[0][0] in w and len(w) > 1)
    assert batch.index(retried[0][0]) == target  # the faulted window, and only it, was re-asked
    for outcome, record in zip(outcomes, records, strict=True):
        assert outcome.status == "ok", outcome.error
        assert _sims(outcome) == _expected_sims(record)  # recovered window landed in its own row


def test_persistently_bad_window_fails_the_latent_with_bounded_requests(server: LLMTestServer) -> None:
    client, records, explanations = _setup(server, parse_retries=1)
    server.add_fault("wrong_length", task="simulate", times=None, contains='\\"cat\\"', window=5)
    outcomes = _simulate(client, records, explanations, windows_per_call=20)
    failed, ok = outcomes
    assert failed.status == "failed" and not failed.score_rows and not failed.simulation_rows
    assert failed.error.startswith("parse") and "window 0" in failed.error and "values" in failed.error
    assert ok.status == "ok" and _sims(ok) == _expected_sims(records[1])
    # latent 0: its one batch, then the bad window alone (1 + parse_retries); latent 1: its one batch
    assert server.state.requests["simulate"] == (1 + 2) + 1


def test_windows_per_call_1_keeps_one_strict_request_per_window(server: LLMTestServer) -> None:
    client, records, explanations = _setup(server, parse_retries=1)
    server.add_fault("wrong_length", task="simulate", times=1, contains='\\"dog\\"')
    outcomes = _simulate(client, records, explanations, windows_per_call=1)
    assert all(o.status == "ok" for o in outcomes)
    assert server.state.requests["simulate"] == 2 * N_WINDOWS + 1  # the bad reply re-requested by the client
    assert _sims(outcomes[1]) == _expected_sims(records[1])


def test_reply_is_matched_by_window_index_not_order(server: LLMTestServer) -> None:
    client, records, explanations = _setup(server)
    server.add_fault("reversed_windows", task="simulate", times=None)
    outcomes = _simulate(client, records, explanations)
    assert server.state.requests["simulate"] == 4  # nothing to re-ask
    for outcome, record in zip(outcomes, records, strict=True):
        assert _sims(outcome) == _expected_sims(record)


def test_a_shifted_window_keeps_its_length_but_is_detected_and_re_asked(server: LLMTestServer) -> None:
    window = {"window": 0, "activations": [[i, 10 if i == 3 else 0] for i in range(6)]}
    (shifted,) = window_fault(FaultRule("shifted_window"), [dict(window)])
    assert len(shifted["activations"]) == 6  # a v2-style length check would pass it, one value off from position 3
    assert [p for p, _ in shifted["activations"]] == [0, 1, 2, 4, 5, 6]
    client, records, explanations = _setup(server)
    # two of the four 10-window batches (never a one-window re-ask: it has no window 9)
    server.add_fault("shifted_window", task="simulate", times=2, contains='"window": 9', window=4)
    outcomes = _simulate(client, records, explanations)
    assert server.state.requests["simulate"] == 2 * 2 + 2  # planned batches + one re-ask per faulted batch
    assert sum(len(w) == 1 for w in _windows_sent(server)) == 2
    for outcome, record in zip(outcomes, records, strict=True):
        assert outcome.status == "ok" and _sims(outcome) == _expected_sims(record)
        assert outcome.score_rows[0]["precision"] == outcome.score_rows[0]["recall"] == 1.0


def test_logprob_expected_values_land_on_the_right_window_and_token(server: LLMTestServer) -> None:
    server.state.logprobs = "full"  # the fake model: 0.9 on the written number, 0.1 on a neighbour
    client, records, explanations = _setup(server)
    server.add_fault("reversed_windows", task="simulate", times=1, contains='\\"cat\\"')
    outcomes = _simulate(client, records, explanations)
    assert client.logprobs_supported is True and server.state.requests["simulate"] == 4
    for outcome, record in zip(outcomes, records, strict=True):
        p_active = {row["ctx_id"]: row["p_active"] for row in outcome.simulation_rows}
        for ctx_id, expected in _expected_sims(record).items():
            want = [0.9 * 10 + 0.1 * 9 if v else 0.1 for v in expected]  # E[level] at 10 / at 0
            assert np.allclose(_sims(outcome)[ctx_id], want, atol=1e-5), ctx_id
            # P(level >= 1): 0.9 + 0.1 at 10 (its neighbour 9 is active too), 0.1 at 0 (its neighbour is 1)
            assert np.allclose(p_active[ctx_id], [1.0 if v else 0.1 for v in expected], atol=1e-6), ctx_id
        assert outcome.score_rows[0]["precision"] == outcome.score_rows[0]["recall"] == 1.0
        assert outcome.score_rows[0]["mode"] == "logprobs"


@pytest.mark.parametrize("logprobs, mode", [("full", "logprobs"), ("ignore", "written"), ("reject", "written")])
def test_mode_says_what_binarised_and_precision_recomputes_from_the_rows(server: LLMTestServer, logprobs: str,
                                                                        mode: str) -> None:
    server.state.logprobs = logprobs
    client, records, explanations = _setup(server)
    wrong = [Explanation(r.latent, "llm", 'the word "alpha"') for r in records]  # fires on filler: imperfect
    outcomes = _simulate(client, records + records, explanations + wrong)
    assert all(o.status == "ok" for o in outcomes)
    for outcome in outcomes:
        row = outcome.score_rows[0]
        assert row["mode"] == mode and row["threshold"] == 0.5
        sims = outcome.simulation_rows
        assert all((r["p_active"] is None) == (mode == "written") for r in sims)
        # the documented rule: per window, p_active > 0.5 where it is not null, else sim_acts > threshold
        y_true = np.concatenate([np.asarray(r["true_acts"], dtype=np.float32) for r in sims]) > 0
        y_pred = np.concatenate([np.asarray(r["p_active"], dtype=np.float32) > 0.5 if r["p_active"] is not None
                                 else np.asarray(r["sim_acts"], dtype=np.float32) > row["threshold"] for r in sims])
        assert precision_score(y_true, y_pred, zero_division=0) == pytest.approx(row["precision"], abs=1e-12)
        assert recall_score(y_true, y_pred, zero_division=0) == pytest.approx(row["recall"], abs=1e-12)
    assert [o.score_rows[0]["precision"] for o in outcomes[:2]] == [1.0, 1.0]
    assert all(o.score_rows[0]["precision"] == 0.0 for o in outcomes[2:])  # "alpha" never is the trigger
