"""Prefect flows: one per stage, and `pipeline`, which runs them in order and records the run.

Stage flows take the run config plus ids/paths and read everything else from the store, so each can
be run (or retried) on its own and a rerun skips what the store already holds.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import polars as pl
from prefect import flow, get_run_logger

from flows.config import RunConfig
from flows.stages import data as data_stages
from flows.stages import explain as explain_stages
from flows.stages import latents as latent_stages
from flows.stages.data import DataRef
from flows.stages.llm import LLM_CALLS_SCHEMA, close_session, estimate_llm_cost, explain_with_llm, score_with_llm
from flows.store import Store

log = logging.getLogger(__name__)


@flow(name="prepare-data")
def prepare_data_flow(cfg: RunConfig) -> DataRef:
    """Contexts and cached residual-stream activations of the subject model."""
    subject = data_stages.load_subject(cfg)
    layer = data_stages.resolve_layer(cfg, subject.n_layers)
    ds = data_stages.build_contexts(cfg, subject)
    return data_stages.cache_activations(cfg, subject, ds, layer)


@flow(name="sae")
def sae_flow(cfg: RunConfig, data: DataRef) -> str:
    """Train (or load) the SAE; returns its sae_id."""
    return data_stages.train_or_load_sae(cfg, data)


@flow(name="latent-cache")
def latent_cache_flow(cfg: RunConfig, data: DataRef, sae_id: str) -> int:
    """Sparse latent activations over the corpus and per-latent statistics."""
    return latent_stages.cache_latents(cfg, data, sae_id)


@flow(name="sample-examples")
def sampling_flow(cfg: RunConfig, data: DataRef, sae_id: str) -> int:
    """Explain/score example sets per latent."""
    return latent_stages.sample_latent_examples(cfg, data, sae_id)


@flow(name="explain")
def explain_flow(cfg: RunConfig, data: DataRef, sae_id: str, run_id: str) -> str:
    """Explanations for every selected latent (resumes per latent); returns the explainer name."""
    if cfg.explainer == "llm":
        explain_with_llm(cfg, data, sae_id, run_id)
    else:
        explain_stages.explain_with_n2g(cfg, data, sae_id, run_id)
    return cfg.explainer


@flow(name="score")
def score_flow(cfg: RunConfig, data: DataRef, sae_id: str, explainer: str, run_id: str) -> dict:
    """Score the explanations and their random baseline with every requested scorer.

    N2G explanations are simulated by pattern matching; LLM explanations (free text) by the LLM
    simulator; detection and fuzzing always ask the LLM.
    """
    baseline = explain_stages.store_random_baseline(cfg, sae_id, explainer, run_id)
    llm_scorers = cfg.llm_scorers()
    counts = {}
    for name in (explainer, baseline):
        if "simulation" in cfg.scorers and cfg.explainer == "n2g":
            from score.simulators.n2g import N2GSimulator

            counts[f"{name}/simulation"] = explain_stages.score_by_simulation(
                cfg, data, sae_id, name, N2GSimulator(), run_id)
        if llm_scorers:
            counts.update(score_with_llm(cfg, data, sae_id, name, llm_scorers, run_id))
    return counts


@flow(name="report")
def report_flow(cfg: RunConfig, sae_id: str) -> str:
    """Per-latent HTML pages and the dashboard index."""
    from flows.reports import write_reports

    return str(write_reports(Store(cfg.store), sae_id))


@flow(name="dry-run")
def dry_run_flow(cfg: RunConfig) -> str:
    """Every stage that costs no LLM call (data, SAE, cache, examples), then the LLM cost estimate."""
    data = prepare_data_flow(cfg)
    sid = sae_flow(cfg, data)
    latent_cache_flow(cfg, data, sid)
    sampling_flow(cfg, data, sid)
    return estimate_llm_cost(cfg, data, sid)


def code_version() -> str:
    try:
        return version("latent-atlas")
    except PackageNotFoundError:
        return "unknown"


def record_run(cfg: RunConfig, run_id: str, status: str, started: datetime, error: str = "") -> None:
    """One `runs` row per pipeline run, written when it ends (ok or failed)."""
    row = {
        "run_id": run_id, "flow": "pipeline", "status": status, "started_at": started,
        "finished_at": datetime.now(UTC), "config": cfg.model_dump_json(), "code_version": code_version(),
        "error": error,
    }
    Store(cfg.store).append("runs", pl.DataFrame([row]), part="run")


@flow(name="latent-atlas-pipeline", log_prints=False)
def pipeline(cfg: RunConfig) -> dict:
    """Corpus -> activations -> SAE -> latent cache -> examples -> explanations -> scores -> reports."""
    logger = get_run_logger()
    run_id = f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    started, clock = datetime.now(UTC), time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 1)
        logger.info("stage %s done in %.1f s", name, timings[name])
        return out

    try:
        data = timed("prepare-data", prepare_data_flow, cfg)
        sid = timed("sae", sae_flow, cfg, data)
        timed("latent-cache", latent_cache_flow, cfg, data, sid)
        timed("sample-examples", sampling_flow, cfg, data, sid)
        explainer = timed("explain", explain_flow, cfg, data, sid, run_id)
        counts = timed("score", score_flow, cfg, data, sid, explainer, run_id)
        report = timed("report", report_flow, cfg, sid)
    except BaseException as exc:
        record_run(cfg, run_id, "failed", started, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        close_session(run_id)
    Store(cfg.store).ensure_table("llm_calls", LLM_CALLS_SCHEMA)  # a run without an LLM still has the table
    record_run(cfg, run_id, "ok", started)
    summary = {"run_id": run_id, "sae_id": sid, "data": asdict(data), "scored": counts, "report": report,
               "timings_s": timings, "wall_s": round(time.perf_counter() - clock, 1)}
    logger.info("run summary: %s", json.dumps(summary))
    return summary
