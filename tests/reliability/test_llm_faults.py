"""The LLM client against a server that fails in every way a real one does (tests/fixtures/llm_server.py):
each fault is survived by a bounded number of retries, a server's Retry-After is honoured, and a call that
never succeeds becomes an error the explainer turns into a failed row (never an exception of the stage)."""

from __future__ import annotations

import asyncio
import time

import pytest
from fixtures.llm_server import LLMTestServer

from explain.llm.client import BudgetExhausted, CostBudget, LLMCallError, LLMClient, LLMSettings
from explain.llm.parse import expect_field
from explain.llm.transport import CallRecorder

EXPLAIN_USER = 'BEGIN DATA\n{"task": "explain", "activating_examples": [{"text": "a <<cat>> sat"}]}\nEND DATA'


def _client(server: LLMTestServer, recorder: CallRecorder, model: str = "fake", **overrides) -> LLMClient:
    fields = {"retry_initial_wait_s": 0.0, "retry_max_wait_s": 5.0, "timeout_s": 1.0, "max_retries": 3,
              "parse_retries": 1, "max_concurrency": 4, **overrides}
    settings = LLMSettings(model=model, base_url=server.base_url, **fields)
    return LLMClient(settings, on_call=recorder)


def _explain(client: LLMClient) -> str:
    async def call() -> str:
        reply = await client.complete_json([{"role": "user", "content": EXPLAIN_USER}], purpose="explain",
                                           validate=lambda v: expect_field(v, "explanation", str))
        return reply.value

    return client.run_sync(call)


@pytest.mark.parametrize("fault", ["429", "500", "stall", "truncated_body", "prose"])
def test_one_fault_costs_exactly_one_more_request(fault):
    with LLMTestServer() as server:
        server.state.schedule = [fault, None, None, None]  # the first request fails, the retry succeeds
        server.state.stall_s, server.state.retry_after = 3.0, "0"
        recorder = CallRecorder()
        assert _explain(_client(server, recorder)) == 'the word "cat"'
        assert server.state.total == 2
        assert server.state.faults_served[fault] == 1
        statuses = [r["status"] for r in recorder.rows]
        assert statuses == (["invalid", "ok"] if fault == "prose" else ["retry", "ok"])


def test_truncated_body_is_reported_as_a_malformed_response_not_a_json_error():
    with LLMTestServer() as server:
        server.state.schedule = ["truncated_body"]
        recorder = CallRecorder()
        with pytest.raises(LLMCallError) as caught:
            _explain(_client(server, recorder))
        assert caught.value.kind == "http"
        assert "MalformedResponse" in str(caught.value)
        assert server.state.total == 4  # max_retries 3 + the first attempt, then it gives up


def test_retry_after_is_honoured():
    with LLMTestServer() as server:
        server.state.schedule = ["429", None]
        server.state.retry_after = "1.5"
        started = time.monotonic()
        assert _explain(_client(server, CallRecorder())) == 'the word "cat"'
        assert time.monotonic() - started >= 1.5  # the backoff alone would have waited 0 s


def test_stall_is_cut_by_the_per_request_timeout():
    with LLMTestServer() as server:
        server.state.schedule = ["stall", None]
        server.state.stall_s = 25.0
        started = time.monotonic()
        assert _explain(_client(server, CallRecorder(), timeout_s=0.5)) == 'the word "cat"'
        assert time.monotonic() - started < 5.0  # one 0.5 s timeout and a retry, not the 25 s stall


@pytest.mark.parametrize(("fault", "requests"), [("500", 4), ("prose", 2)])
def test_retries_are_bounded(fault, requests):
    """HTTP faults: max_retries + 1 requests; unparseable replies: parse_retries + 1."""
    with LLMTestServer() as server:
        server.state.schedule = [fault]
        recorder = CallRecorder()
        with pytest.raises(LLMCallError) as caught:
            _explain(_client(server, recorder))
        assert caught.value.kind == ("http" if fault == "500" else "parse")
        assert server.state.total == requests == len(recorder.rows)
        assert recorder.rows[-1]["status"] == "failed"  # the give-up is in llm_calls, with its reason
        assert recorder.rows[-1]["error"]


def test_concurrent_calls_through_a_30_percent_fault_schedule_all_succeed():
    schedule = ["429", None, None, "500", None, None, "truncated_body", None, None, "prose",
                None, None, "stall", None, None, None, None, None, "429", None]
    with LLMTestServer() as server:
        server.state.schedule, server.state.stall_s, server.state.retry_after = schedule, 3.0, "0"
        client = _client(server, CallRecorder(), timeout_s=0.5, max_retries=5, parse_retries=2)

        async def many() -> list[str]:
            messages = [[{"role": "user", "content": EXPLAIN_USER.replace("cat", f"w{i}")}] for i in range(30)]
            replies = await asyncio.gather(*[
                client.complete_json(m, purpose="explain", validate=lambda v: expect_field(v, "explanation", str))
                for m in messages])
            return [r.value for r in replies]

        assert client.run_sync(many) == [f'the word "w{i}"' for i in range(30)]
        faults = sum(server.state.faults_served.values())
        assert server.state.total == 30 + faults  # every fault cost exactly one extra request, no more
        assert faults >= 0.25 * server.state.total


def test_the_budget_holds_through_faults_and_retries():
    """Failed attempts that consumed tokens (prose) count too; concurrent retries never overshoot."""
    with LLMTestServer() as server:
        server.state.schedule, server.state.retry_after = ["prose", "429", None, "500", None, "truncated_body"], "0"
        client = _client(server, CallRecorder(), model="gpt-4o-mini", max_tokens=40, max_retries=5)
        one_call = client.settings.prices.cost("gpt-4o-mini", 30, 40)  # ~ one request's worst case
        budget = CostBudget(8 * one_call)

        async def many() -> list[str]:
            async def one(i: int) -> str:
                try:
                    await client.complete_json([{"role": "user", "content": EXPLAIN_USER.replace("cat", f"w{i}")}],
                                               purpose="explain", budget=budget,
                                               validate=lambda v: expect_field(v, "explanation", str))
                    return "ok"
                except BudgetExhausted:
                    return "budget"
            return list(await asyncio.gather(*[one(i) for i in range(30)]))

        outcomes = client.run_sync(many)
        assert "ok" in outcomes and "budget" in outcomes
        assert 0 < budget.spent_usd <= budget.max_usd
        assert client.stats.cost_usd == pytest.approx(budget.spent_usd)  # every request's usage was charged
