"""Explain and score stages, resumable per latent.

Latents are processed in chunks; each chunk's rows are appended as one part as soon as it is done, so
an interrupted run loses at most one chunk and a rerun only does the latents that have no row yet.
"""

from __future__ import annotations

import logging

import polars as pl
from tqdm import tqdm

from explain.records import Explanation, LatentRecord
from flows.config import RunConfig
from flows.stages.data import DataRef
from flows.stages.latents import load_records, read_stats, selected_latents
from flows.store import Store
from flows.store.rows import (
    explanation_frame,
    explanations_from_frame,
    latest_explanations,
    scored_latents,
)

log = logging.getLogger(__name__)

CHUNK_LATENTS = 256


def _chunks(items: list, size: int = CHUNK_LATENTS):
    for start in range(0, len(items), size):
        yield items[start: start + size]


def pending_latents(store: Store, sid: str, explainer: str, max_latents: int | None) -> list[int]:
    """Selected latents without an ok explanation by `explainer` yet."""
    wanted = selected_latents(read_stats(store, sid), max_latents)
    done = latest_explanations(store, sid, explainer).filter(pl.col("status") == "ok")
    done_set = set(done["latent"].to_list())
    return [latent for latent in wanted if latent not in done_set]


def explain_with_n2g(cfg: RunConfig, data: DataRef, sid: str, run_id: str) -> int:
    """N2G explanations for every pending latent; returns how many were written."""
    from explain.explainers.n2g import N2GConfig, explain_n2g

    store = Store(cfg.store)
    todo = pending_latents(store, sid, "n2g", cfg.max_latents)
    n2g_cfg = N2GConfig()
    written = 0
    with tqdm(total=len(todo), desc="explain (n2g)", unit="latent") as bar:
        for chunk in _chunks(todo):
            records = load_records(store, sid, data.dataset_id, chunk)
            explanations = [explain_n2g(record, n2g_cfg) for record in records]
            store.append("explanations", explanation_frame(explanations, sid, run_id), part=sid)
            written += len(explanations)
            bar.update(len(chunk))
    return written


def _score_chunk(explanations: list[Explanation], records: dict[int, LatentRecord], simulator, scorer: str,
                 sid: str, run_id: str, store: Store) -> int:
    from score.simulation import score_frame, score_many, simulation_frame

    scored = score_many(explanations, records, simulator, scorer=scorer, sae_id=sid, run_id=run_id)
    store.append("simulations", simulation_frame(scored), part=sid)
    store.append("scores", score_frame(scored), part=sid)
    return len(scored)


def score_by_simulation(cfg: RunConfig, data: DataRef, sid: str, explainer: str, simulator,
                        run_id: str) -> int:
    """Simulate and score every ok explanation of `explainer` that has no score yet."""
    store = Store(cfg.store)
    ok = latest_explanations(store, sid, explainer).filter(pl.col("status") == "ok")
    done = scored_latents(store, sid, explainer, "simulation")
    todo = ok.filter(~pl.col("latent").is_in(sorted(done)))
    written = 0
    with tqdm(total=todo.height, desc=f"score ({explainer})", unit="latent") as bar:
        for start in range(0, todo.height, CHUNK_LATENTS):
            chunk = todo.slice(start, CHUNK_LATENTS)
            records = {r.latent: r for r in load_records(store, sid, data.dataset_id, chunk["latent"].to_list())}
            written += _score_chunk(explanations_from_frame(chunk), records, simulator, "simulation", sid,
                                    run_id, store)
            bar.update(chunk.height)
    return written


def store_random_baseline(cfg: RunConfig, sid: str, explainer: str, run_id: str) -> str:
    """Give each explained latent another latent's explanation (explainer `<name>-random`)."""
    from score.baselines import baseline_name, random_baseline_explanations

    store = Store(cfg.store)
    name = baseline_name(explainer)
    ok = latest_explanations(store, sid, explainer).filter(pl.col("status") == "ok")
    if latest_explanations(store, sid, name).height >= ok.height:
        return name
    baselines = random_baseline_explanations(explanations_from_frame(ok), seed=cfg.seed)
    store.append("explanations", explanation_frame(baselines, sid, run_id), part=sid)
    return name
