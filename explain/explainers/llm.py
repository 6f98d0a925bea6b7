"""LLM explainer: show a latent's explain-set contexts to a model, get a one-phrase explanation.

Each latent is one request (its own prompt, its own reply), built by explain/explainers/prompts.py: activating
examples with the active tokens marked <<like this>> and activations normalised to 0-10 by the largest
activation in the shown examples (any positive activation shows as at least 1), plus optionally some
non-activating (contrastive) examples. The outcome is always an `Explanation` row:

- "ok": the parsed explanation;
- "failed": unparseable reply after the retry, a refusal, HTTP retries exhausted, no activating
  examples, or any unexpected error (the error says which); never scored;
- "skipped" with error "budget": the spending budget (given to the constructor, shared with the
  run's scorers) ran out before this latent's request.

`LLMExplainer` implements the `Explainer` protocol (explain/explainers/base.py): `explain_many` sends
every latent's request concurrently (bounded by the client's max_concurrency) and returns in order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from explain.explainers.prompts import EXPLAIN_SCHEMA, PROMPT_VERSION, explain_messages, parse_explanation
from explain.llm.client import BudgetExhausted, CostBudget, LLMCallError, LLMClient, gather_with_progress
from explain.records import Example, Explanation, LatentRecord

log = logging.getLogger(__name__)
EXPLAINER_NAME = "llm"


class LLMExplainerConfig(BaseModel):
    """What the explainer shows the model and how long an answer may be."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_activating: int = Field(default=20, ge=1)
    """Activating explain-set examples shown per latent (in sampling order)."""
    max_non_activating: int = Field(default=5, ge=0)
    """Non-activating (contrastive) explain-set examples shown per latent (0 = none)."""
    max_explanation_chars: int = Field(default=300, ge=10)
    """Longer explanations are treated as a bad reply (retried, then failed)."""
    max_tokens: int = Field(default=200, ge=16)
    """Completion-token cap of an explanation request."""


def activation_levels(examples: Sequence[Example]) -> list[list[int]]:
    """Activations ([window] each) as integers 0-10, scaled by the largest one over all `examples`."""
    peak = max((float(np.max(e.acts)) for e in examples if len(e.acts)), default=0.0)
    levels = []
    for example in examples:
        acts = np.asarray(example.acts, dtype=np.float64)
        scaled = np.rint(acts / peak * 10.0) if peak > 0 else np.zeros_like(acts)
        scaled = np.where(acts > 0, np.maximum(scaled, 1.0), 0.0)  # a firing token never shows as 0
        levels.append([int(v) for v in np.clip(scaled, 0, 10)])
    return levels


class LLMExplainer:
    """Explains latents with an `LLMClient`; see the module docstring for the outcomes."""

    name = EXPLAINER_NAME

    def __init__(self, client: LLMClient | None, config: LLMExplainerConfig | None = None,
                 budget: CostBudget | None = None, progress: bool = False) -> None:
        self.client = client  # None: only plan()/messages_for() work (dry-run estimates)
        self.config = config or LLMExplainerConfig()
        self.budget = budget
        self.progress = progress

    def identity(self) -> dict:
        model = self.client.settings.model if self.client is not None else None
        return {"explainer": self.name, "model": model, "prompt_version": PROMPT_VERSION,
                **self.config.model_dump()}

    def messages_for(self, record: LatentRecord) -> list[dict[str, str]] | None:
        """The prompt for `record`, or None when it has no activating explain example."""
        activating = [e for e in record.explain if e.is_activating][: self.config.max_activating]
        if not activating:
            return None
        quiet = [e for e in record.explain if not e.is_activating][: self.config.max_non_activating]
        shown = list(zip([e.tokens for e in activating], activation_levels(activating), strict=True))
        return explain_messages(shown, [e.tokens for e in quiet])

    def plan(self, record: LatentRecord) -> list[tuple[list[dict[str, str]], int]]:
        """(messages, expected completion tokens) of the request for `record` (dry-run estimate)."""
        messages = self.messages_for(record)
        return [] if messages is None else [(messages, min(40, self.config.max_tokens))]

    def explain_many(self, records: Sequence[LatentRecord]) -> list[Explanation]:
        """Explain all `records` concurrently, in input order; once the budget is spent no new request is
        sent and the remaining latents come back as status "skipped", error "budget"."""
        assert self.client is not None, "this explainer was built without a client (planning only)"
        client = self.client

        async def main() -> list[Explanation]:
            coros = [self._explain(record) for record in records]
            return await gather_with_progress(coros, f"explain ({self.name})", self.progress)

        results = client.run_sync(main)
        _log_outcomes(results)
        return results

    def _row(self, record: LatentRecord, **fields: object) -> Explanation:
        assert self.client is not None, "this explainer was built without a client (planning only)"
        return Explanation(latent=int(record.latent), explainer=self.name, model=self.client.settings.model,
                           prompt_version=PROMPT_VERSION, **fields)  # type: ignore[arg-type]

    async def _explain(self, record: LatentRecord) -> Explanation:
        """One latent's explanation (never raises for a model/server problem)."""
        assert self.client is not None
        messages = self.messages_for(record)
        if messages is None:
            return self._row(record, text="", status="failed", error="no activating explain examples")
        limit = self.config.max_explanation_chars
        try:
            reply = await self.client.complete_json(
                messages, purpose="explain", schema=EXPLAIN_SCHEMA, budget=self.budget,
                validate=lambda value: parse_explanation(value, limit), max_tokens=self.config.max_tokens)
        except BudgetExhausted:
            return self._row(record, text="", status="skipped", error="budget")
        except LLMCallError as exc:
            return self._row(record, text="", status="failed", error=f"{exc.kind}: {exc}",
                             prompt_tokens=exc.prompt_tokens, completion_tokens=exc.completion_tokens,
                             cost_usd=exc.cost_usd)
        except Exception as exc:  # one latent's surprise must not sink the batch; one line, no traceback
            error = self.client.scrub(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("latent %s: unexpected explainer error: %s", record.latent, error)
            log.debug("latent %s: explainer traceback", record.latent, exc_info=True)
            return self._row(record, text="", status="failed", error=error)
        return self._row(record, text=reply.value, prompt_tokens=reply.prompt_tokens,
                         completion_tokens=reply.completion_tokens, cost_usd=reply.cost_usd)


def _log_outcomes(results: Sequence[Explanation]) -> None:
    counts: dict[str, int] = {}
    for explanation in results:
        counts[explanation.status] = counts.get(explanation.status, 0) + 1
    log.info("llm explanations: %s", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
