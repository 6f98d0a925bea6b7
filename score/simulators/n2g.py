"""N2G simulator: predict activations by matching an N2G explanation's n-gram patterns against tokens.

The explanation carries machine-readable patterns (`[{"ngram": [...], "act": float}, ...]`, written by
explain/explainers/n2g.py); `explain.explainers.n2g.match_patterns(patterns, tokens)` gives the predicted
activation of every
token ([len(tokens)]). A token is predicted active when that value is > 0, the threshold Gao et al. use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from explain.records import Example, Explanation

PatternMatcher = Callable[[list[dict], list[str]], np.ndarray]
"""(patterns, tokens) -> predicted activation per token ([len(tokens)])."""


def _default_matcher() -> PatternMatcher:
    # imported lazily so score/ stays importable while explain/explainers/n2g.py is optional for other simulators
    from explain.explainers.n2g import match_patterns

    return match_patterns


@dataclass
class N2GSimulator:
    """Simulator protocol over N2G patterns; `matcher` defaults to `explain.explainers.n2g.match_patterns`."""

    name: str = "n2g"
    threshold: float = 0.0
    """Predicted active when the matched pattern activation is > threshold."""
    matcher: PatternMatcher | None = None
    """Override only in tests; None uses explain.explainers.n2g.match_patterns."""

    def simulate(self, explanation: Explanation, examples: list[Example]) -> list[np.ndarray]:
        """Predicted activations per example ([window] each), aligned with `example.acts`."""
        if explanation.patterns is None:
            raise ValueError(f"latent {explanation.latent}: explanation by {explanation.explainer} has no N2G patterns")
        match = self.matcher or _default_matcher()
        return [np.asarray(match(explanation.patterns, list(example.tokens)), dtype=np.float32) for example in examples]
