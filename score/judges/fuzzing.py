"""Fuzzing scorer (Paulo et al. 2024): "are the marked tokens the ones this explanation describes?"

Each activating score-set example is shown twice, in different shuffled positions: once with its
activating tokens marked <<like this>> (label yes) and once with the same number of randomly chosen
non-activating tokens marked instead (label no). Optionally non-activating examples with random marks
are added as further no-items. Marks are drawn with a seed derived from (seed, latent), so reruns send
identical prompts (cache hits). Metrics and the score row are as for detection (score/judges/base.py).
"""

from __future__ import annotations

import random

import numpy as np
from pydantic import Field

from explain.llm.client import CostBudget, LLMClient
from explain.llm.render import render_text
from explain.records import Example, LatentRecord
from score.judges.base import BinaryLLMScorer, BinaryScorerConfig, JudgedItem
from score.prompts import fuzz_messages


class FuzzingConfig(BinaryScorerConfig):
    """Fuzzing options (batching as for detection)."""

    include_non_activating: bool = False
    """Also judge non-activating examples with randomly marked tokens (label no)."""
    min_marks: int = Field(default=1, ge=1)
    """Marks placed on a non-activating example (when those are included)."""


def fuzzed_marks(example: Example, rng: random.Random, n_marks: int) -> list[bool] | None:
    """Marks on `n_marks` random positions where the latent is zero; None if there are too few."""
    quiet = [i for i, a in enumerate(np.asarray(example.acts)) if a <= 0]
    if len(quiet) < n_marks or n_marks <= 0:
        return None
    chosen = set(rng.sample(quiet, n_marks))
    return [i in chosen for i in range(len(example.tokens))]


class FuzzingScorer(BinaryLLMScorer):
    """Correctly vs. randomly marked activating contexts; see the module docstring."""

    name = "fuzzing"
    purpose = "fuzzing"
    messages_fn = staticmethod(fuzz_messages)

    def __init__(self, client: LLMClient | None, config: FuzzingConfig | None = None,
                 budget: CostBudget | None = None, progress: bool = False) -> None:
        super().__init__(client, config or FuzzingConfig(), budget, progress)

    def items_for(self, record: LatentRecord) -> list[JudgedItem]:
        rng = random.Random(f"{self.config.seed}:marks:{record.latent}")
        items: list[JudgedItem] = []
        for example in record.score:
            acts = np.asarray(example.acts)
            if example.is_activating:
                correct = [bool(a > 0) for a in acts]
                items.append(JudgedItem(render_text(example.tokens, correct), True))
                wrong = fuzzed_marks(example, rng, sum(correct))
                if wrong is not None:
                    items.append(JudgedItem(render_text(example.tokens, wrong), False))
            elif getattr(self.config, "include_non_activating", False):
                wrong = fuzzed_marks(example, rng, self.config.min_marks)  # type: ignore[attr-defined]
                if wrong is not None:
                    items.append(JudgedItem(render_text(example.tokens, wrong), False))
        return self._shuffled(record, items)
