"""The simulator role: predict a latent's activation on every token of some windows from an explanation.

Simulators (N2G pattern matching, the LLM) only predict; score/simulation.py's `SimulationScorer`
compares the predictions with the true activations. `simulate_many` takes many (explanation,
examples) pairs at once, so an implementation can work on them concurrently (the LLM simulator sends
all their requests through its client at once). It returns, per pair and in order, either one array
per example ([window] each, aligned with `example.acts`) or a `SimulationFailure` saying why that
pair could not be simulated; it never raises for one pair's problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from explain.records import Example, Explanation

SimulationItem = tuple[Explanation, Sequence[Example]]
"""One pair to simulate: an explanation and the windows to predict for it."""


@dataclass(frozen=True)
class SimulationFailure:
    """Why one pair was not simulated. "skipped": not attempted (e.g. the budget ran out); "failed":
    attempted and failed (e.g. the model's replies never parsed)."""

    error: str
    status: Literal["failed", "skipped"] = "failed"


SimulationResult = list[np.ndarray] | SimulationFailure
"""Per pair: one array per example ([window] each), or the failure."""


@runtime_checkable
class Simulator(Protocol):
    """Predicts a latent's activation on every token of the given windows from an explanation alone."""

    name: str

    @property
    def threshold(self) -> float:
        """A token counts as predicted-active when its simulated activation is > threshold."""
        ...

    def identity(self) -> dict:
        """JSON-able description of everything that changes this simulator's predictions."""
        ...

    def simulate_many(self, items: Sequence[SimulationItem]) -> list[SimulationResult]:
        """One result per item, in order (see the module docstring)."""
        ...
