"""The score stage: every scorer of the run over the explanations and their random baseline, resumable
per latent.

One loop serves every scorer (flows/stages/score.py::make_scorers picks the implementations) and both
explainers of a run: the real one and its random baseline `<explainer>-random`. Latents go in chunks;
the `simulations` and `scores` rows of a chunk are appended together as soon as it is scored (and the
LLM call log flushed), so an interrupted run loses at most one chunk and a rerun only scores the ok
explanations that have no score row yet. score/ rows know nothing of stores and runs: sae_id and
run_id are added here.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import polars as pl
from tqdm import tqdm

from explain.records import Explanation, LatentRecord
from flows.config import RunConfig
from flows.stages.data import DataRef, read_contexts
from flows.stages.explain import CHUNK_LATENTS, explainer_key, identity, make_explainer
from flows.stages.latents import latent_acts_dir
from flows.stages.sampling import load_records
from flows.store import Store
from flows.store.ids import explain_key, sample_key, score_key
from flows.store.rows import explanation_frame, explanations_from_frame, latest_explanations, scored_latents
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

NO_INTERVALS = dict.fromkeys(INTERVAL_COLUMNS, math.nan)
"""Interval columns of a scorer that computes none (the LLM judges)."""


def make_scorers(cfg: RunConfig, session: LLMSession | None) -> list[Scorer]:
    """The run's scorers, in `cfg.scorers` order. Simulation matches N2G patterns for N2G explanations
    and asks the LLM for free-text (LLM) ones; detection and fuzzing always ask the LLM. Without a
    session the LLM scorers can only plan their requests (dry run)."""
    client, budget = (session.client, session.budget) if session is not None else (None, None)

    def simulation() -> Scorer:
        if cfg.explainer == "llm":
            return SimulationScorer(LLMSimulator(client, budget=budget, progress=True))
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
    """Pattern explanations scored on every held-out token of the corpus (score/natural.py)."""
    corpus = HeldOutCorpus.from_contexts(read_contexts(store, data.dataset_id), cfg.seed,
                                         cfg.sampling.explain_fraction)
    cache = latent_acts_dir(store, sid) / "*.parquet"

    def truth(latents: list[int]) -> pl.DataFrame:
        return pl.scan_parquet(str(cache)).filter(pl.col("latent").is_in(latents)).drop("sae_id").collect()

    return NaturalPatternScorer(corpus, truth)


def score_explanations(cfg: RunConfig, data: DataRef, sid: str, explainer: str, scorers: list[Scorer],
                       run_id: str, session: LLMSession | None) -> dict[str, dict[str, object]]:
    """Score `explainer`'s ok explanations and their baselines; returns, per "<explainer>/<scorer>/<population>",
    the latents scored now and the explain and score keys of its rows.

    The explainer and its random baseline get the run's scorers; pattern explanations (N2G, and the
    top-token and always-on baselines, which are pattern rules whatever the explainer) are also scored
    on the natural population, exactly. The pattern baselines are simulated by pattern matching even in
    an LLM run: they cost nothing and mean the same in every run.
    """
    store = Store(cfg.store)
    key = explainer_key(cfg, make_explainer(cfg, None))
    random_name, random_key = store_random_baseline(store, sid, explainer, key, run_id, cfg.seed)
    pattern_keys = store_pattern_baselines(cfg, store, data, sid, explainer, key, run_id)
    natural = natural_scorer(cfg, store, data, sid)
    pattern_scorers: list[Scorer] = [SimulationScorer(N2GSimulator()), natural]
    run_scorers = [*scorers, natural] if cfg.explainer == "n2g" else scorers
    groups = [(explainer, key, run_scorers), (random_name, random_key, run_scorers),
              *[(name, ek, pattern_scorers) for name, ek in pattern_keys.items()]]
    counts: dict[str, dict[str, object]] = {}
    for name, ek, group_scorers in groups:
        for scorer in group_scorers:
            sk = score_key(ek, identity(cfg, scorer, _asks_llm(scorer)))
            written = _score_pending(cfg, store, data, sid, (name, ek), scorer, sk, run_id, session)
            population = getattr(scorer, "population", "sampled")
            counts[f"{name}/{scorer.name}/{population}"] = {"scored": written, "explain_key": ek, "score_key": sk}
    return counts


def store_pattern_baselines(cfg: RunConfig, store: Store, data: DataRef, sid: str, explainer: str, key: str,
                            run_id: str) -> dict[str, str]:
    """The top-token and always-on baselines of every latent `explainer` explained; returns their explain
    keys. Both depend only on the examples (the sample key), not on the explainer."""
    latents = latest_explanations(store, sid, explainer, key).filter(pl.col("status") == "ok")["latent"].to_list()
    keys = {name: explain_key(sample_key(cfg), {"baseline": name}) for name in PATTERN_BASELINES}
    for name, bk in keys.items():
        have = set(latest_explanations(store, sid, name, bk)["latent"].to_list())
        todo = [latent for latent in latents if latent not in have]
        for start in range(0, len(todo), CHUNK_LATENTS):
            chunk = todo[start: start + CHUNK_LATENTS]
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


def _score_pending(cfg: RunConfig, store: Store, data: DataRef, sid: str, explained: tuple[str, str],
                   scorer: Scorer, key: str, run_id: str, session: LLMSession | None) -> int:
    """Score every ok explanation of (explainer, explain key) that `scorer` has not scored under `key`
    yet, a chunk at a time."""
    explainer, ek = explained
    ok = latest_explanations(store, sid, explainer, ek).filter(pl.col("status") == "ok")
    todo = ok.filter(~pl.col("latent").is_in(sorted(scored_latents(store, sid, explainer, scorer.name, key))))
    written = 0
    population = getattr(scorer, "population", "sampled")
    with tqdm(total=todo.height, desc=f"{scorer.name} {population} ({explainer})", unit="latent") as bar:
        for start in range(0, todo.height, CHUNK_LATENTS):
            chunk = todo.slice(start, CHUNK_LATENTS)
            latents = chunk["latent"].to_list()
            records = {r.latent: r for r in load_records(store, cfg, sid, data.dataset_id, latents)}
            written += _score_chunk(scorer, explanations_from_frame(chunk), records, store, sid, run_id, session,
                                    key)
            bar.update(chunk.height)
    return written


def _score_chunk(scorer: Scorer, explanations: list[Explanation], records: dict[int, LatentRecord],
                 store: Store, sid: str, run_id: str, session: LLMSession | None, key: str) -> int:
    """Score one chunk and append its rows (the one place score rows enter the store); returns how many
    latents got a score row."""
    outcomes = scorer.score_many(explanations, records)
    ok = [o for o in outcomes if o.ok]
    simulations = [{**row, "sae_id": sid, "score_key": key} for o in ok for row in o.simulation_rows]
    scores = [{"population": "sampled", **NO_INTERVALS, **o.score_row, "sae_id": sid, "run_id": run_id,
               "score_key": key} for o in ok if o.score_row is not None]
    store.append("simulations", pl.DataFrame(simulations, infer_schema_length=None), part=sid)
    store.append("scores", pl.DataFrame(scores, infer_schema_length=None), part=sid)
    if session is not None:
        session.flush_calls()
    _log_failures([o for o in outcomes if not o.ok])
    return len(ok)


def _log_failures(outcomes: list[ScoreOutcome]) -> None:
    """The first few latents a chunk could not score, and how many more (they are retried on a rerun)."""
    for outcome in outcomes[:5]:
        log.warning("%s/%s latent %d %s: %s", outcome.explainer, outcome.scorer, outcome.latent, outcome.status,
                    outcome.error)
    if len(outcomes) > 5:
        log.warning("%s/%s: %d more latents not scored (rerun retries them)", outcomes[0].explainer,
                    outcomes[0].scorer, len(outcomes) - 5)
