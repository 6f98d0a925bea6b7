"""The scorer role: one result type and one interface for every scorer (simulation, detection, fuzzing).

A scorer takes explanations and the latents' records and returns one `ScoreOutcome` per explanation,
in order. It never raises for one latent's problem: an explanation that is not ok, a latent without
score examples or a budget that ran out is "skipped", a model/server failure is "failed", and both
carry an error. Only "ok" outcomes have rows.

Rows carry only what score/ knows: each of `score_rows` has latent, explainer, scorer, population,
estimator and the metrics (one row per population and estimator: the score set as sampled, and for
the simulation scorer also its natural-population estimate); `simulation_rows` (simulation scorers
only) have latent, explainer, scorer, ctx_id, true_acts and sim_acts. Which SAE and which run they
belong to is the flows' business: they add sae_id and run_id when they store the rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from explain.records import Explanation, LatentRecord

log = logging.getLogger(__name__)

ScoreStatus = Literal["ok", "failed", "skipped"]


@dataclass
class ScoreOutcome:
    """One latent's result under one scorer: rows when ok, a reason otherwise."""

    latent: int
    explainer: str
    scorer: str
    status: ScoreStatus
    """"ok", "failed" (the scorer's calls failed) or "skipped" (explanation not ok, no examples, budget)."""
    error: str = ""
    score_rows: list[dict] = field(default_factory=list)
    """`scores` rows, one per (population, estimator); empty unless ok. The first is the scorer's own
    population (sampled for the score-set scorers)."""
    simulation_rows: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@runtime_checkable
class Scorer(Protocol):
    """Scores explanations in batches; `name` is the `scorer` column of the rows it returns."""

    name: str

    def identity(self) -> dict:
        """JSON-able description of everything that changes this scorer's output."""
        ...

    def score_many(self, explanations: Sequence[Explanation],
                   records: Mapping[int, LatentRecord]) -> list[ScoreOutcome]:
        """One outcome per explanation, in input order; `records` maps latent -> its record."""
        ...


def skip_reason(explanation: Explanation, record: LatentRecord | None) -> str:
    """Why `explanation` cannot be scored against `record` ("" when it can): only ok explanations of
    the record's own latent, with score examples, are scored (a failure is never scored as if it were
    an explanation)."""
    latent = explanation.latent
    if not explanation.ok:
        return (f"latent {latent}: explanation by {explanation.explainer} is {explanation.status}"
                f" ({explanation.error or 'no error given'}); only ok explanations are scored")
    if record is None:
        return f"latent {latent}: no record"
    if record.latent != latent:
        return f"explanation is for latent {latent}, record is {record.latent}"
    if not record.score:
        return f"latent {latent}: no score examples"
    return ""


Scorable = tuple[int, Explanation, LatentRecord]
"""An explanation to score: its position in the input, itself and its latent's record."""


def partition(explanations: Sequence[Explanation], records: Mapping[int, LatentRecord],
              scorer: str) -> tuple[dict[int, ScoreOutcome], list[Scorable]]:
    """The "skipped" outcomes by input position (see `skip_reason`), and the scorable rest in order."""
    done: dict[int, ScoreOutcome] = {}
    scorable: list[Scorable] = []
    for position, explanation in enumerate(explanations):
        record = records.get(explanation.latent)
        reason = skip_reason(explanation, record)
        if reason or record is None:
            done[position] = ScoreOutcome(int(explanation.latent), explanation.explainer, scorer, "skipped", reason)
        else:
            scorable.append((position, explanation, record))
    return done, scorable


def log_outcomes(scorer: str, outcomes: Sequence[ScoreOutcome]) -> None:
    """One info line per batch: how many outcomes were ok, failed and skipped."""
    counts = {status: sum(o.status == status for o in outcomes) for status in ("ok", "failed", "skipped")}
    log.info("%s: %d ok, %d failed, %d skipped", scorer, counts["ok"], counts["failed"], counts["skipped"])
