"""The explain stage: the run's one explainer over every selected latent, resumable per latent.

Latents are processed in chunks, one Prefect task each (flows/tasks.py); each chunk's rows are appended
as one part as soon as it is done (and the LLM call log flushed), so an interrupted run loses at most one
chunk and a rerun only does the latents that have no ok row yet. Failed and skipped explanations are rows
too; a rerun retries the LLM's (they may be transient).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import polars as pl

from explain.explainers.base import Explainer
from explain.explainers.llm import LLMExplainer
from explain.explainers.n2g import CorpusSource, N2GExplainer
from explain.latents.corpus_index import CorpusIndex
from flows.config import RunConfig, key_fields
from flows.stages.data import DataRef, read_contexts
from flows.stages.latents import read_latent_acts, read_stats, selected_latents
from flows.stages.sampling import load_records
from flows.store import Store
from flows.store.ids import explain_key, sample_key, stats_key
from flows.store.rows import explanation_frame, latest_explanations

if TYPE_CHECKING:
    from flows.stages.llm_session import LLMSession

log = logging.getLogger(__name__)


def make_explainer(cfg: RunConfig, session: LLMSession | None, source: CorpusSource | None = None) -> Explainer:
    """The run's explainer. Without a session the LLM explainer can only plan its requests (dry run);
    N2G mines on `source` (the corpus) when given, else on the explain windows (enough for its key)."""
    if cfg.explainer == "llm":
        client, budget = (session.client, session.budget) if session is not None else (None, None)
        return LLMExplainer(client, budget=budget, progress=True)
    return N2GExplainer(cfg.n2g, source)


_INDEXES: dict[tuple[str, str], CorpusIndex] = {}
"""Corpus indexes built in this process, by (store, dataset): every chunk task of a run reuses one."""


def corpus_source(cfg: RunConfig, data: DataRef, sid: str) -> CorpusSource:
    """The corpus and the latent cache of `sid`, for N2G to mine every explain-side context (built once
    per process; the split seed and fraction are the run's, so they are part of the source)."""
    store = Store(cfg.store)
    key = (str(store.root.resolve()), data.dataset_id)
    if key not in _INDEXES:
        _INDEXES.clear()  # one corpus at a time: an index holds ~16 bytes per token per n-gram shape
        _INDEXES[key] = CorpusIndex.from_contexts(read_contexts(store, data.dataset_id))
    return CorpusSource(_INDEXES[key], lambda latents: read_latent_acts(store, sid, latents), cfg.seed,
                        cfg.sampling.explain_fraction)


def run_explainer(cfg: RunConfig, data: DataRef, sid: str, session: LLMSession | None) -> Explainer:
    """The run's explainer, ready to explain `sid`'s latents (N2G gets the corpus)."""
    source = corpus_source(cfg, data, sid) if cfg.explainer == "n2g" else None
    return make_explainer(cfg, session, source)


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
    wanted = selected_latents(read_stats(store, sid, stats_key(cfg)), cfg.max_latents, cfg.latents, cfg.seed)
    done = latest_explanations(store, sid, explainer.name, explainer_key(cfg, explainer))
    final = ["ok"] if cfg.explainer == "llm" else ["ok", "failed"]
    done = done.filter(pl.col("status").is_in(final))
    done_set = set(done["latent"].to_list())
    return [latent for latent in wanted if latent not in done_set]


def pending_chunks(cfg: RunConfig, sid: str, explainer: Explainer) -> list[list[int]]:
    """The pending latents in chunks of `--chunk-latents` (one task, and one part per table, each)."""
    todo = pending_latents(Store(cfg.store), cfg, sid, explainer)
    size = cfg.chunk_latents
    return [todo[start: start + size] for start in range(0, len(todo), size)]


def explain_chunk(cfg: RunConfig, data: DataRef, sid: str, run_id: str, explainer: Explainer,
                  session: LLMSession | None, latents: list[int]) -> int:
    """Explain those of `latents` still pending and append their rows as one part (and flush the LLM call
    log); returns how many rows were written (failures included). Rerunning a chunk writes nothing twice."""
    store, key = Store(cfg.store), explainer_key(cfg, explainer)
    pending = set(pending_latents(store, cfg, sid, explainer))
    chunk = [latent for latent in latents if latent in pending]
    if not chunk:
        return 0
    explanations = explainer.explain_many(load_records(store, cfg, sid, data.dataset_id, chunk))
    store.append("explanations", explanation_frame(explanations, sid, run_id, key), part=sid)
    if session is not None:
        session.flush_calls()
    return len(explanations)
