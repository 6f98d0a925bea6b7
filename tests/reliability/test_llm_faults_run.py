"""A whole LLM run through ~30% failing requests (tests/reliability/fault_run.py): it completes,
every selected latent has an explanation row (ok, or failed with a reason), every ok one is scored, no
traceback reaches the console, each fault costs exactly one more request (counted by the server), and
the spend stays under --max-cost-usd."""

from __future__ import annotations

import re

import polars as pl
import pytest
from fault_run import (  # noqa: F401
    FAULT_SCHEDULE,
    LLM_MODEL,
    MAX_CONCURRENCY,
    MAX_COST_USD,
    N_LATENTS,
    fault_run_fixture,
)

from explain.llm.settings import PriceTable
from flows.store import Store

pytestmark = pytest.mark.integration


def _llm_explanations(store: Store) -> pl.DataFrame:
    return store.read("explanations").filter(pl.col("explainer") == "llm")


def test_the_run_completes_without_a_traceback(fault_run):
    done = fault_run.done
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr


def test_every_latent_has_an_explanation_and_every_ok_one_a_score(fault_run):
    store = Store(fault_run.store)
    explanations = _llm_explanations(store)
    assert explanations.height == N_LATENTS
    assert explanations["latent"].n_unique() == N_LATENTS
    failed = explanations.filter(pl.col("status") != "ok")
    assert (failed["error"].str.len_chars() > 0).all(), failed  # a failure always says why
    ok = explanations.filter(pl.col("status") == "ok")["latent"].to_list()
    scores = store.read("scores").filter((pl.col("explainer") == "llm") & (pl.col("scorer") == "simulation")
                                         & (pl.col("population") == "sampled"))
    assert not scores.select(["latent", "score_key"]).is_duplicated().any()
    assert set(scores["latent"]) <= set(ok)
    # A latent whose simulation gave up (e.g. prose twice for one request) has no score row but a
    # `score_failures` row with its reason under the same key (a rerun retries it), and one console line.
    unscored = sorted(set(ok) - set(scores["latent"]))
    assert len(unscored) <= 0.2 * len(ok)
    # with no parts (nothing gave up) the read is the table's empty schema, so the checks below still apply
    failures = store.read("score_failures").filter((pl.col("explainer") == "llm") & (pl.col("scorer") == "simulation"))
    assert set(failures["latent"]) == set(unscored)
    assert (failures["status"] == "failed").all() and (failures["reason"].str.len_chars() > 0).all()
    assert set(failures["score_key"]) <= set(scores["score_key"])
    for latent in unscored:
        assert re.search(rf"llm/simulation latent {latent} failed: \w+: .+", fault_run.done.stderr), latent


def test_each_fault_cost_exactly_one_more_request(fault_run):
    state = fault_run.server.state
    calls = Store(fault_run.store).read("llm_calls")
    sent = calls.filter(pl.col("status") != "cached")
    faults = sum(state.faults_served.values())
    assert set(state.faults_served) == {f for f in FAULT_SCHEDULE if f is not None}  # every kind was injected
    assert faults >= 0.25 * state.total
    ok = calls.filter(pl.col("status") == "ok").height
    # Slack, both ways, for what the server and the client can see differently: a request timed out
    # client-side before the server read it (logged, never counted: the timeouts beyond the stalls), and
    # the in-flight requests of a latent whose other request gave up (cancelled: counted, never logged).
    timeouts = sent.filter(pl.col("error").str.contains("APITimeoutError")).height
    spurious = max(0, timeouts - state.faults_served["stall"])
    by_request = sent.group_by("request_hash").agg(pl.col("status"))
    unfinished = by_request.filter(~pl.col("status").list.contains("ok")).height
    cancelled = MAX_CONCURRENCY * unfinished
    assert unfinished <= 0.02 * by_request.height  # 5 retries outlast a 30% schedule nearly always
    assert state.total - cancelled <= sent.height <= state.total + spurious  # the call log is complete
    assert faults <= state.total - ok <= faults + cancelled  # bounded: one more request per fault


def test_one_warning_line_per_failed_attempt_at_most(fault_run):
    warnings = [line for line in fault_run.done.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) <= sum(fault_run.server.state.faults_served.values())


def test_the_spend_stays_under_max_cost(fault_run):
    calls = Store(fault_run.store).read("llm_calls").filter(pl.col("status") != "cached")
    prices = PriceTable()
    spent = sum(prices.cost(LLM_MODEL, p, c) for p, c in zip(calls["prompt_tokens"], calls["completion_tokens"],
                                                             strict=True))
    assert 0 < spent <= MAX_COST_USD
