"""The explain stage: the run's one explainer over every selected latent, resumable per latent.

Latents are processed in chunks; each chunk's rows are appended as one part as soon as it is done (and
the LLM call log flushed), so an interrupted run loses at most one chunk and a rerun only does the
latents that have no ok row yet. Failed and skipped explanations are rows too; a rerun retries them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import polars as pl
from tqdm import tqdm

from explain.explainers.base import Explainer
from explain.explainers.llm import LLMExplainer
from explain.explainers.n2g import N2GExplainer
from flows.config import RunConfig, key_fields
from flows.stages.data import DataRef
from flows.stages.latents import read_stats, selected_latents
from flows.stages.sampling import load_records
from flows.store import Store
from flows.store.ids import explain_key, sample_key, stats_key
from flows.store.rows import explanation_frame, latest_explanations

if TYPE_CHECKING:
    from flows.stages.llm_session import LLMSession

log = logging.getLogger(__name__)

CHUNK_LATENTS = 256
"""Latents per chunk: one part per chunk and table, the most work an interruption loses."""


def make_explainer(cfg: RunConfig, session: LLMSession | None) -> Explainer:
    """The run's explainer. Without a session the LLM explainer can only plan its requests (dry run)."""
    if cfg.explainer == "llm":
        client, budget = (session.client, session.budget) if session is not None else (None, None)
        return LLMExplainer(client, budget=budget, progress=True)
    return N2GExplainer(cfg.n2g)


def identity(cfg: RunConfig, component: object, uses_llm: bool) -> dict:
    """What identifies an explainer's or scorer's output in the resume keys: its own identity and, when it
    asks an LLM, the run's LLM settings that change replies (model, temperature, ...). Taken from the run
    config, not from a client, so a dry run (no client) computes the same keys as a real run."""
    ident = dict(component.identity())  # type: ignore[attr-defined]
    if uses_llm:
        ident.update(model=cfg.llm.model, llm=key_fields(cfg, "llm"))
    return ident


def explainer_key(cfg: RunConfig, explainer: Explainer) -> str:
    """`explain_key` of the run's explainer: its examples (sample key) and its identity."""
    return explain_key(sample_key(cfg), identity(cfg, explainer, cfg.explainer == "llm"))


def pending_latents(store: Store, cfg: RunConfig, sid: str, explainer: Explainer) -> list[int]:
    """Selected latents that still need an explanation by `explainer` under the run's explain key.

    A latent whose newest row is ok is done. A failed one is retried on a rerun only when the failure
    can be transient (an LLM call); N2G is deterministic, so its failure ("no n-gram precise enough")
    would only come back again and is kept as the answer.
    """
    wanted = selected_latents(read_stats(store, sid, stats_key(cfg)), cfg.max_latents)
    done = latest_explanations(store, sid, explainer.name, explainer_key(cfg, explainer))
    final = ["ok"] if cfg.explainer == "llm" else ["ok", "failed"]
    done = done.filter(pl.col("status").is_in(final))
    done_set = set(done["latent"].to_list())
    return [latent for latent in wanted if latent not in done_set]


def explain_pending(cfg: RunConfig, data: DataRef, sid: str, run_id: str, explainer: Explainer,
                    session: LLMSession | None) -> int:
    """Explanations by `explainer` for every pending latent, a chunk at a time; returns how many rows
    were written (failures included)."""
    store, key = Store(cfg.store), explainer_key(cfg, explainer)
    todo = pending_latents(store, cfg, sid, explainer)
    written = 0
    with tqdm(total=len(todo), desc=f"explain ({explainer.name})", unit="latent") as bar:
        for start in range(0, len(todo), CHUNK_LATENTS):
            chunk = todo[start: start + CHUNK_LATENTS]
            explanations = explainer.explain_many(load_records(store, cfg, sid, data.dataset_id, chunk))
            store.append("explanations", explanation_frame(explanations, sid, run_id, key), part=sid)
            if session is not None:
                session.flush_calls()
            written += len(explanations)
            bar.update(len(chunk))
    return written
