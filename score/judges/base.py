"""Shared machinery of the yes/no LLM judges (detection, fuzzing): batching, requests, the score row.

A judge turns a latent's score-set examples into `JudgedItem`s (a text and the right yes/no answer),
asks the model about them `batch_size` at a time, and scores the answers with
score.metrics.binary_scores. The score row has the `scores` metric columns plus `balanced_accuracy`
and mode "judge"; auroc, correlation and threshold are NaN (not defined for yes/no answers) and n_tokens / n_positive
count contexts, not tokens. Every latent's requests are sent concurrently through the client; once the
budget (given to the constructor, shared with the run's other LLM stages) runs out, the remaining
latents are "skipped", error "budget"; a call that gives up fails its latent.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from explain.llm.client import BudgetExhausted, CostBudget, LLMCallError, LLMClient, gather_with_progress
from explain.records import Explanation, LatentRecord
from score.base import ScoreOutcome, log_outcomes, partition
from score.intervals import prf_intervals
from score.metrics import binary_scores
from score.prompts import ANSWERS_SCHEMA, JUDGE_PROMPT_VERSION, parse_answers

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]


class BinaryScorerConfig(BaseModel):
    """Batching and sampling of a yes/no LLM scorer."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    batch_size: int = Field(default=5, ge=1)
    """Contexts judged per request."""
    max_items: int | None = Field(default=None, ge=1)
    """Cap on contexts judged per latent (None = all score-set items)."""
    seed: int = 0
    """Shuffling seed (combined with the latent index)."""
    completion_tokens_per_item: int = Field(default=4, ge=1)
    """Completion-token allowance per judged context."""


@dataclass(frozen=True)
class JudgedItem:
    """One text to judge and the right answer."""

    text: str
    label: bool


class BinaryLLMScorer:
    """Yes/no judgements over a latent's contexts in batches; subclasses define `items_for` and the prompt."""

    name = "binary"
    purpose = "binary"
    """`purpose` of its llm_calls rows and its key in dry-run estimates."""
    messages_fn: Callable[[str, list[str]], Messages]

    def __init__(self, client: LLMClient | None, config: BinaryScorerConfig | None = None,
                 budget: CostBudget | None = None, progress: bool = False) -> None:
        self.client = client  # None: only plan() works (dry-run estimates)
        self.config = config or BinaryScorerConfig()
        self.budget = budget
        self.progress = progress

    def identity(self) -> dict:
        model = self.client.settings.model if self.client is not None else None
        return {"scorer": self.name, "model": model, "prompt_version": JUDGE_PROMPT_VERSION,
                **self.config.model_dump()}

    def items_for(self, record: LatentRecord) -> list[JudgedItem]:
        raise NotImplementedError

    def _shuffled(self, record: LatentRecord, items: list[JudgedItem]) -> list[JudgedItem]:
        random.Random(f"{self.config.seed}:{self.name}:{record.latent}").shuffle(items)
        return items[: self.config.max_items] if self.config.max_items else items

    def batches(self, explanation_text: str, record: LatentRecord) -> list[tuple[Messages, list[JudgedItem]]]:
        """The requests this scorer sends for one latent (also used by the dry-run estimate)."""
        items = self.items_for(record)
        size = self.config.batch_size
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        return [(self.messages_fn(explanation_text, [it.text for it in chunk]), chunk) for chunk in chunks]

    def plan(self, explanation_text: str, record: LatentRecord) -> list[tuple[Messages, int]]:
        """(messages, expected completion tokens) of each request for one latent (dry-run estimate)."""
        return [(m, 2 * len(chunk) + 8) for m, chunk in self.batches(explanation_text, record)]

    def score_many(self, explanations: Sequence[Explanation],
                   records: Mapping[int, LatentRecord]) -> list[ScoreOutcome]:
        """Score every explanation concurrently; one outcome per explanation, in order."""
        assert self.client is not None, "this scorer was built without a client (planning only)"
        done, scorable = partition(explanations, records, self.name)

        async def main() -> list[ScoreOutcome]:
            coros = [self._score(explanation, record) for _, explanation, record in scorable]
            return await gather_with_progress(coros, f"{self.name} (llm)", self.progress)

        results = self.client.run_sync(main) if scorable else []
        done.update({position: r for (position, _, _), r in zip(scorable, results, strict=True)})
        outcomes = [done[position] for position in range(len(explanations))]
        log_outcomes(self.name, outcomes)
        return outcomes

    async def _score(self, explanation: Explanation, record: LatentRecord) -> ScoreOutcome:
        """One latent's outcome (never raises for a model/server problem)."""
        outcome = ScoreOutcome(int(explanation.latent), explanation.explainer, self.name, "skipped")
        batches = self.batches(explanation.text, record)
        if not batches:
            outcome.error = f"latent {record.latent}: no items to judge"
            return outcome
        try:
            answers = await gather_with_progress([self._judge(m, len(c)) for m, c in batches], self.name, False)
        except BudgetExhausted:
            outcome.error = "budget"
            return outcome
        except LLMCallError as exc:
            outcome.status, outcome.error = "failed", f"{exc.kind}: {exc}"
            return outcome
        except Exception as exc:  # one latent's surprise must not sink the stage: a failure, one line
            assert self.client is not None
            outcome.status, outcome.error = "failed", self.client.scrub(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("latent %s: unexpected %s error: %s", record.latent, self.name, outcome.error)
            return outcome
        labels = [it.label for _, chunk in batches for it in chunk]
        predicted = [a for batch in answers for a in batch]
        outcome.status = "ok"
        outcome.score_rows = [binary_score_row(explanation, record, self.name, labels, predicted)]
        return outcome

    async def _judge(self, messages: Messages, n: int) -> list[bool]:
        assert self.client is not None
        reply = await self.client.complete_json(
            messages,
            purpose=self.purpose,
            schema=ANSWERS_SCHEMA,
            validate=lambda v: parse_answers(v, n),
            max_tokens=self.config.completion_tokens_per_item * n + 20,
            budget=self.budget,
        )
        return reply.value


def binary_score_row(explanation: Explanation, record: LatentRecord, scorer: str, labels: Sequence[bool],
                     predicted: Sequence[bool]) -> dict:
    """A `scores` row (+ balanced_accuracy) for yes/no judgements over contexts (no sae_id / run_id)."""
    metrics = binary_scores(list(labels), list(predicted))
    return {
        "latent": int(record.latent),
        "explainer": explanation.explainer,
        "scorer": scorer,
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "f1": metrics["f1"],
        "auroc": math.nan,
        "correlation": math.nan,
        "threshold": math.nan,
        "n_tokens": len(labels),
        "n_positive": int(sum(labels)),
        "balanced_accuracy": metrics["balanced_accuracy"],
        "mode": "judge",  # yes/no answers per context, not simulated tokens (the `scores.mode` column)
        "population": "sampled",
        "estimator": "sample",  # the judged contexts as sampled; no natural estimate for judges
        # each judged context is one resampled unit of the intervals
        **prf_intervals(np.array([y and p for y, p in zip(labels, predicted, strict=True)], dtype=np.float64),
                        np.asarray(predicted, dtype=np.float64), np.asarray(labels, dtype=np.float64),
                        seed=0),
    }
