"""Prefect flows: one per stage, and `pipeline`, which runs them in order and records the run.

Stage flows take the run config plus ids/paths and read everything else from the store, so each can
be run (or retried) on its own and a rerun skips what the store already holds.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import polars as pl
from prefect import flow, get_run_logger

from flows.artifacts import StageProgress, publish_run_artifacts
from flows.config import PLACEMENT, RunConfig, stable_hash
from flows.reports.summary import score_summary
from flows.runners import dask_scheduler, fan_out
from flows.stages import data as data_stages
from flows.stages import explain as explain_stages
from flows.stages import latents as latent_stages
from flows.stages import sae as sae_stages
from flows.stages import sampling as sampling_stages
from flows.stages import score as score_stages
from flows.stages.data import DataRef
from flows.stages.dry_run import estimate_llm_cost
from flows.stages.llm_session import close_session
from flows.store import Store
from flows.store.ids import model_name, sample_key, stats_key
from flows.store.lock import StoreLock, store_lock
from flows.tasks import explain_latents, score_latents

log = logging.getLogger(__name__)


@flow(name="prepare-data")
def prepare_data_flow(cfg: RunConfig) -> DataRef:
    """Contexts and cached residual-stream activations of the subject model."""
    with store_lock(cfg.store):  # every stage writes under the store lock (flows/store/lock.py)
        subject = data_stages.load_subject(cfg)
        layer = data_stages.resolve_layer(cfg, subject.n_layers)
        ds, corpus_fp = data_stages.build_contexts(cfg, subject)
        return data_stages.cache_activations(cfg, subject, ds, corpus_fp, layer)


@flow(name="sae")
def sae_flow(cfg: RunConfig, data: DataRef) -> str:
    """Train (or load) the SAE; returns its sae_id."""
    with store_lock(cfg.store):  # also keeps two runs from saving the same SAE at once
        return sae_stages.train_or_load_sae(cfg, data)


@flow(name="sae-metrics")
def sae_metrics_flow(cfg: RunConfig, data: DataRef, sae_id: str) -> dict | None:
    """Evaluate the SAE into `sae_metrics` (held-out FVU, downstream, probe loss, ablation sparsity)."""
    from flows.stages.sae_metrics import evaluate_sae

    return evaluate_sae(cfg, data, sae_id)


@flow(name="latent-cache")
def latent_cache_flow(cfg: RunConfig, data: DataRef, sae_id: str) -> int:
    """Sparse latent activations over the corpus and per-latent statistics."""
    with store_lock(cfg.store):
        return latent_stages.cache_latents(cfg, data, sae_id)


@flow(name="sample-examples")
def sampling_flow(cfg: RunConfig, data: DataRef, sae_id: str) -> int:
    """Explain/score example sets per latent."""
    with store_lock(cfg.store):
        return sampling_stages.sample_latent_examples(cfg, data, sae_id)


@flow(name="explain")
def explain_flow(cfg: RunConfig, data: DataRef, sae_id: str, run_id: str, dask: str | None = None) -> str:
    """Explanations for every selected latent, one task per chunk (resumes per latent); returns the
    explainer name. `dask`: the scheduler address the tasks go to (None: this process)."""
    explainer = explain_stages.make_explainer(cfg, None)
    with store_lock(cfg.store):
        calls = [({"cfg": cfg, "data": data, "sae_id": sae_id, "run_id": run_id, "latents": chunk}, len(chunk))
                 for chunk in explain_stages.pending_chunks(cfg, sae_id, explainer)]
        progress = StageProgress.for_stage(Store(cfg.store), sae_id, "explain", sum(size for _, size in calls))
        fan_out(explain_latents, calls, dask, f"explain ({explainer.name})", progress)
    return explainer.name


@flow(name="score")
def score_flow(cfg: RunConfig, data: DataRef, sae_id: str, explainer: str, run_id: str,
               dask: str | None = None) -> dict:
    """Score the explanations and their baselines with every requested scorer, one task per (job, chunk);
    returns, per "<explainer>/<scorer>/<population>", the latents scored now and the job's keys.

    N2G explanations are simulated by pattern matching; LLM explanations (free text) by the LLM
    simulator; detection and fuzzing always ask the LLM (flows/stages/score.py::make_scorers).
    """
    with store_lock(cfg.store):
        jobs = score_stages.score_plan(cfg, data, sae_id, explainer, run_id)
        calls, owners = [], []
        for job in jobs:
            for chunk in score_stages.pending_chunks(cfg, sae_id, job):
                calls.append(({"cfg": cfg, "data": data, "sae_id": sae_id, "run_id": run_id, "job": job,
                               "latents": chunk}, len(chunk)))
                owners.append(job.label)
        progress = StageProgress.for_stage(Store(cfg.store), sae_id, "score", sum(size for _, size in calls))
        done = fan_out(score_latents, calls, dask, "score", progress)
    scored = dict.fromkeys((job.label for job in jobs), 0)
    for label, n in zip(owners, done, strict=True):
        scored[label] += n
    return {job.label: {"scored": scored[job.label], "explain_key": job.explain_key, "score_key": job.score_key}
            for job in jobs}


@flow(name="report")
def report_flow(cfg: RunConfig, sae_id: str, run_keys: dict | None = None, current_run: dict | None = None) -> str:
    """Per-latent HTML pages and the dashboard index (of the rows of `run_keys`, the run's own keys)."""
    from flows.reports import write_reports

    with store_lock(cfg.store):
        return str(write_reports(Store(cfg.store), sae_id, run_keys, current_run))


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
    """Hash of every setting of a run except where it writes and runs (the same run on two stores, or on a
    Dask cluster, hashes alike)."""
    return stable_hash(cfg.model_dump(mode="json", exclude=set(PLACEMENT)), 12)


def record_run(cfg: RunConfig, run_id: str, status: str, started: datetime, error: str = "",
               keys: dict | None = None, inputs: dict | None = None, flow: str = "pipeline") -> None:
    """One `runs` row per pipeline run (or stage command: `flow`), written when it ends (ok or failed),
    with the full config, its hash and the resume keys of the stages it keyed."""
    row = {
        "run_id": run_id, "flow": flow, "status": status, "started_at": started,
        "finished_at": datetime.now(UTC), "config": cfg.model_dump_json(), "code_version": code_version(),
        "error": error, "config_hash": config_hash(cfg),
        "keys": json.dumps({"stats_key": stats_key(cfg), "sample_key": sample_key(cfg), **(keys or {})}),
        "inputs": json.dumps(inputs or {}),
    }
    Store(cfg.store).append("runs", pl.DataFrame([row]), part="run")


def record_failure(cfg: RunConfig, run_id: str, exc: BaseException, started: datetime, inputs: dict,
                   flow: str = "pipeline") -> None:
    """The `runs` row of a run that ended with `exc`: "interrupted" for Ctrl-C, else "failed". When the store
    cannot take the row (read-only, full disk) a warning says so and the caller re-raises the original
    error: the run's own error is the one the user must see, not the recording's."""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        record_run(cfg, run_id, status, started, f"{type(exc).__name__}: {exc}", inputs=inputs, flow=flow)
    except Exception as record_exc:  # noqa: BLE001 - any failure to record must not hide the run's error
        log.warning("could not record %s run %s in store %s: %s", status, run_id, cfg.store, record_exc)


def record_killed_run(store: Store, lock: StoreLock) -> None:
    """A `runs` row (status "killed") for the previous holder of the store lock when it died holding it
    (kill -9, power loss: it could not record itself). Its finish time is unknown (null)."""
    stale = lock.stale or {}
    if not stale.get("run_id") or not stale.get("config"):
        return
    try:
        cfg = RunConfig.model_validate_json(stale["config"])
        started = datetime.fromisoformat(stale["started_at"])
    except (ValueError, KeyError) as exc:
        log.warning("store %s: the previous run's lock record is unreadable (%s)", store.root, exc)
        return
    row = {"run_id": stale["run_id"], "flow": stale.get("flow", "pipeline"), "status": "killed",
           "started_at": started, "finished_at": None, "config": stale["config"], "code_version": code_version(),
           "error": f"killed: process {stale.get('pid')} on {stale.get('host')} ended without recording the run",
           "config_hash": config_hash(cfg), "keys": json.dumps({"stats_key": stats_key(cfg),
                                                                "sample_key": sample_key(cfg)}),
           "inputs": "{}"}
    try:
        store.append("runs", pl.DataFrame([row], schema_overrides={"finished_at": pl.Datetime("us", "UTC")}),
                     part="run")
    except ValueError as exc:  # StoreError (full disk): this run must not fail for its predecessor's row
        log.warning("store %s: could not record killed run %s: %s", store.root, stale["run_id"], exc)
        return
    log.warning("store %s: run %s was killed before it finished; recorded as killed", store.root, stale["run_id"])


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

    holder = {"run_id": run_id, "flow": "pipeline", "started_at": started.isoformat(), "config": cfg.model_dump_json()}
    with store_lock(cfg.store, holder) as lock:
        record_killed_run(Store(cfg.store), lock)
        summary = _locked_pipeline(cfg, run_id, started, timed)
    summary.update(timings_s=timings, wall_s=round(time.perf_counter() - clock, 1))
    logger.info("run summary: %s", json.dumps(summary))
    return summary


def _locked_pipeline(cfg: RunConfig, run_id: str, started: datetime, timed: Callable[..., Any]) -> dict:
    """The stages of `pipeline` in order, under the store lock; records the run (ok, failed, interrupted).
    `timed(name, flow, *args)` runs one stage flow and records its duration."""
    inputs: dict = {}
    try:
        data = timed("prepare-data", prepare_data_flow, cfg)
        sid = timed("sae", sae_flow, cfg, data)
        inputs = lineage(cfg, data, sid)
        metrics = timed("sae-metrics", sae_metrics_flow, cfg, data, sid) or {}
        inputs.update(fvu_heldout=metrics.get("fvu_heldout"), fvu_above_one=bool(metrics.get("fvu_above_one")))
        timed("latent-cache", latent_cache_flow, cfg, data, sid)
        timed("sample-examples", sampling_flow, cfg, data, sid)
        with dask_scheduler(cfg) as dask:
            explainer = timed("explain", explain_flow, cfg, data, sid, run_id, dask)
            counts = timed("score", score_flow, cfg, data, sid, explainer, run_id, dask)
        run_keys = {"stats_key": stats_key(cfg), "sample_key": sample_key(cfg),
                    "explain_keys": sorted({c["explain_key"] for c in counts.values()}),
                    "score_keys": sorted({c["score_key"] for c in counts.values()})}
        # the run's `runs` row is written when it ends: the reports list it from here (in their runs list)
        this_run = {"run_id": run_id, "flow": "pipeline", "status": "writing reports",
                    "started_at": started.isoformat(timespec="seconds"), "sae_id": sid, "model": inputs.get("model"),
                    "config_hash": config_hash(cfg)}
        report = timed("report", report_flow, cfg, sid, run_keys, this_run)
    except BaseException as exc:
        record_failure(cfg, run_id, exc, started, inputs)
        raise
    finally:
        close_session(run_id)
    Store(cfg.store).ensure_table("llm_calls")  # a run without an LLM still has the table
    keys = run_keys
    record_run(cfg, run_id, "ok", started, keys=keys, inputs=inputs)
    store = Store(cfg.store)
    publish_run_artifacts(store, sid, run_id, score_summary(store, sid, keys["score_keys"]), config_hash(cfg),
                          inputs, report)
    return {"run_id": run_id, "sae_id": sid, "data": asdict(data), "scored": counts, "report": report, **keys}
