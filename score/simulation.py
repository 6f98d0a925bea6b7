"""Simulation scoring: predict each score-set token's activation from an explanation, compare with truth.

A `Simulator` (score/simulators/) turns an explanation into per-token predictions (`WindowSimulation`s)
for the latent's *score* examples (never the explain examples, which the explainer has seen).
`SimulationScorer(simulator)` is the one scorer that simulates and then scores; for each ok outcome it
returns rows for two store tables (the flows add sae_id, and run_id to the score row):

- `simulations`: one row per score window (latent, explainer, scorer, ctx_id, true_acts, sim_acts, p_active);
- `scores`: per (latent, explainer, scorer) a "sampled" row (estimator "sample": the score set as it is)
  with precision, recall, f1, auroc, correlation, ..., and `mode`: the windows' common mode
  ("logprobs", "written", "patterns"), or "mixed" when they differ; and, when every score example has
  a weight (explain/sampling/weights.py), a "natural" row (estimator "ipw"): the same metrics estimated
  for every held-out token of the corpus by inverse-probability weighting (score/ipw.py).

Precision/recall/F1 in the sampled row are exactly what one gets by concatenating that key's simulation rows
and binarising `true_acts > 0` against, per window, `p_active > 0.5` where p_active is not null and
`sim_acts > threshold` where it is (all stored as float32 and scored as float32). AUROC and correlation
use the graded `sim_acts`.

Explanations that are not ok (failed/skipped), or whose latent has no score examples, are not scored:
their outcome is "skipped" with the reason, so a failure is never scored as if it were an explanation.
A simulator failure for one latent is that latent's "failed" (or "skipped") outcome. A simulator that
returns results of the wrong type, number or length is a bug, not a per-latent problem: ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from explain.records import Example, Explanation, LatentRecord
from score.base import ScoreOutcome, log_outcomes, partition
from score.intervals import prf_intervals
from score.ipw import ipw_scores
from score.metrics import ScoreResult, auroc, binary_scores, flatten_aligned, pearson
from score.simulators.base import SimulationFailure, SimulationItem, SimulationResult, Simulator, WindowSimulation


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

    def _outcome(self, explanation: Explanation, record: LatentRecord, result: SimulationResult) -> ScoreOutcome:
        if isinstance(result, SimulationFailure):
            return ScoreOutcome(int(record.latent), explanation.explainer, self.name, result.status, result.error)
        examples = record.score
        true_acts = [np.asarray(e.acts, dtype=np.float32) for e in examples]
        windows = _aligned(result, true_acts, self.simulator.name, record.latent)
        metrics = window_scores(true_acts, windows, self.simulator.threshold)
        key = {"latent": int(record.latent), "explainer": explanation.explainer, "scorer": self.name}
        # balanced accuracy is the judges' metric only
        rows = [{**key, **metrics.as_dict(), "balanced_accuracy": math.nan, "mode": score_mode(windows),
                 "population": "sampled", "estimator": "sample",
                 **window_intervals(true_acts, windows, self.simulator.threshold)}]
        weights = [e.weight for e in examples]
        # all or nothing: a latent whose weights cannot cover its population has none (weights.py)
        if all(w is not None for w in weights):
            natural = ipw_scores(true_acts, windows, weights, self.simulator.threshold)  # type: ignore[arg-type]
            if natural is not None:
                # every metric, count and interval replaced; key, mode and column order kept
                rows.append({**rows[0], **natural, "population": "natural", "estimator": "ipw"})
        return ScoreOutcome(key["latent"], explanation.explainer, self.name, "ok", score_rows=rows,
                            simulation_rows=_simulation_rows(key, examples, true_acts, windows))


def window_scores(true_acts: list[np.ndarray], windows: Sequence[WindowSimulation], threshold: float) -> ScoreResult:
    """Scores of aligned windows (true_acts[i]: [window_i]); binarised per window by `predicted_active`."""
    true, sim = flatten_aligned(true_acts, [w.values for w in windows])
    y_true = true > 0
    # Each window binarises by what it has (p_active or values): the one rule the module docstring states.
    parts = [w.predicted_active(threshold) for w in windows]
    y_pred = np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    binary = binary_scores(y_true, y_pred)
    return ScoreResult(precision=binary["precision"], recall=binary["recall"], f1=binary["f1"],
                       auroc=auroc(y_true, sim), correlation=pearson(true, sim), threshold=float(threshold),
                       n_tokens=int(true.size), n_positive=int(y_true.sum()))


def window_intervals(true_acts: list[np.ndarray], windows: Sequence[WindowSimulation],
                     threshold: float) -> dict[str, float]:
    """95% bootstrap intervals of precision, recall and F1 with the score windows as the resampled units
    (binarised by the same rule as `window_scores`)."""
    tp, n_pred, n_true = (np.zeros(len(windows)) for _ in range(3))
    for i, (true, window) in enumerate(zip(true_acts, windows, strict=True)):
        y_true, y_pred = true > 0, window.predicted_active(threshold)
        tp[i], n_pred[i], n_true[i] = np.sum(y_true & y_pred), np.sum(y_pred), np.sum(y_true)
    return prf_intervals(tp, n_pred, n_true, seed=0)


def score_mode(windows: Sequence[WindowSimulation]) -> str:
    """The windows' common mode, or "mixed"; empty windows (nothing predicted) do not count."""
    modes = {w.mode for w in windows if w.values.size} or {w.mode for w in windows}
    return modes.pop() if len(modes) == 1 else "mixed"


def _simulation_rows(key: dict, examples: Sequence[Example], true_acts: list[np.ndarray],
                     windows: Sequence[WindowSimulation]) -> list[dict]:
    return [{**key, "ctx_id": int(e.ctx_id), "true_acts": t.tolist(), "sim_acts": w.values.tolist(),
             "p_active": None if w.p_active is None else w.p_active.tolist()}
            for e, t, w in zip(examples, true_acts, windows, strict=True)]


def _aligned(sims: Sequence[WindowSimulation], true_acts: list[np.ndarray], simulator: str,
             latent: int) -> list[WindowSimulation]:
    """Check the simulator returned one WindowSimulation per window, of the right length."""
    if len(sims) != len(true_acts):
        raise ValueError(f"simulator {simulator} returned {len(sims)} windows for {len(true_acts)} (latent {latent})")
    for i, (sim, true) in enumerate(zip(sims, true_acts, strict=True)):
        if not isinstance(sim, WindowSimulation):
            raise ValueError(f"simulator {simulator}, latent {latent}, window {i}: {type(sim).__name__}, "
                             "not a WindowSimulation")
        if sim.values.shape != true.shape:
            raise ValueError(
                f"simulator {simulator}, latent {latent}, window {i}: {sim.values.size} values for {true.size} tokens"
            )
    return list(sims)
