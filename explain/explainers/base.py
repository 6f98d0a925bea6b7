"""The explainer role: one interface that every explainer (N2G, LLM) implements and the flows call.

An explainer turns each latent's explain-set examples into an `Explanation` row. It never reads the
score split (the scorers' held-out windows) and never raises for one latent's problem: that latent's
row has status "failed" (or "skipped", e.g. the LLM budget ran out) and an error saying why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from explain.records import Explanation, LatentRecord


@runtime_checkable
class Explainer(Protocol):
    """Explains latents in batches; `name` is the `explainer` column of the rows it writes."""

    name: str

    def identity(self) -> dict:
        """JSON-able description of everything that changes this explainer's output (algorithm or
        model and prompt version, and its whole config)."""
        ...

    def explain_many(self, records: Sequence[LatentRecord]) -> list[Explanation]:
        """One explanation per record, in input order; a per-latent failure is a "failed" row."""
        ...
