"""Async client for any OpenAI-compatible chat-completions endpoint: cached, paced, retried, logged.

One `LLMClient` per run. `complete_json(...)` is the only way explainers and scorers talk to a model:

1. the logical request is hashed (`llm_cache.request_hash`); a cache hit is re-validated and returned
   without a request (reported with status "cached", latency 0, cost 0);
2. otherwise a budget reservation, the concurrency semaphore and the RPM/TPM buckets are taken, and the
   request is sent with `tenacity` retries (exponential backoff + jitter on 429/5xx/timeouts/connection
   errors and 200s whose body is cut short; a server's Retry-After / retry-after-ms wins, capped at
   `retry_max_wait_s`; `max_retries` bounds it; `timeout_s` bounds each attempt, so a stalled server
   is one retried attempt, not a hang);
3. the reply is parsed (structured output where supported, else the tolerant parser) and validated by
   the caller's function; a reply that fails is re-requested `parse_retries` times, then the call fails;
4. only validated replies are cached.

Every HTTP attempt and every cache hit is reported through `on_call(row)` with the `llm_calls`
columns; status is "ok", "cached", "retry" (failed attempt that will be retried), "failed" (the attempt
after which the call gave up: retries exhausted, not retryable, or the last reply that did not parse) or
"invalid" (a reply that did not parse/validate and is asked again). Capabilities (JSON schema / JSON mode /
logprobs) are detected on the first request that needs them and remembered by the client. Request parameters are
built per request from the immutable settings; the only mutable state is capability flags, counters
and per-event-loop connection objects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletion
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from explain.llm.cache import DirectoryResponseCache, MemoryResponseCache, ResponseCache, request_hash
from explain.llm.concurrency import gather_with_progress, run_in_fresh_loop
from explain.llm.limits import BudgetExhausted, CostBudget, TokenBucket, approx_tokens
from explain.llm.parse import LLMParseError, parse_json_reply
from explain.llm.settings import LLMSettings, ModelPrice, PriceTable
from explain.llm.transport import (
    CallRecorder,
    CallStats,
    RawReply,
    is_retryable,
    malformed_response,
    request_kwargs,
    response_format_rejected,
    retry_after_seconds,
    to_raw_reply,
)

__all__ = [
    "BudgetExhausted", "CallStats", "CostBudget", "DirectoryResponseCache", "LLMCallError", "LLMClient",
    "LLMReply", "LLMSettings", "MemoryResponseCache", "ModelPrice", "PriceTable", "CallRecorder",
    "gather_with_progress",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
_JSON_LEVELS = ["schema", "json_object", "off"]
_PLACEHOLDER_KEY = "no-key-needed"


class LLMCallError(RuntimeError):
    """A call that gave up: `kind` is "http" (retries exhausted / not retryable), "parse" or "refusal".

    Carries the usage the failed attempts consumed, so failed rows still account their cost.
    """

    def __init__(self, kind: str, message: str, prompt_tokens: int = 0, completion_tokens: int = 0,
                 cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.kind = kind
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost_usd = cost_usd


@dataclass
class LLMReply:
    """A validated reply. Usage/cost sum every request this call made (0 for a cache hit)."""

    value: Any
    text: str
    request_hash: str
    cached: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    logprobs: list[dict] | None = None
    """Per generated token: {"token": str, "top": {alternative: logprob}}; None if not available."""


@dataclass
class _LoopState:
    api: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore
    rpm: TokenBucket
    tpm: TokenBucket


@dataclass
class _CallSpec:
    messages: list[dict[str, str]]
    purpose: str
    schema: dict | None
    want_logprobs: bool
    max_tokens: int
    key: str
    budget: CostBudget | None
    usage: list[int] = field(default_factory=lambda: [0, 0])
    cost: list[float] = field(default_factory=lambda: [0.0])


class LLMClient:
    """See the module docstring. `cache` and `on_call` are optional; the key comes from the env."""

    def __init__(self, settings: LLMSettings, cache: ResponseCache | None = None,
                 on_call: Callable[[dict], None] | None = None) -> None:
        self.settings = settings
        self.cache = cache
        self.on_call = on_call
        self._api_key = self._read_key(settings)
        self._json_level = 0 if settings.json_mode in ("auto", "schema") else _JSON_LEVELS.index(
            settings.json_mode)
        self.logprobs_supported: bool | None = None if settings.top_logprobs > 0 else False
        """None until the first request that wants logprobs tells us."""
        self.stats = CallStats()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary())
        if settings.prices.price_for(settings.model) is None:
            log.info("model %s is not in the price table: costs count as 0", settings.model)

    @staticmethod
    def _read_key(settings: LLMSettings) -> str:
        key = os.environ.get(settings.api_key_env, "")
        if key:
            return key
        if settings.base_url:
            return _PLACEHOLDER_KEY  # local servers (vLLM, Ollama, llama.cpp) usually need none
        raise ValueError(f"no API key: set ${settings.api_key_env} or give a base_url for a local server")

    def __repr__(self) -> str:
        return f"LLMClient(model={self.settings.model!r}, base_url={self.settings.base_url!r})"

    @property
    def json_mode_in_use(self) -> str:
        """The structured-output mode requests are currently sent with (after any fallback)."""
        return _JSON_LEVELS[self._json_level]

    def scrub(self, text: str) -> str:
        """`text` with the API key masked (defence in depth for error strings from servers)."""
        if self._api_key != _PLACEHOLDER_KEY and len(self._api_key) >= 4:
            return text.replace(self._api_key, "***")
        return text

    # ---------------------------------------------------------------- public entry point
    async def complete_json(self, messages: list[dict[str, str]], *, purpose: str,
                            validate: Callable[[Any], T], schema: dict | None = None,
                            want_logprobs: bool = False, max_tokens: int | None = None,
                            budget: CostBudget | None = None) -> LLMReply:
        """Send `messages`, parse the reply's JSON and return `validate(parsed)` as `LLMReply.value`.

        `validate` raises LLMParseError for a reply of the wrong shape. Raises LLMCallError when the
        call gives up and BudgetExhausted when `budget` cannot cover the next request.
        """
        max_tokens = max_tokens or self.settings.max_tokens
        # what is asked, not what the caller would like: top_logprobs 0 means "never ask", and a reply with
        # logprobs must not be served from the cache to a run that asks for none (or for fewer)
        want_logprobs = bool(want_logprobs) and self.settings.top_logprobs > 0
        params = {"temperature": self.settings.temperature, "max_tokens": max_tokens, "schema": schema,
                  "logprobs": want_logprobs}
        if want_logprobs:
            params["top_logprobs"] = self.settings.top_logprobs
        key = request_hash(self.settings.model, messages, params)
        hit = self._from_cache(key, purpose, validate)
        if hit is not None:
            return hit
        spec = _CallSpec(messages, purpose, schema, want_logprobs, max_tokens, key, budget)
        return await self._request_validated(spec, validate)

    def _from_cache(self, key: str, purpose: str, validate: Callable[[Any], T]) -> LLMReply | None:
        entry = self.cache.get(key) if self.cache is not None else None
        if entry is None:
            return None
        try:
            value = validate(parse_json_reply(entry["text"]))
        except (LLMParseError, KeyError, TypeError):
            return None  # stale entry (validator changed): ask again
        self.stats.add(cached=1)
        self._report(key, purpose, entry.get("prompt_tokens", 0), entry.get("completion_tokens", 0),
                     0.0, "cached", "")
        return LLMReply(value, entry["text"], key, True, logprobs=entry.get("logprobs"))

    async def _request_validated(self, spec: _CallSpec, validate: Callable[[Any], T]) -> LLMReply:
        last_error = ""
        for asked in range(self.settings.parse_retries + 1):
            raw = await self._request_with_retries(spec)
            if raw.refusal:
                self._report_reply(spec, raw, "failed", f"refusal: {raw.refusal[:200]}")
                raise self._call_error(spec, "refusal", f"model refused: {raw.refusal[:200]}")
            try:
                value = validate(parse_json_reply(raw.text))
            except LLMParseError as exc:
                last_error = str(exc)
                # the last bad reply is the call's give-up: logged as "failed", so llm_calls says which gave up
                self._report_reply(spec, raw, "failed" if asked == self.settings.parse_retries else "invalid",
                                   last_error)
                continue
            self._report_reply(spec, raw, "ok", "")
            if self.cache is not None:
                self.cache.put(spec.key, {"model": self.settings.model, "text": raw.text,
                                          "prompt_tokens": raw.prompt_tokens,
                                          "completion_tokens": raw.completion_tokens, "logprobs": raw.logprobs})
            return LLMReply(value, raw.text, spec.key, False, spec.usage[0], spec.usage[1], spec.cost[0],
                            raw.logprobs)
        raise self._call_error(spec, "parse", f"unparseable reply: {last_error}")

    def _report_reply(self, spec: _CallSpec, raw: RawReply, status: str, error: str) -> None:
        self._report(spec.key, spec.purpose, raw.prompt_tokens, raw.completion_tokens, raw.latency_s, status,
                     error)

    def _call_error(self, spec: _CallSpec, kind: str, message: str) -> LLMCallError:
        return LLMCallError(kind, self.scrub(message), spec.usage[0], spec.usage[1], spec.cost[0])

    # ---------------------------------------------------------------- retries
    async def _request_with_retries(self, spec: _CallSpec) -> RawReply:
        retrying = AsyncRetrying(stop=stop_after_attempt(self.settings.max_retries + 1), wait=self._wait,
                                 retry=retry_if_exception(is_retryable), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(spec, final=attempt.retry_state.attempt_number
                                               > self.settings.max_retries)
        except openai.APIError as exc:
            raise self._call_error(spec, "http", f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        server_says = retry_after_seconds(exc)
        if server_says is not None:
            return min(server_says, self.settings.retry_max_wait_s)
        backoff = wait_exponential_jitter(initial=self.settings.retry_initial_wait_s,
                                          max=self.settings.retry_max_wait_s,
                                          jitter=self.settings.retry_initial_wait_s)
        return backoff(state)

    # ---------------------------------------------------------------- one HTTP attempt
    async def _attempt(self, spec: _CallSpec, final: bool) -> RawReply:
        state = self._loop_state()
        worst = self._worst_case_cost(spec)
        if spec.budget is not None and not spec.budget.try_reserve(worst):
            raise BudgetExhausted(f"budget of ${spec.budget.max_usd:.4f} reached")
        actual = 0.0
        try:
            async with state.semaphore:
                await state.rpm.acquire(1)
                await state.tpm.acquire(self._estimated_tokens(spec))
                raw = await self._send_adapting(state, spec, final)
            actual = self.settings.prices.cost(self.settings.model, raw.prompt_tokens, raw.completion_tokens)
            spec.usage[0] += raw.prompt_tokens
            spec.usage[1] += raw.completion_tokens
            spec.cost[0] += actual
            self.stats.add(requests=1, prompt_tokens=raw.prompt_tokens,
                           completion_tokens=raw.completion_tokens, cost_usd=actual)
            return raw
        finally:
            if spec.budget is not None:
                spec.budget.settle(worst, actual)

    async def _send_adapting(self, state: _LoopState, spec: _CallSpec, final: bool) -> RawReply:
        """Send once; on a 400 about response_format/logprobs, downgrade that capability and resend."""
        while True:
            level = self._json_level
            use_logprobs = spec.want_logprobs and self.logprobs_supported is not False
            kwargs = request_kwargs(self.settings, spec.messages, spec.max_tokens, spec.schema,
                                    _JSON_LEVELS[level], use_logprobs, spec.purpose)
            started = time.monotonic()
            try:
                # the plain POST skips the SDK's per-call parameter transform (~5 ms CPU per request);
                # errors, retries-off and response parsing are the same as chat.completions.create
                response = await state.api.post("/chat/completions", body=kwargs, cast_to=ChatCompletion)
            except openai.BadRequestError as exc:
                if self._downgrade(exc, level, use_logprobs):
                    self._report(spec.key, spec.purpose, 0, 0, time.monotonic() - started, "retry",
                                 f"capability fallback: {exc}")
                    continue
                self._report_failure(spec, started, exc, final=True)
                raise
            except openai.APIError as exc:
                self._report_failure(spec, started, exc, final=final or not is_retryable(exc))
                raise
            except ValueError as exc:  # the SDK's JSONDecodeError on a body cut short: retryable
                wrapped = malformed_response(exc, f"{state.api.base_url}chat/completions")
                self._report_failure(spec, started, wrapped, final=final)
                raise wrapped from None
            raw = to_raw_reply(response)
            raw.latency_s = time.monotonic() - started  # reported once the reply is validated
            if use_logprobs and self.logprobs_supported is None:
                self.logprobs_supported = raw.logprobs is not None
            return raw

    def _downgrade(self, exc: openai.BadRequestError, level: int, used_logprobs: bool) -> bool:
        message = str(exc).lower()
        if used_logprobs and "logprob" in message:
            self.logprobs_supported = False
            log.info("server rejected logprobs: simulator falls back to the reply's numbers")
            return True
        if (self.settings.json_mode == "auto" and level < len(_JSON_LEVELS) - 1
                and response_format_rejected(message)):
            self._json_level = max(self._json_level, level + 1)
            log.info("server rejected %s output: falling back to %s", _JSON_LEVELS[level],
                     _JSON_LEVELS[self._json_level])
            return True
        return False

    def _report_failure(self, spec: _CallSpec, started: float, exc: Exception, final: bool) -> None:
        status = "failed" if final else "retry"
        message = self.scrub(f"{type(exc).__name__}: {exc}")[:500]
        self._report(spec.key, spec.purpose, 0, 0, time.monotonic() - started, status, message)
        log.warning("LLM %s request %s (%s): %s", spec.purpose, status, spec.key[:12], message)

    # ---------------------------------------------------------------- helpers
    def _estimated_tokens(self, spec: _CallSpec) -> int:
        return sum(approx_tokens(m["content"]) for m in spec.messages) + spec.max_tokens

    def _worst_case_cost(self, spec: _CallSpec) -> float:
        prompt = sum(approx_tokens(m["content"]) for m in spec.messages)
        return self.settings.prices.cost(self.settings.model, prompt, spec.max_tokens)

    def _report(self, key: str, purpose: str, prompt_tokens: int, completion_tokens: int, latency_s: float,
                status: str, error: str) -> None:
        if self.on_call is None:
            return
        row = {"request_hash": key, "model": self.settings.model, "purpose": purpose,
               "prompt_tokens": int(prompt_tokens), "completion_tokens": int(completion_tokens),
               "latency_s": float(latency_s), "status": status, "error": self.scrub(error),
               "created_at": datetime.now(UTC)}
        try:
            self.on_call(row)
        except Exception:  # a broken sink must not fail the call it reports
            log.exception("on_call sink failed")

    def _loop_state(self) -> _LoopState:
        """Connection pool, semaphore and buckets of the running event loop (asyncio objects are loop-bound)."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            api = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.settings.base_url,
                                     timeout=self.settings.timeout_s, max_retries=0)
            state = _LoopState(api, asyncio.Semaphore(self.settings.max_concurrency),
                               TokenBucket(self.settings.requests_per_minute),
                               TokenBucket(self.settings.tokens_per_minute))
            self._loops[loop] = state
        return state

    async def aclose(self) -> None:
        """Close the running loop's connections (call before the loop ends)."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.api.close()

    def run_sync(self, make_coro: Callable[[], Awaitable[T]]) -> T:
        """Run `make_coro()` to completion from sync code (a fresh loop, in a thread if one is running)."""
        async def main() -> T:
            try:
                return await make_coro()
            finally:
                await self.aclose()

        return run_in_fresh_loop(main)
