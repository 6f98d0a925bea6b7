"""N2G simulator: predict activations by matching an N2G explanation's n-gram patterns against tokens.

The explanation carries machine-readable patterns (`[{"ngram": [...], "act": float}, ...]`, written by
explain/explainers/n2g.py); the predicted activation of every token is what
`explain.explainers.n2g.match_patterns(patterns, tokens)` gives ([len(tokens)]), computed for all of a
latent's windows at once by `match_on_index`, and returned as `WindowSimulation`s with mode "patterns" (no
p_active). A token is predicted active when that value is > 0, the threshold Gao et al. use. An
explanation without patterns (free text) cannot be simulated this way: its result is a `SimulationFailure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from explain.explainers.n2g import ALGORITHM_VERSION, match_on_index
from explain.latents.corpus_index import CorpusIndex
from explain.records import Example, Explanation
from score.simulators.base import SimulationFailure, SimulationItem, SimulationResult, WindowSimulation


@dataclass
class N2GSimulator:
    """Simulator protocol (score/simulators/base.py) over N2G patterns."""

    name: str = "n2g"
    threshold: float = 0.0
    """Predicted active when the matched pattern activation is > threshold."""

    def identity(self) -> dict:
        return {"simulator": self.name, "algorithm": ALGORITHM_VERSION, "threshold": self.threshold}

    def simulate_many(self, items: Sequence[SimulationItem]) -> list[SimulationResult]:
        """Per item: one WindowSimulation per example (values [window]), or why there are none."""
        return [self._simulate(explanation, examples) for explanation, examples in items]

    @staticmethod
    def _simulate(explanation: Explanation, examples: Sequence[Example]) -> SimulationResult:
        if explanation.patterns is None:
            return SimulationFailure(
                f"latent {explanation.latent}: explanation by {explanation.explainer} has no N2G patterns")
        index = CorpusIndex.from_windows([list(e.tokens) for e in examples], [e.ctx_id for e in examples])
        pred = match_on_index(explanation.patterns, index).reshape(index.token_ids.shape)
        return [WindowSimulation(pred[r, :len(e.tokens)].copy(), mode="patterns") for r, e in enumerate(examples)]
