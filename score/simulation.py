"""Simulation scoring: predict each score-set token's activation from an explanation, compare with truth.

A `Simulator` turns an explanation into per-token predicted activations for the latent's *score* examples
(never the explain examples, which the explainer has seen). `score_latent` runs one simulator over one
latent and returns rows for two store tables (columns fixed by ARCHITECTURE.md):

- `simulations`: one row per score window (sae_id, latent, explainer, scorer, ctx_id, true_acts, sim_acts);
- `scores`: one row per (latent, explainer, scorer) with precision, recall, f1, auroc, correlation, ...

Precision/recall/F1 in the score row are exactly what one gets by concatenating that key's simulation rows
and binarising `true_acts > 0` and `sim_acts > threshold` (both stored as float32 and scored as float32).

Explanations that are not ok (failed/skipped) are not scored: `score_latent` raises `NotScorableError`, and
`score_many` skips them (logging how many), so a failure is never scored as if it were an explanation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from explain.records import Example, Explanation, LatentRecord
from score.metrics import ScoreResult, simulation_scores

log = logging.getLogger(__name__)

SIMULATION_SCHEMA: dict[str, pl.DataType] = {
    "sae_id": pl.String(),
    "latent": pl.Int32(),
    "explainer": pl.String(),
    "scorer": pl.String(),
    "ctx_id": pl.Int64(),
    "true_acts": pl.List(pl.Float32()),
    "sim_acts": pl.List(pl.Float32()),
}
SCORE_SCHEMA: dict[str, pl.DataType] = {
    "sae_id": pl.String(),
    "latent": pl.Int32(),
    "explainer": pl.String(),
    "scorer": pl.String(),
    "precision": pl.Float64(),
    "recall": pl.Float64(),
    "f1": pl.Float64(),
    "auroc": pl.Float64(),
    "correlation": pl.Float64(),
    "threshold": pl.Float64(),
    "n_tokens": pl.Int64(),
    "n_positive": pl.Int64(),
    "run_id": pl.String(),
    "balanced_accuracy": pl.Float64(),
}
"""`balanced_accuracy` is filled by the detection/fuzzing scorers (per context); null for simulation."""


@runtime_checkable
class Simulator(Protocol):
    """Predicts a latent's activation on every token of the given windows from an explanation alone."""

    name: str
    threshold: float
    """A token counts as predicted-active when its simulated activation is > threshold."""

    def simulate(self, explanation: Explanation, examples: list[Example]) -> list[np.ndarray]:
        """One array per example, aligned with `example.acts` ([window] each)."""
        ...


class NotScorableError(ValueError):
    """The explanation cannot be scored (not ok, wrong latent, or no score examples)."""


@dataclass
class ScoredLatent:
    """Rows for the `simulations` and `scores` tables, plus the typed result."""

    simulation_rows: list[dict]
    score_row: dict
    result: ScoreResult


def score_latent(
    explanation: Explanation,
    record: LatentRecord,
    simulator: Simulator,
    scorer: str = "simulation",
    sae_id: str | None = None,
    run_id: str = "",
) -> ScoredLatent:
    """Simulate `explanation` on `record.score` and score it. Raises NotScorableError if it can't be."""
    _check_scorable(explanation, record)
    examples = record.score
    sims = simulator.simulate(explanation, examples)
    true_acts = [np.asarray(e.acts, dtype=np.float32) for e in examples]
    sim_acts = _aligned(sims, true_acts, simulator.name, record.latent)
    result = simulation_scores(true_acts, sim_acts, simulator.threshold)
    key = {
        "sae_id": sae_id if sae_id is not None else record.sae_id,
        "latent": int(record.latent),
        "explainer": explanation.explainer,
        "scorer": scorer,
    }
    simulation_rows = [
        {**key, "ctx_id": int(e.ctx_id), "true_acts": t.tolist(), "sim_acts": s.tolist()}
        for e, t, s in zip(examples, true_acts, sim_acts, strict=True)
    ]
    score_row = {**key, **result.as_dict(), "run_id": run_id, "balanced_accuracy": float("nan")}
    return ScoredLatent(simulation_rows=simulation_rows, score_row=score_row, result=result)


def _check_scorable(explanation: Explanation, record: LatentRecord) -> None:
    if not explanation.ok:
        raise NotScorableError(
            f"latent {record.latent}: explanation by {explanation.explainer} is {explanation.status}"
            f" ({explanation.error or 'no error given'}); only ok explanations are scored"
        )
    if explanation.latent != record.latent:
        raise NotScorableError(f"explanation is for latent {explanation.latent}, record is {record.latent}")
    if not record.score:
        raise NotScorableError(f"latent {record.latent}: no score examples to simulate")


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


def score_many(
    explanations: Iterable[Explanation],
    records: Mapping[int, LatentRecord],
    simulator: Simulator,
    scorer: str = "simulation",
    sae_id: str | None = None,
    run_id: str = "",
) -> list[ScoredLatent]:
    """Score every ok explanation whose latent has a record; skip (and count) the rest."""
    scored: list[ScoredLatent] = []
    skipped = 0
    for explanation in explanations:
        record = records.get(explanation.latent)
        if record is None or not explanation.ok or not record.score:
            skipped += 1
            continue
        scored.append(score_latent(explanation, record, simulator, scorer, sae_id, run_id))
    if skipped:
        log.info("%s/%s: skipped %d explanations (not ok or no score examples)", simulator.name, scorer, skipped)
    return scored


def simulation_frame(scored: Iterable[ScoredLatent]) -> pl.DataFrame:
    """The `simulations` rows of `scored` as a DataFrame with the table's schema (empty-safe)."""
    rows = [row for s in scored for row in s.simulation_rows]
    return pl.DataFrame(rows, schema=SIMULATION_SCHEMA) if rows else pl.DataFrame(schema=SIMULATION_SCHEMA)


def score_frame(scored: Iterable[ScoredLatent]) -> pl.DataFrame:
    """The `scores` rows of `scored` as a DataFrame with the table's schema (empty-safe)."""
    rows = [s.score_row for s in scored]
    return pl.DataFrame(rows, schema=SCORE_SCHEMA) if rows else pl.DataFrame(schema=SCORE_SCHEMA)
