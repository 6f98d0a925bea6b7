"""Wire-level helpers of the LLM client: request parameters, reply extraction, error classification."""

from __future__ import annotations

import email.utils
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from explain.llm.settings import LLMSettings

_RETRYABLE_STATUS = {408, 409, 429}


@dataclass
class RawReply:
    """What one successful HTTP response gave us."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict] | None
    refusal: str
    finish_reason: str
    latency_s: float = 0.0


class CallStats:
    """Counters over a client's lifetime (thread-safe): requests sent, cache hits, tokens, USD."""

    def __init__(self) -> None:
        self.requests = 0
        self.cached = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self._lock = threading.Lock()

    def add(self, requests: int = 0, cached: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0,
            cost_usd: float = 0.0) -> None:
        with self._lock:
            self.requests += requests
            self.cached += cached
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.cost_usd += cost_usd

    def as_dict(self) -> dict[str, float]:
        return {"requests": self.requests, "cached": self.cached, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd}


class CallRecorder:
    """An `on_call` sink that keeps the `llm_calls` rows in memory (flows appends them to the store)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def __call__(self, row: dict) -> None:
        self.rows.append(row)

    def requests(self) -> int:
        """HTTP requests made (every row that is not a cache hit)."""
        return sum(1 for r in self.rows if r["status"] != "cached")


class MalformedResponse(openai.APIConnectionError):
    """A reply whose HTTP body is not a whole JSON document (a 200 cut short by a proxy or a dying server).

    The SDK raises a bare JSONDecodeError for it; as a connection error it is retried like a dropped
    connection (`is_retryable`), since the same request usually succeeds when sent again.
    """


def malformed_response(exc: ValueError, url: str) -> MalformedResponse:
    """`exc` (the SDK's JSON decoding error) as a retryable `MalformedResponse` for a request to `url`."""
    return MalformedResponse(message=f"malformed response body ({exc})", request=httpx.Request("POST", url))


def request_kwargs(settings: LLMSettings, messages: list[dict[str, str]], max_tokens: int,
                   schema: dict | None, json_level: str, logprobs: bool, purpose: str) -> dict[str, Any]:
    """Keyword arguments for `chat.completions.create`, built fresh for every request."""
    kwargs: dict[str, Any] = {"model": settings.model, "messages": messages,
                              "temperature": settings.temperature, "max_tokens": max_tokens}
    if json_level == "schema" and schema is not None:
        kwargs["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": purpose, "schema": schema, "strict": True}}
    elif json_level in ("schema", "json_object"):
        kwargs["response_format"] = {"type": "json_object"}
    if logprobs:
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = settings.top_logprobs
    return kwargs


def to_raw_reply(response: Any) -> RawReply:
    """Text, usage, logprobs and refusal of a ChatCompletion (tolerant of servers omitting fields)."""
    choice = response.choices[0] if response.choices else None
    message = choice.message if choice is not None else None
    usage = getattr(response, "usage", None)
    return RawReply(
        text=(message.content or "") if message is not None else "",
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        logprobs=_logprobs(choice),
        refusal=(getattr(message, "refusal", None) or "") if message is not None else "",
        finish_reason=(choice.finish_reason or "") if choice is not None else "",
    )


def _logprobs(choice: Any) -> list[dict] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [{"token": item.token,
             "top": {alt.token: float(alt.logprob) for alt in (item.top_logprobs or [])}
             or {item.token: float(item.logprob)}}
            for item in content]


def is_retryable(exc: BaseException) -> bool:
    """429 (except an exhausted quota), 408/409, 5xx, timeouts, connection errors and cut-off bodies."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError and MalformedResponse
        return True
    if isinstance(exc, openai.APIStatusError):
        if getattr(exc, "code", None) == "insufficient_quota":
            return False  # retrying cannot fix a billing problem
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return False


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The wait a server asked for (retry-after-ms, then Retry-After seconds or HTTP date), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def response_format_rejected(message: str) -> bool:
    """Does a 400's message complain about structured output (so a plainer mode may work)?"""
    return any(word in message for word in ("response_format", "json_schema", "json_object", "json mode"))
