"""Configuration of the LLM client: endpoint, limits, retries, output mode and the price table.

Nothing here holds a secret: the API key is read from the environment variable named by `api_key_env`
when the client is created, and never enters a settings dump, a log line, a table row or a cache file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JsonMode = Literal["auto", "schema", "json_object", "off"]


class ModelPrice(BaseModel):
    """USD per million tokens for one model."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    prompt_per_m: float = 0.0
    """USD per 1M prompt (input) tokens."""
    completion_per_m: float = 0.0
    """USD per 1M completion (output) tokens."""


def _default_prices() -> dict[str, ModelPrice]:
    # Public list prices (USD / 1M tokens) when this table was written; override for your account.
    return {
        "gpt-4o-mini": ModelPrice(prompt_per_m=0.15, completion_per_m=0.60),
        "gpt-4o": ModelPrice(prompt_per_m=2.50, completion_per_m=10.00),
        "gpt-4.1-nano": ModelPrice(prompt_per_m=0.10, completion_per_m=0.40),
        "gpt-4.1-mini": ModelPrice(prompt_per_m=0.40, completion_per_m=1.60),
        "gpt-4.1": ModelPrice(prompt_per_m=2.00, completion_per_m=8.00),
    }


class PriceTable(BaseModel):
    """Per-model prices; a model matches its exact name, else the longest listed prefix
    (so "gpt-4o-mini-2024-07-18" uses "gpt-4o-mini"). Unknown models cost 0 (local servers)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)
    """Model name (or name prefix) -> price."""

    def price_for(self, model: str) -> ModelPrice | None:
        """The price entry used for `model`, or None when the model is not listed."""
        if model in self.prices:
            return self.prices[model]
        prefixes = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD cost of one call's usage."""
        price = self.price_for(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price.prompt_per_m + completion_tokens * price.completion_per_m) / 1e6


class LLMSettings(BaseModel):
    """How to reach and pace an OpenAI-compatible chat-completions endpoint."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    model: str = "gpt-4o-mini"
    """Model name sent to the server (also the price-table key)."""
    base_url: str | None = None
    """Endpoint base URL, e.g. http://localhost:8000/v1 for vLLM/Ollama/llama.cpp; None = OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (the key itself is never stored)."""
    max_concurrency: int = Field(default=16, ge=1)
    """Requests in flight at once."""
    requests_per_minute: float | None = Field(default=None, gt=0)
    """Requests-per-minute limit (None = unlimited)."""
    tokens_per_minute: float | None = Field(default=None, gt=0)
    """Tokens-per-minute limit, counting estimated prompt + max completion tokens (None = unlimited)."""
    max_retries: int = Field(default=5, ge=0)
    """Retries after the first attempt on 429/5xx/timeouts/connection errors (bounded)."""
    retry_initial_wait_s: float = Field(default=1.0, ge=0)
    """First backoff wait; doubles per retry, plus jitter, unless the server sends Retry-After."""
    retry_max_wait_s: float = Field(default=60.0, ge=0)
    """Cap on one backoff wait, including a server's Retry-After."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Per-request timeout in seconds."""
    temperature: float = 0.0
    """Sampling temperature (0 = as deterministic as the server allows)."""
    max_tokens: int = Field(default=1024, ge=1)
    """Default completion-token cap per request (callers may ask for less)."""
    json_mode: JsonMode = "auto"
    """Structured output: auto = JSON schema, falling back to JSON mode then plain text on a 400."""
    top_logprobs: int = Field(default=10, ge=0, le=20)
    """Top alternatives per token requested when a caller wants logprobs (0 = never ask)."""
    parse_retries: int = Field(default=1, ge=0)
    """Extra requests when a reply does not parse or validate (then the item is failed)."""
    prices: PriceTable = Field(default_factory=PriceTable)
    """USD per 1M prompt/completion tokens per model."""
