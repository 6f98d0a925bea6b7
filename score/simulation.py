"""Simulation scoring: predict each score-set token's activation from an explanation, compare with truth.

A `Simulator` (score/simulators/) turns an explanation into per-token predicted activations for the
latent's *score* examples (never the explain examples, which the explainer has seen).
`SimulationScorer(simulator)` is the one scorer that simulates and then scores; for each ok outcome it
returns rows for two store tables (the flows add sae_id, and run_id to the score row):

- `simulations`: one row per score window (latent, explainer, scorer, ctx_id, true_acts, sim_acts);
- `scores`: one row per (latent, explainer, scorer) with precision, recall, f1, auroc, correlation, ...

Precision/recall/F1 in the score row are exactly what one gets by concatenating that key's simulation rows
and binarising `true_acts > 0` and `sim_acts > threshold` (both stored as float32 and scored as float32).

Explanations that are not ok (failed/skipped), or whose latent has no score examples, are not scored:
their outcome is "skipped" with the reason, so a failure is never scored as if it were an explanation.
A simulator failure for one latent is that latent's "failed" (or "skipped") outcome. A simulator that
returns arrays of the wrong number or length is a bug, not a per-latent problem: ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from explain.records import Example, Explanation, LatentRecord
from score.base import ScoreOutcome, log_outcomes, partition
from score.metrics import simulation_scores
from score.simulators.base import SimulationFailure, SimulationItem, Simulator


class SimulationScorer:
    """Scorer protocol (score/base.py): simulate with `simulator`, then score with score/metrics.py."""

    name = "simulation"

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    def identity(self) -> dict:
        return {"scorer": self.name, "simulator": self.simulator.identity()}

    def score_many(self, explanations: Sequence[Explanation],
                   records: Mapping[int, LatentRecord]) -> list[ScoreOutcome]:
        """One outcome per explanation, in order; every scorable pair is simulated in one batch."""
        done, scorable = partition(explanations, records, self.name)
        items: list[SimulationItem] = [(explanation, record.score) for _, explanation, record in scorable]
        results = self.simulator.simulate_many(items) if items else []
        if len(results) != len(items):
            raise ValueError(f"simulator {self.simulator.name} returned {len(results)} results for {len(items)}")
        for (position, explanation, record), result in zip(scorable, results, strict=True):
            done[position] = self._outcome(explanation, record, result)
        outcomes = [done[position] for position in range(len(explanations))]
        log_outcomes(f"{self.name} ({self.simulator.name})", outcomes)
        return outcomes

    def _outcome(self, explanation: Explanation, record: LatentRecord,
                 result: list[np.ndarray] | SimulationFailure) -> ScoreOutcome:
        if isinstance(result, SimulationFailure):
            return ScoreOutcome(int(record.latent), explanation.explainer, self.name, result.status, result.error)
        examples = record.score
        true_acts = [np.asarray(e.acts, dtype=np.float32) for e in examples]
        sim_acts = _aligned(result, true_acts, self.simulator.name, record.latent)
        metrics = simulation_scores(true_acts, sim_acts, self.simulator.threshold)
        key = {"latent": int(record.latent), "explainer": explanation.explainer, "scorer": self.name}
        return ScoreOutcome(
            key["latent"], explanation.explainer, self.name, "ok",
            score_row={**key, **metrics.as_dict(), "balanced_accuracy": math.nan},  # judges' metric only
            simulation_rows=_simulation_rows(key, examples, true_acts, sim_acts),
        )


def _simulation_rows(key: dict, examples: Sequence[Example], true_acts: list[np.ndarray],
                     sim_acts: list[np.ndarray]) -> list[dict]:
    return [{**key, "ctx_id": int(e.ctx_id), "true_acts": t.tolist(), "sim_acts": s.tolist()}
            for e, t, s in zip(examples, true_acts, sim_acts, strict=True)]


def _aligned(sims: list[np.ndarray], true_acts: list[np.ndarray], simulator: str, latent: int) -> list[np.ndarray]:
    """Check the simulator returned one array per window of the right length; cast to float32."""
    if len(sims) != len(true_acts):
        raise ValueError(f"simulator {simulator} returned {len(sims)} windows for {len(true_acts)} (latent {latent})")
    out = []
    for i, (sim, true) in enumerate(zip(sims, true_acts, strict=True)):
        sim = np.asarray(sim, dtype=np.float32).ravel()
        if sim.shape != true.shape:
            raise ValueError(
                f"simulator {simulator}, latent {latent}, window {i}: {sim.size} values for {true.size} tokens"
            )
        out.append(sim)
    return out
