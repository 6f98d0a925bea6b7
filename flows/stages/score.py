"""The score stage: every scorer of the run over the explanations and their baselines, resumable per
latent, one Prefect task per chunk of latents (flows/tasks.py).

`score_plan` stores the baselines (the random derangement, top-token and always-on) and lists the jobs:
one per (explainer, scorer) with its explain and score keys; `score_chunk` scores one chunk of a job.
Scorers are rebuilt from the run config in the process that runs the chunk (`job_scorer`), so a Dask
worker needs only the config, ids and the store. The `simulations` and `scores` rows of a chunk commit
together (Store.append_together, scores last) as soon as it is scored (and the LLM call log flushed), so
an interrupted run loses at most one chunk and a rerun only scores the ok explanations that have no score
row yet. score/ rows know nothing of stores and runs: sae_id and run_id are added here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

from explain.records import Explanation, LatentRecord
from flows.config import RunConfig
from flows.stages.data import DataRef
from flows.stages.explain import corpus_source, explainer_key, identity, make_explainer
from flows.stages.latents import read_latent_acts
from flows.stages.sampling import load_records
from flows.store import Store
from flows.store.ids import explain_key, sample_key, score_key
from flows.store.rows import explanation_frame, explanations_from_frame, latest_explanations, scored_latents
from flows.store.schemas import table_schema
from score.base import ScoreOutcome, Scorer
from score.baselines import (
    PATTERN_BASELINES,
    TOP_TOKEN,
    always_on_explanations,
    baseline_name,
    random_baseline_explanations,
    top_token_explanations,
)
from score.intervals import INTERVAL_COLUMNS
from score.judges.detection import DetectionScorer
from score.judges.fuzzing import FuzzingScorer
from score.natural import HeldOutCorpus, NaturalPatternScorer
from score.simulation import SimulationScorer
from score.simulators.llm import LLMSimulator
from score.simulators.n2g import N2GSimulator

if TYPE_CHECKING:
    from flows.stages.llm_session import LLMSession

log = logging.getLogger(__name__)

SCORE_DEFAULTS = {**dict.fromkeys(INTERVAL_COLUMNS, math.nan), "decile_recall": None}
"""Columns of a scorer that computes no intervals or decile recall (the LLM judges)."""


def make_scorers(cfg: RunConfig, session: LLMSession | None) -> list[Scorer]:
    """The run's scorers, in `cfg.scorers` order. Simulation matches N2G patterns for N2G explanations
    and asks the LLM for free-text (LLM) ones; detection and fuzzing always ask the LLM. Without a
    session the LLM scorers can only plan their requests (dry run)."""
    client, budget = (session.client, session.budget) if session is not None else (None, None)

    def simulation() -> Scorer:
        if cfg.explainer == "llm":
            return SimulationScorer(LLMSimulator(client, cfg.simulator, budget=budget, progress=True))
        return SimulationScorer(N2GSimulator())

    builders = {
        "simulation": simulation,
        "detection": lambda: DetectionScorer(client, budget=budget, progress=True),
        "fuzzing": lambda: FuzzingScorer(client, budget=budget, progress=True),
    }
    return [builders[name]() for name in cfg.scorers]


def _asks_llm(scorer: Scorer) -> bool:
    """Whether the scorer's output depends on the run's LLM settings (they then enter its score key)."""
    return isinstance(scorer, DetectionScorer | FuzzingScorer) or isinstance(getattr(scorer, "simulator", None),
                                                                            LLMSimulator)


def natural_scorer(cfg: RunConfig, store: Store, data: DataRef, sid: str) -> NaturalPatternScorer:
    """Pattern explanations scored on every held-out token of the corpus (score/natural.py), on the same
    corpus index N2G mined (one per process)."""
    source = corpus_source(cfg, data, sid)
    return NaturalPatternScorer(HeldOutCorpus(source.index, cfg.seed, cfg.sampling.explain_fraction),
                                lambda latents: read_latent_acts(store, sid, latents))


@dataclass(frozen=True)
class ScoreJob:
    """One (explainer, scorer) pair to score: `slot` names the scorer ("run:<i>" the i-th of the run's
    scorers, "natural" exact natural scores, "patterns" pattern-matching simulation)."""

    explainer: str
    explain_key: str
    slot: str
    scorer: str
    population: str
    score_key: str

    @property
    def label(self) -> str:
        return f"{self.explainer}/{self.scorer}/{self.population}"


def job_scorer(cfg: RunConfig, data: DataRef, sid: str, slot: str, session: LLMSession | None) -> Scorer:
    """The scorer of a job's slot, built in the calling process."""
    if slot == "natural":
        return natural_scorer(cfg, Store(cfg.store), data, sid)
    if slot == "patterns":
        return SimulationScorer(N2GSimulator())
    return make_scorers(cfg, session)[int(slot.removeprefix("run:"))]


