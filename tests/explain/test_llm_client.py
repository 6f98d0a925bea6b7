"""LLM client against the local fake server: faults, bounded retries, capability fallback, key hygiene."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import httpx2
import openai
import pytest
from fixtures.llm import make_client, planted_records
from fixtures.llm_server import LLMTestServer

from explain.explainers.llm import LLMExplainer
from explain.llm.cache import DirectoryResponseCache
from explain.llm.client import LLMClient, LLMSettings
from explain.llm.transport import retry_after_seconds
from score.simulation import SimulationScorer
from score.simulators.llm import LLMSimulator

N = 4


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer() as srv:
        yield srv


def _explain(client: LLMClient, n: int = N) -> list:
    return LLMExplainer(client).explain_many(planted_records(n))


@pytest.mark.parametrize("fault", ["429", "500", "slow", "truncated", "prose"])
def test_transient_fault_is_retried_once_and_no_latent_is_lost(server: LLMTestServer, fault: str) -> None:
    server.add_fault(fault, task="explain", times=1, contains="<<cat>>", slow_s=2.0)
    client, recorder = make_client(server.base_url, timeout_s=0.5)
    explanations = _explain(client)
    assert [e.status for e in explanations] == ["ok"] * N
    assert explanations[0].text == 'the word "cat"'
    assert server.state.requests["explain"] == N + 1  # exactly one extra request
    assert recorder.requests() == N + 1
    assert {r["status"] for r in recorder.rows} <= {"ok", "retry", "invalid"}


@pytest.mark.parametrize("fault, kind, requests", [("500", "http", 4), ("429", "http", 4), ("prose", "parse", 2),
                                                   ("truncated", "parse", 2), ("refusal", "refusal", 1)])
def test_persistent_fault_fails_one_latent_with_bounded_requests(
    server: LLMTestServer, fault: str, kind: str, requests: int
) -> None:
    server.add_fault(fault, task="explain", times=None, contains="<<cat>>")
    client, recorder = make_client(server.base_url, max_retries=3, parse_retries=1)
    explanations = _explain(client)
    assert len(explanations) == N
    failed = explanations[0]
    assert failed.status == "failed" and failed.error.startswith(kind) and failed.text == ""
    assert [e.status for e in explanations[1:]] == ["ok"] * (N - 1)
    assert server.state.requests["explain"] == (N - 1) + requests


def test_structured_output_fallback_is_detected_once(server: LLMTestServer) -> None:
    server.state.reject_formats = {"json_schema", "json_object"}
    client, recorder = make_client(server.base_url, max_concurrency=1)
    explanations = _explain(client)
    assert all(e.ok for e in explanations)
    assert client.json_mode_in_use == "off"
    assert server.state.requests["explain"] == N + 2  # one 400 per downgraded mode, then plain text
    assert sum(r["status"] == "retry" for r in recorder.rows) == 2


@pytest.mark.parametrize("mode, extra", [("reject", 1), ("ignore", 0), ("full", 0)])
def test_logprob_support_is_detected_not_assumed(server: LLMTestServer, mode: str, extra: int) -> None:
    server.state.logprobs = mode
    records = planted_records(1)
    client, _ = make_client(server.base_url, max_concurrency=1)
    explanations = LLMExplainer(client).explain_many(records)
    server.reset_counts()
    outcomes = SimulationScorer(LLMSimulator(client)).score_many(explanations, {0: records[0]})
    assert outcomes[0].status == "ok" and outcomes[0].score_rows[0]["precision"] == 1.0
    assert client.logprobs_supported is (mode == "full")
    planned = len(LLMSimulator(None).plan(explanations[0].text, records[0]))
    assert planned == 1 and server.state.requests["simulate"] == planned + extra  # 10 windows, one request
    sims = [v for row in outcomes[0].simulation_rows for v in row["sim_acts"]]
    assert (0 < min(sims) < 0.5) if mode == "full" else (min(sims) == 0.0)  # expected value vs integers


def test_api_key_never_reaches_rows_logs_or_cache(server: LLMTestServer, monkeypatch, caplog, tmp_path) -> None:  # noqa: ANN001
    sentinel = "sk-SENTINEL-do-not-leak-1234567890"
    monkeypatch.setenv("LATENT_ATLAS_TEST_KEY", sentinel)
    server.add_fault("500", task="explain", times=1)
    server.add_fault("429", task="simulate", times=1)
    server.add_fault("prose", task="explain", times=None, contains="<<dog>>")
    caplog.set_level(logging.DEBUG)
    records = planted_records(3)
    client, recorder = make_client(server.base_url, cache=DirectoryResponseCache(tmp_path / "cache"),
                                   api_key_env="LATENT_ATLAS_TEST_KEY")
    explanations = LLMExplainer(client).explain_many(records)
    outcomes = SimulationScorer(LLMSimulator(client)).score_many(explanations, {r.latent: r for r in records})
    assert f"Bearer {sentinel}" in server.state.auth_headers  # the key was used...
    haystacks = [repr(recorder.rows), caplog.text, repr(explanations), repr(outcomes), repr(client),
                 client.settings.model_dump_json()]
    haystacks += [p.read_text() for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert not any(sentinel in h for h in haystacks)  # ...and is nowhere else
    assert any(r["status"] == "retry" for r in recorder.rows)


def test_missing_key_without_base_url_is_a_clear_error(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        LLMClient(LLMSettings(api_key_env="NO_SUCH_KEY_VAR"))
    LLMClient(LLMSettings(api_key_env="NO_SUCH_KEY_VAR", base_url="http://127.0.0.1:9/v1"))  # local: fine


def test_retry_after_is_honoured_over_backoff() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")

    def error(headers: dict[str, str]) -> openai.RateLimitError:
        return openai.RateLimitError("slow down", response=httpx2.Response(429, headers=headers, request=request),
                                     body=None)

    assert retry_after_seconds(error({"retry-after": "7"})) == 7.0
    assert retry_after_seconds(error({"retry-after-ms": "250", "retry-after": "7"})) == 0.25
    assert retry_after_seconds(error({})) is None
    client = LLMClient(LLMSettings(base_url="http://127.0.0.1:9/v1", retry_initial_wait_s=0.01,
                                   retry_max_wait_s=30))

    def state(exc: Exception) -> SimpleNamespace:
        return SimpleNamespace(outcome=SimpleNamespace(exception=lambda: exc), attempt_number=1)

    assert client._wait(state(error({"retry-after": "7"}))) == 7.0  # type: ignore[arg-type]
    assert client._wait(state(error({"retry-after": "600"}))) == 30.0  # type: ignore[arg-type]
    assert client._wait(state(error({}))) < 1.0  # type: ignore[arg-type]
