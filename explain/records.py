"""Per-latent records: what an explainer sees and what a scorer checks.

These dataclasses are the hand-off between sampling (explain/sampling.py), explainers
(explain/n2g.py, explain/llm_explainer.py) and simulators/scorers (score/). They hold plain
Python and numpy values only, so they pickle cheaply across Prefect/Dask workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Split = Literal["explain", "score"]
ExampleKind = Literal["activating", "random", "similar"]


@dataclass(frozen=True)
class Example:
    """One context window shown to an explainer or scored by a simulator.

    `tokens` and `acts` are aligned: acts[i] is the latent's activation on tokens[i] ([window]).
    """

    ctx_id: int
    tokens: list[str]
    acts: np.ndarray
    kind: ExampleKind
    quantile: int = -1
    """Activation-quantile bin (0 = weakest decile .. 9 = top) for activating examples, -1 otherwise."""
    token_ids: list[int] = field(default_factory=list)

    @property
    def is_activating(self) -> bool:
        return bool(np.any(self.acts > 0))


@dataclass
class LatentRecord:
    """Everything known about one latent: its statistics and its two disjoint example sets."""

    sae_id: str
    latent: int
    explain: list[Example]
    score: list[Example]
    max_act: float = 0.0
    frequency: float = 0.0

    def assert_disjoint(self) -> None:
        """Raise if an explain context is also a score context (a leak that inflates scores)."""
        shared = {e.ctx_id for e in self.explain} & {e.ctx_id for e in self.score}
        if shared:
            raise ValueError(f"latent {self.latent}: explain/score share ctx_ids {sorted(shared)[:5]}")


ExplanationStatus = Literal["ok", "failed", "skipped"]


@dataclass
class Explanation:
    """An explainer's answer for one latent; failures are kept as rows, never dropped."""

    latent: int
    explainer: str
    text: str
    status: ExplanationStatus = "ok"
    error: str = ""
    model: str = ""
    prompt_version: str = ""
    patterns: list[dict] | None = None
    """Machine-readable form (N2G: [{"ngram": [...], "act": float}, ...]); None for free text."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def patterns_json(self) -> str:
        return json.dumps(self.patterns) if self.patterns is not None else ""