def score_plan(cfg: RunConfig, data: DataRef, sid: str, explainer: str, run_id: str) -> list[ScoreJob]:
    """Store the baselines of `explainer`'s ok explanations and return every scoring job of the run.

    The explainer and its random baseline get the run's scorers; pattern explanations (N2G, and the
    top-token and always-on baselines, which are pattern rules whatever the explainer) are also scored
    on the natural population, exactly. The pattern baselines are simulated by pattern matching even in
    an LLM run: they cost nothing and mean the same in every run.
    """
    store = Store(cfg.store)
    key = explainer_key(cfg, make_explainer(cfg, None))
    random_name, random_key = store_random_baseline(store, sid, explainer, key, run_id, cfg.seed)
    pattern_keys = store_pattern_baselines(cfg, store, data, sid, explainer, key, run_id)
    run_slots = [f"run:{i}" for i in range(len(cfg.scorers))]
    run_slots += ["natural"] if cfg.explainer == "n2g" else []
    groups = [(explainer, key, run_slots), (random_name, random_key, run_slots),
              *[(name, ek, ["patterns", "natural"]) for name, ek in pattern_keys.items()]]
    jobs = []
    for name, ek, slots in groups:
        for slot in slots:
            scorer = job_scorer(cfg, data, sid, slot, None)
            sk = score_key(ek, identity(cfg, scorer, _asks_llm(scorer)))
            jobs.append(ScoreJob(name, ek, slot, scorer.name, getattr(scorer, "population", "sampled"), sk))
    return jobs


def pending_chunks(cfg: RunConfig, sid: str, job: ScoreJob) -> list[list[int]]:
    """The job's ok explanations with no score row under its key yet, in chunks of `--chunk-latents`."""
    todo = _pending(Store(cfg.store), sid, job, None)
    size = cfg.chunk_latents
    return [todo[start: start + size] for start in range(0, len(todo), size)]


def _pending(store: Store, sid: str, job: ScoreJob, latents: list[int] | None) -> list[int]:
    ok = latest_explanations(store, sid, job.explainer, job.explain_key).filter(pl.col("status") == "ok")
    done = sorted(scored_latents(store, sid, job.explainer, job.scorer, job.score_key))
    todo = ok.filter(~pl.col("latent").is_in(done))["latent"].to_list()
    if latents is None:
        return todo
    wanted = set(latents)
    return [latent for latent in todo if latent in wanted]


def score_chunk(cfg: RunConfig, data: DataRef, sid: str, run_id: str, job: ScoreJob, session: LLMSession | None,
                latents: list[int]) -> int:
    """Score those of `latents` the job has not scored yet and append their rows; returns how many
    latents got a score row. Rerunning a chunk writes nothing twice."""
    store = Store(cfg.store)
    todo = _pending(store, sid, job, latents)
    if not todo:
        return 0
    explanations = latest_explanations(store, sid, job.explainer, job.explain_key).filter(
        pl.col("latent").is_in(todo))
    records = {r.latent: r for r in load_records(store, cfg, sid, data.dataset_id, todo)}
    scorer = job_scorer(cfg, data, sid, job.slot, session)
    return _score_chunk(scorer, explanations_from_frame(explanations), records, store, sid, run_id, session,
                        job.score_key)


