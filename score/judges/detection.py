"""Detection scorer (Paulo et al. 2024): "does this latent, as explained, fire anywhere in this text?"

Cheaper than simulation: a yes/no per context, several contexts per request. The items are the
latent's score-set examples: activating ones (label yes) and non-activating ones (label no), shuffled
with a seed derived from (seed, latent) so batches mix both kinds and reruns hit the cache. Precision,
recall, F1 and balanced accuracy come from score.metrics.binary_scores over the contexts. The score
row has the `scores` columns plus `balanced_accuracy`; auroc, correlation and threshold are NaN (not
defined for yes/no answers) and n_tokens / n_positive count contexts, not tokens.

`BinaryLLMScorer` is the shared machinery; score/judges/fuzzing.py builds its items differently.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from explain.explainers.prompts import ANSWERS_SCHEMA, detect_messages, parse_answers, render_text
from explain.llm.client import BudgetExhausted, CostBudget, LLMCallError, LLMClient, gather_with_progress
from explain.records import Explanation, LatentRecord
from score.metrics import binary_scores
from score.simulators.llm import LLMScoreOutcome

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
    """Yes/no judgements over a latent's contexts in batches; subclasses define items and prompt."""

    name = "binary"
    purpose = "binary"
    messages_fn: Callable[[str, list[str]], Messages] = staticmethod(detect_messages)

    def __init__(
        self, client: LLMClient | None, config: BinaryScorerConfig | None = None, budget: CostBudget | None = None
    ) -> None:
        self.client = client  # None: only plan() works (dry-run estimates)
        self.config = config or BinaryScorerConfig()
        self.budget = budget

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

    async def _judge(self, messages: Messages, n: int) -> list[bool]:
        assert self.client is not None, "this scorer was built without a client (planning only)"
        reply = await self.client.complete_json(
            messages,
            purpose=self.purpose,
            schema=ANSWERS_SCHEMA,
            validate=lambda v: parse_answers(v, n),
            max_tokens=self.config.completion_tokens_per_item * n + 20,
            budget=self.budget,
        )
        return reply.value

    async def ascore(
        self, explanation: Explanation, record: LatentRecord | None, sae_id: str | None = None, run_id: str = ""
    ) -> LLMScoreOutcome:
        """One latent's outcome (never raises for a model/server problem)."""
        outcome = LLMScoreOutcome(int(explanation.latent), explanation.explainer, self.name, "skipped")
        batches = self.batches(explanation.text, record) if record is not None and explanation.ok else []
        if not batches:
            outcome.error = f"explanation {explanation.status}" if not explanation.ok else "no items to judge"
            return outcome
        try:
            answers = await gather_with_progress([self._judge(m, len(c)) for m, c in batches], self.name, False)
        except BudgetExhausted:
            outcome.error = "budget"
            return outcome
        except LLMCallError as exc:
            outcome.status, outcome.error = "failed", f"{exc.kind}: {exc}"
            return outcome
        labels = [it.label for _, chunk in batches for it in chunk]
        predicted = [a for batch in answers for a in batch]
        outcome.status = "ok"
        outcome.score_row = binary_score_row(explanation, record, self.name, labels, predicted, sae_id, run_id)
        return outcome

    def score_many(
        self,
        explanations: Sequence[Explanation],
        records: Mapping[int, LatentRecord],
        sae_id: str | None = None,
        run_id: str = "",
        progress: bool = True,
    ) -> list[LLMScoreOutcome]:
        """Score every explanation concurrently; one outcome per explanation, in order."""

        async def main() -> list[LLMScoreOutcome]:
            coros = [self.ascore(e, records.get(e.latent), sae_id, run_id) for e in explanations]
            return await gather_with_progress(coros, f"{self.name} (llm)", progress)

        outcomes = self.client.run_sync(main)
        log.info("llm %s: %d ok of %d", self.name, sum(o.status == "ok" for o in outcomes), len(outcomes))
        return outcomes


def binary_score_row(
    explanation: Explanation,
    record: LatentRecord,
    scorer: str,
    labels: Sequence[bool],
    predicted: Sequence[bool],
    sae_id: str | None,
    run_id: str,
) -> dict:
    """A `scores` row (+ balanced_accuracy) for yes/no judgements over contexts."""
    metrics = binary_scores(list(labels), list(predicted))
    return {
        "sae_id": sae_id if sae_id is not None else record.sae_id,
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
        "run_id": run_id,
    }


class DetectionScorer(BinaryLLMScorer):
    """Per context: does the latent fire anywhere in it? (label: the context is activating)."""

    name = "detection"
    purpose = "detection"
    messages_fn = staticmethod(detect_messages)

    def items_for(self, record: LatentRecord) -> list[JudgedItem]:
        items = [JudgedItem(render_text(e.tokens), e.is_activating) for e in record.score]
        return self._shuffled(record, items)
