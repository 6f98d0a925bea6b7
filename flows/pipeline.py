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

from flows.config import RunConfig, stable_hash
from flows.stages import data as data_stages
from flows.stages import explain as explain_stages
from flows.stages import latents as latent_stages
from flows.stages import sae as sae_stages
from flows.stages import sampling as sampling_stages
from flows.stages import score as score_stages
from flows.stages.data import DataRef
from flows.stages.dry_run import estimate_llm_cost
from flows.stages.llm_session import close_session, session_for
from flows.store import Store
from flows.store.ids import model_name, sample_key, stats_key

log = logging.getLogger(__name__)


@flow(name="prepare-data")
def prepare_data_flow(cfg: RunConfig) -> DataRef:
    """Contexts and cached residual-stream activations of the subject model."""
    subject = data_stages.load_subject(cfg)
    layer = data_stages.resolve_layer(cfg, subject.n_layers)
    ds, corpus_fp = data_stages.build_contexts(cfg, subject)
    return data_stages.cache_activations(cfg, subject, ds, corpus_fp, layer)


@flow(name="sae")
def sae_flow(cfg: RunConfig, data: DataRef) -> str:
    """Train (or load) the SAE; returns its sae_id."""
    return sae_stages.train_or_load_sae(cfg, data)


@flow(name="latent-cache")
def latent_cache_flow(cfg: RunConfig, data: DataRef, sae_id: str) -> int:
    """Sparse latent activations over the corpus and per-latent statistics."""
    return latent_stages.cache_latents(cfg, data, sae_id)


@flow(name="sample-examples")
def sampling_flow(cfg: RunConfig, data: DataRef, sae_id: str) -> int:
    """Explain/score example sets per latent."""
    return sampling_stages.sample_latent_examples(cfg, data, sae_id)


@flow(name="explain")
def explain_flow(cfg: RunConfig, data: DataRef, sae_id: str, run_id: str) -> str:
    """Explanations for every selected latent (resumes per latent); returns the explainer name."""
    session = session_for(cfg, run_id)
    explainer = explain_stages.make_explainer(cfg, session)
    explain_stages.explain_pending(cfg, data, sae_id, run_id, explainer, session)
    return explainer.name


@flow(name="score")
def score_flow(cfg: RunConfig, data: DataRef, sae_id: str, explainer: str, run_id: str) -> dict:
    """Score the explanations and their random baseline with every requested scorer.

    N2G explanations are simulated by pattern matching; LLM explanations (free text) by the LLM
    simulator; detection and fuzzing always ask the LLM (flows/stages/score.py::make_scorers).
    """
    session = session_for(cfg, run_id)
    scorers = score_stages.make_scorers(cfg, session)
    return score_stages.score_explanations(cfg, data, sae_id, explainer, scorers, run_id, session)


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


def lineage(cfg: RunConfig, data: DataRef, sid: str) -> dict:
    """What the run's results were computed from, by content: recorded in `runs.inputs`."""
    return {"model": model_name(cfg), "model_fingerprint": data.model_fingerprint, "layer": data.layer,
            "corpus": cfg.data.corpus or "pydoc_data.topics", "corpus_fingerprint": data.corpus_fingerprint,
            "dataset_id": data.dataset_id, "sae_id": sid, "sae_path": cfg.sae_path}


def code_version() -> str:
    try:
        return version("latent-atlas")
    except PackageNotFoundError:
        return "unknown"


def config_hash(cfg: RunConfig) -> str:
    """Hash of every setting of a run except where it writes (the same run on two stores hashes alike)."""
    return stable_hash(cfg.model_dump(mode="json", exclude={"store"}), 12)


def record_run(cfg: RunConfig, run_id: str, status: str, started: datetime, error: str = "",
               keys: dict | None = None, inputs: dict | None = None) -> None:
    """One `runs` row per pipeline run, written when it ends (ok or failed), with the full config, its
    hash and the resume keys of the stages it keyed."""
    row = {
        "run_id": run_id, "flow": "pipeline", "status": status, "started_at": started,
        "finished_at": datetime.now(UTC), "config": cfg.model_dump_json(), "code_version": code_version(),
        "error": error, "config_hash": config_hash(cfg),
        "keys": json.dumps({"stats_key": stats_key(cfg), "sample_key": sample_key(cfg), **(keys or {})}),
        "inputs": json.dumps(inputs or {}),
    }
    Store(cfg.store).append("runs", pl.DataFrame([row]), part="run")


@flow(name="latent-atlas-pipeline", log_prints=False)
def pipeline(cfg: RunConfig) -> dict:
    """Corpus -> activations -> SAE -> latent cache -> examples -> explanations -> scores -> reports."""
    logger = get_run_logger()
    run_id = f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    started, clock = datetime.now(UTC), time.perf_counter()
    timings: dict[str, float] = {}
    inputs: dict = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 1)
        logger.info("stage %s done in %.1f s", name, timings[name])
        return out

    try:
        data = timed("prepare-data", prepare_data_flow, cfg)
        sid = timed("sae", sae_flow, cfg, data)
        inputs = lineage(cfg, data, sid)
        timed("latent-cache", latent_cache_flow, cfg, data, sid)
        timed("sample-examples", sampling_flow, cfg, data, sid)
        explainer = timed("explain", explain_flow, cfg, data, sid, run_id)
        counts = timed("score", score_flow, cfg, data, sid, explainer, run_id)
        report = timed("report", report_flow, cfg, sid)
    except BaseException as exc:
        record_run(cfg, run_id, "failed", started, f"{type(exc).__name__}: {exc}", inputs=inputs)
        raise
    finally:
        close_session(run_id)
    Store(cfg.store).ensure_table("llm_calls")  # a run without an LLM still has the table
    keys = {"stats_key": stats_key(cfg), "sample_key": sample_key(cfg),
            "explain_keys": sorted({c["explain_key"] for c in counts.values()}),
            "score_keys": sorted({c["score_key"] for c in counts.values()})}
    record_run(cfg, run_id, "ok", started, keys=keys, inputs=inputs)
    summary = {"run_id": run_id, "sae_id": sid, "data": asdict(data), "scored": counts, "report": report, **keys,
               "timings_s": timings, "wall_s": round(time.perf_counter() - clock, 1)}
    logger.info("run summary: %s", json.dumps(summary))
    return summary
