"""Dry-run estimate: how many LLM calls, tokens and dollars a run would spend, before spending any.

The estimate renders the exact prompts the explainer and each scorer would send (their `plan`
methods), so the call count equals what a clean run (no cache hits, no retries, every explanation ok)
sends. Scorer prompts need an explanation, which does not exist yet: a placeholder of typical length
stands in. Prompt tokens are counted with tiktoken when it is installed (the model's encoding, else
cl100k_base), otherwise as characters / 4; message framing tokens (a few per message) are not
counted. Completion tokens are the planners' expected reply sizes; `max_cost_usd` instead assumes
every reply hits its max_tokens cap (an upper bound).

explain/ must not import score/, so scorers are passed in as objects with a
`plan(explanation_text, record) -> [(messages, expected_completion_tokens)]` method (LLMSimulator,
DetectionScorer, FuzzingScorer all have one and can be built with client=None for this).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from explain.explainers.llm import LLMExplainer
from explain.llm.settings import LLMSettings
from explain.records import LatentRecord

PLACEHOLDER_EXPLANATION = 'the word "example" and closely related words, mostly at the end of a phrase'
Messages = list[dict[str, str]]


@runtime_checkable
class RequestPlanner(Protocol):
    """A scorer (or simulator) that can list the requests it would send for one latent."""

    name: str

    def plan(self, explanation_text: str, record: LatentRecord) -> list[tuple[Messages, int]]: ...


@dataclass
class CostEstimate:
    """Totals for a run; `by_purpose` splits them per stage ("explain", "simulation", ...)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    max_cost_usd: float = 0.0
    """Upper bound: every reply as long as its max_tokens cap allows."""
    token_counter: str = ""
    by_purpose: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, purpose: str, calls: int, prompt: int, completion: int, cost: float, max_cost: float) -> None:
        self.calls += calls
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cost_usd += cost
        self.max_cost_usd += max_cost
        self.by_purpose[purpose] = {"calls": calls, "prompt_tokens": prompt, "completion_tokens": completion,
                                    "cost_usd": cost}


@functools.lru_cache(maxsize=8)
def token_counter(model: str) -> tuple[str, Callable[[str], int]]:
    """(name, count function): tiktoken for `model` if installed, else characters / 4."""
    try:
        import tiktoken
    except ImportError:
        return "chars/4", lambda text: (len(text) + 3) // 4
    try:
        encoding = tiktoken.encoding_for_model(model)
    except KeyError:
        encoding = tiktoken.get_encoding("cl100k_base")
    return f"tiktoken:{encoding.name}", lambda text: len(encoding.encode(text, disallowed_special=()))


def estimate_cost(records: Sequence[LatentRecord], settings: LLMSettings,
                  explainer: bool | LLMExplainer = True, scorers: Sequence[RequestPlanner] = (),
                  placeholder_explanation: str = PLACEHOLDER_EXPLANATION) -> CostEstimate:
    """Calls, tokens and USD the explainer (True = default LLMExplainer config; False = none) and
    `scorers` would spend on `records`."""
    name, count = token_counter(settings.model)
    estimate = CostEstimate(token_counter=name)
    if explainer:
        planner = explainer if isinstance(explainer, LLMExplainer) else LLMExplainer(None)
        plans = [p for record in records for p in planner.plan(record)]
        _add(estimate, "explain", plans, settings, count, planner.config.max_tokens)
    for scorer in scorers:
        plans = [p for record in records for p in scorer.plan(placeholder_explanation, record)]
        _add(estimate, getattr(scorer, "purpose", scorer.name), plans, settings, count, None)
    return estimate


def _add(estimate: CostEstimate, purpose: str, plans: list[tuple[Messages, int]], settings: LLMSettings,
         count: Callable[[str], int], cap: int | None) -> None:
    prompt = sum(count(m["content"]) for messages, _ in plans for m in messages)
    completion = sum(expected for _, expected in plans)
    worst = sum(cap or settings.max_tokens for _ in plans) if cap else _worst_completion(plans)
    prices = settings.prices
    estimate.add(purpose, len(plans), prompt, completion, prices.cost(settings.model, prompt, completion),
                 prices.cost(settings.model, prompt, worst))


def _worst_completion(plans: list[tuple[Messages, int]]) -> int:
    # scorers cap replies at ~1.5-2x their expected size (see their completion_tokens_per_* settings)
    return sum(2 * expected for _, expected in plans)
