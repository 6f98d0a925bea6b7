"""The simulator role: predict a latent's activation on every token of some windows from an explanation.

Simulators (N2G pattern matching, the LLM) only predict; score/simulation.py's `SimulationScorer`
compares the predictions with the true activations. `simulate_many` takes many (explanation,
examples) pairs at once, so an implementation can work on them concurrently (the LLM simulator sends
all their requests through its client at once). It returns, per pair and in order, either one
`WindowSimulation` per example (aligned with `example.acts`) or a `SimulationFailure` saying why that
pair could not be simulated; it never raises for one pair's problem.

One binarisation rule for every simulator (`WindowSimulation.predicted_active`): a window that carries
`p_active` (the LLM simulator with logprobs) predicts a token active when p_active > 0.5; any other
window when its value is > the simulator's `threshold`. The `simulations` table stores both arrays, so
anyone can recompute a score row's precision / recall / F1 with the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from explain.records import Example, Explanation

SimulationItem = tuple[Explanation, Sequence[Example]]
"""One pair to simulate: an explanation and the windows to predict for it."""

WindowMode = Literal["logprobs", "written", "patterns"]
"""What produced a window's prediction: the LLM's token probabilities, the LLM's written levels, or
N2G pattern matching."""

P_ACTIVE_CUTOFF = 0.5
"""A token of a window with `p_active` is predicted active when p_active > this (more likely than not)."""


@dataclass(frozen=True)
class WindowSimulation:
    """One window's prediction.

    values: [window] float32, the simulated activation of each token (the `sim_acts` column).
    p_active: [window] float32, the probability that each token is active (the `p_active` column), or
        None when the simulator had no such probability for this window (then `mode` is not "logprobs").
    mode: what produced the prediction (see `WindowMode`).
    """

    values: np.ndarray
    p_active: np.ndarray | None = None
    mode: WindowMode = "written"

    def __post_init__(self) -> None:
        # float32 here, the dtype the `simulations` table stores: scoring and recomputing binarise the same numbers.
        object.__setattr__(self, "values", np.asarray(self.values, dtype=np.float32).ravel())
        if self.p_active is not None:
            object.__setattr__(self, "p_active", np.asarray(self.p_active, dtype=np.float32).ravel())
            if self.p_active.shape != self.values.shape:
                raise ValueError(f"p_active has {self.p_active.size} entries for {self.values.size} values")
        if (self.p_active is not None) != (self.mode == "logprobs"):
            raise ValueError(f"mode {self.mode!r} with p_active {'given' if self.p_active is not None else 'None'}")

    def predicted_active(self, threshold: float) -> np.ndarray:
        """[window] bool: p_active > 0.5 where p_active is given, else values > threshold."""
        if self.p_active is not None:
            return self.p_active > P_ACTIVE_CUTOFF
        return self.values > threshold


@dataclass(frozen=True)
class SimulationFailure:
    """Why one pair was not simulated. "skipped": not attempted (e.g. the budget ran out); "failed":
    attempted and failed (e.g. the model's replies never parsed)."""

    error: str
    status: Literal["failed", "skipped"] = "failed"


SimulationResult = list[WindowSimulation] | SimulationFailure
"""Per pair: one WindowSimulation per example, or the failure."""


@runtime_checkable
class Simulator(Protocol):
    """Predicts a latent's activation on every token of the given windows from an explanation alone."""

    name: str

    @property
    def threshold(self) -> float:
        """A token of a window without p_active counts as predicted-active when its value is > threshold."""
        ...

    def identity(self) -> dict:
        """JSON-able description of everything that changes this simulator's predictions."""
        ...

    def simulate_many(self, items: Sequence[SimulationItem]) -> list[SimulationResult]:
        """One result per item, in order (see the module docstring)."""
        ...