def store_pattern_baselines(cfg: RunConfig, store: Store, data: DataRef, sid: str, explainer: str, key: str,
                            run_id: str) -> dict[str, str]:
    """The top-token and always-on baselines of every latent `explainer` explained; returns their explain
    keys. Both depend only on the examples (the sample key), not on the explainer."""
    latents = latest_explanations(store, sid, explainer, key).filter(pl.col("status") == "ok")["latent"].to_list()
    keys = {name: explain_key(sample_key(cfg), {"baseline": name}) for name in PATTERN_BASELINES}
    for name, bk in keys.items():
        have = set(latest_explanations(store, sid, name, bk)["latent"].to_list())
        todo = [latent for latent in latents if latent not in have]
        for start in range(0, len(todo), cfg.chunk_latents):
            chunk = todo[start: start + cfg.chunk_latents]
            if name == TOP_TOKEN:
                rows = top_token_explanations(load_records(store, cfg, sid, data.dataset_id, chunk))
            else:
                rows = always_on_explanations(chunk)
            store.append("explanations", explanation_frame(rows, sid, run_id, bk), part=sid)
    return keys


def store_random_baseline(store: Store, sid: str, explainer: str, key: str, run_id: str, seed: int
                          ) -> tuple[str, str]:
    """Give each explained latent another latent's explanation (explainer `<name>-random`); returns the
    baseline's name and explain key (derived from the explainer's: new explanations, a new baseline)."""
    name, baseline_key = baseline_name(explainer), explain_key(key, {"baseline": "random", "seed": seed})
    ok = latest_explanations(store, sid, explainer, key).filter(pl.col("status") == "ok")
    if latest_explanations(store, sid, name, baseline_key).height >= ok.height:
        return name, baseline_key
    baselines = random_baseline_explanations(explanations_from_frame(ok), seed=seed)
    store.append("explanations", explanation_frame(baselines, sid, run_id, baseline_key), part=sid)
    return name, baseline_key


def _score_chunk(scorer: Scorer, explanations: list[Explanation], records: dict[int, LatentRecord],
                 store: Store, sid: str, run_id: str, session: LLMSession | None, key: str) -> int:
    """Score one chunk and append its rows (the one place score rows enter the store); returns how many
    latents got a score row."""
    outcomes = scorer.score_many(explanations, records)
    ok = [o for o in outcomes if o.ok]
    simulations = [{**row, "sae_id": sid, "score_key": key} for o in ok for row in o.simulation_rows]
    scores = [{**SCORE_DEFAULTS, **row, "sae_id": sid, "run_id": run_id, "score_key": key}
              for o in ok for row in o.score_rows]
    failed = [o for o in outcomes if not o.ok]
    now = datetime.now(UTC)
    failures = [{"sae_id": sid, "score_key": key, "latent": o.latent, "explainer": o.explainer, "scorer": o.scorer,
                 "status": o.status, "reason": (o.error.splitlines() or [o.status])[0][:500],
                 "run_id": run_id, "created_at": now} for o in failed]
    # One commit: a kill between the parts must not leave simulations that the rerun writes again. The
    # reasons come scrubbed of API keys from the scorers (LLMClient.scrub).
    store.append_together({"simulations": _frame("simulations", simulations),
                           "score_failures": _frame("score_failures", failures),
                           "scores": _frame("scores", scores)}, part=sid)
    if session is not None:
        session.flush_calls()
    _log_failures(failed)
    return len(ok)


def _frame(table: str, rows: list[dict]) -> pl.DataFrame:
    """Rows as a frame; no rows: the table's empty frame (a chunk with nothing scored still commits)."""
    return pl.DataFrame(rows, infer_schema_length=None) if rows else table_schema(table).empty()


def _log_failures(outcomes: list[ScoreOutcome]) -> None:
    """The first few latents a chunk could not score, and how many more (they are retried on a rerun)."""
    for outcome in outcomes[:5]:
        log.warning("%s/%s latent %d %s: %s", outcome.explainer, outcome.scorer, outcome.latent, outcome.status,
                    outcome.error)
    if len(outcomes) > 5:
        log.warning("%s/%s: %d more latents not scored (rerun retries them)", outcomes[0].explainer,
                    outcomes[0].scorer, len(outcomes) - 5)
