"""`latent-atlas encode | sample | explain | score | report`: one stage of the pipeline, on a store.

Each command takes run's flags (the same RunConfig, so the same ids and resume keys) and runs that
stage's flow from flows/pipeline.py. `encode` makes a store's inputs (contexts, activations, the SAE, the
latent cache); the others read them: the DataRef and sae_id come from the settings by content, as
`prepare-data` names them, without loading the model's weights (flows/stages/data.py::stored_data_ref,
flows/stages/sae.py::run_sae_id). A missing input is one line naming the command that makes it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import polars as pl

from flows.cli.flags import add_run_flags, add_verbose_flag, run_config
from flows.config import RunConfig
from flows.stages.data import DataRef
from flows.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

STAGES: dict[str, tuple[str, str]] = {
    "encode": ("contexts, activations, SAE and latent cache (every stage up to the latent cache)",
               "Tokenise the corpus, cache the model's activations, train (or load) the SAE and encode the "
               "corpus with it: the prepare-data, sae and latent-cache flows. Creates the store if needed."),
    "sample": ("draw the explain and score example sets of the selected latents",
               "The sample-examples flow on a store that `encode` (or run) filled with the same flags."),
    "explain": ("explain the selected latents (resumes per latent)",
                "The explain flow on a store whose examples `sample` (or run) drew with the same flags; "
                "records a `runs` row (flow explain)."),
    "score": ("score the explanations and their baselines",
              "The score flow on a store whose explanations `explain` (or run) wrote with the same flags; "
              "records a `runs` row (flow score) and prints the score summary."),
    "report": ("rebuild the HTML reports and dashboard of an SAE in a store",
               "The report flow for the SAE the flags name (or --sae-id); reads the store, trains nothing."),
}
"""Stage commands: (one-line help, description)."""

LLM_STAGES = ("explain", "score")
"""Stage commands that may call an LLM: they check its settings and honour --dry-run."""


class MissingInput(ValueError):
    """A stage's inputs are not in the store (a user error: one line, exit 2)."""


def add_stage_commands(sub: argparse._SubParsersAction) -> None:
    """Register every stage command with run's flags (report also gets --sae-id)."""
    for name, (help_text, description) in STAGES.items():
        parser = sub.add_parser(name, help=help_text, description=description)
        add_verbose_flag(parser)
        if name == "report":
            parser.add_argument("--sae-id", default=None,
                                help="report this stored SAE instead of the flags' one; `all`: every SAE")
        add_run_flags(parser)


def first_step(command: str) -> str:
    """The advice closing a missing-input error."""
    return f"run `latent-atlas {command}` (or run) with the same flags first"


def stage_command(args: argparse.Namespace) -> int:
    """Run one stage command; a missing store or input raises a one-line user error."""
    from flows.cli.preflight import check_run_config, require_store

    cfg = run_config(args)
    if cfg.dry_run and args.command not in LLM_STAGES:
        raise ValueError(f"--dry-run applies to the commands that call an LLM (run, {', '.join(LLM_STAGES)})")
    if args.command != "encode":
        require_store(cfg.store)
    check_run_config(cfg, llm=args.command in LLM_STAGES)
    if args.command == "encode":
        return _encode(cfg)
    if args.command == "report" and getattr(args, "sae_id", None):
        return _report(cfg, args.sae_id)
    data, sid = resolve_inputs(cfg)
    if args.command == "report":
        return _report(cfg, sid)
    return {"sample": _sample, "explain": _explain, "score": _score}[args.command](cfg, data, sid)


def resolve_inputs(cfg: RunConfig) -> tuple[DataRef, str]:
    """(DataRef, sae_id) of the flags' settings, when the store holds their contexts and SAE."""
    from flows.stages.data import stored_data_ref
    from flows.stages.sae import run_sae_id

    store, data = Store(cfg.store), stored_data_ref(cfg)
    if data.n_contexts == 0:
        raise MissingInput(f"no contexts for dataset {data.dataset_id} (corpus {cfg.data.corpus or 'pydoc topics'}, "
                           f"ctx_len {cfg.data.ctx_len}) in store {store.root}: {first_step('encode')}")
    sid = run_sae_id(cfg, data)
    if not (store.sae_dir(sid) / "cfg.json").exists():
        raise MissingInput(f"no SAE {sid} in store {store.root}: {first_step('encode')}")
    return data, sid


def _stats(cfg: RunConfig, sid: str) -> pl.DataFrame:
    """The SAE's latent statistics under the flags' stats key (they come with the latent cache)."""
    from flows.stages.latents import read_stats
    from flows.store.ids import stats_key

    stats = read_stats(Store(cfg.store), sid, stats_key(cfg))
    if stats.height == 0:
        raise MissingInput(f"no latent statistics for SAE {sid} under stats key {stats_key(cfg)}: "
                           f"{first_step('encode')}")
    return stats


def _encode(cfg: RunConfig) -> int:
    from flows.pipeline import latent_cache_flow, prepare_data_flow, sae_flow
    from flows.stages.latents import read_stats
    from flows.store.ids import stats_key

    data = prepare_data_flow(cfg)
    sid = sae_flow(cfg, data)
    n_latents = latent_cache_flow(cfg, data, sid)
    stats = read_stats(Store(cfg.store), sid, stats_key(cfg))
    n_ok = stats.filter(pl.col("status") == "ok").height
    sys.stdout.write(f"SAE {sid}: {n_latents} latents, {n_ok} ok to explain (stats key {stats_key(cfg)})\n"
                     f"dataset {data.dataset_id}: {data.n_contexts} contexts of {data.ctx_len} tokens, "
                     f"layer {data.layer}\nstore: {Path(cfg.store).resolve()}\n")
    return 0


def _sample(cfg: RunConfig, data: DataRef, sid: str) -> int:
    from flows.pipeline import sampling_flow
    from flows.stages.sampling import sampled_latents
    from flows.store.ids import sample_key

    _stats(cfg, sid)
    drawn = sampling_flow(cfg, data, sid)
    total = len(sampled_latents(Store(cfg.store), sid, sample_key(cfg)))
    sys.stdout.write(f"SAE {sid}: examples drawn for {drawn} latents now, {total} in all under sample key "
                     f"{sample_key(cfg)}\n")
    return 0


def _check_examples(cfg: RunConfig, sid: str) -> list[int]:
    """The selected latents, when every one of them has examples under the flags' sample key."""
    from flows.stages.latents import selected_latents
    from flows.stages.sampling import sampled_latents
    from flows.store.ids import sample_key

    wanted = selected_latents(_stats(cfg, sid), cfg.max_latents, cfg.latents, cfg.seed)
    have = sampled_latents(Store(cfg.store), sid, sample_key(cfg))
    missing = [latent for latent in wanted if latent not in have]
    if missing:
        some = len(missing) < len(wanted) and have
        which = f" for {len(missing)} of {len(wanted)} selected latents" if some else ""
        raise MissingInput(f"no examples{which} for SAE {sid} under sample key {sample_key(cfg)}: "
                           f"{first_step('sample')}")
    return wanted


def _explain(cfg: RunConfig, data: DataRef, sid: str) -> int:
    from flows.pipeline import explain_flow
    from flows.stages.dry_run import estimate_llm_cost
    from flows.stages.explain import explainer_key, make_explainer
    from flows.store.rows import latest_explanations

    wanted = _check_examples(cfg, sid)
    if cfg.dry_run:
        sys.stdout.write(estimate_llm_cost(cfg, data, sid) + "\n")
        return 0
    key = explainer_key(cfg, make_explainer(cfg, None))
    run_id, started = new_run_id(), datetime.now(UTC)
    name = _recorded(cfg, "explain", run_id, started, data, sid,
                     lambda: _on_workers(cfg, explain_flow, cfg, data, sid, run_id),
                     lambda _name: {"explain_keys": [key]})
    rows = latest_explanations(Store(cfg.store), sid, name, key).filter(pl.col("latent").is_in(wanted))
    counts = dict(rows.group_by("status").len().iter_rows())
    done = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
    sys.stdout.write(f"SAE {sid}: {len(wanted)} selected latents explained by {name} (explain key {key}): {done}\n"
                     f"run {run_id}\n")
    return 0


def _score(cfg: RunConfig, data: DataRef, sid: str) -> int:
    from flows.pipeline import score_flow
    from flows.reports.summary import summary_text
    from flows.stages.dry_run import estimate_llm_cost
    from flows.stages.explain import explainer_key, make_explainer
    from flows.store.ids import stats_key
    from flows.store.rows import latest_explanations

    explainer = make_explainer(cfg, None)
    key = explainer_key(cfg, explainer)
    if latest_explanations(Store(cfg.store), sid, explainer.name, key).height == 0:
        raise MissingInput(f"no {explainer.name} explanations for SAE {sid} under explain key {key}: "
                           f"{first_step('explain')}")
    if cfg.dry_run:
        sys.stdout.write(estimate_llm_cost(cfg, data, sid) + "\n")
        return 0
    run_id, started = new_run_id(), datetime.now(UTC)
    counts = _recorded(cfg, "score", run_id, started, data, sid,
                       lambda: _on_workers(cfg, score_flow, cfg, data, sid, explainer.name, run_id), _score_keys)
    keys = _score_keys(counts)
    text = summary_text(Store(cfg.store), sid, keys["score_keys"], stats_key(cfg), keys["explain_keys"])
    sys.stdout.write(f"\nSAE {sid}  (run {run_id})\n{text}\n")
    return 0


def _on_workers(cfg: RunConfig, stage_flow, *args):  # noqa: ANN001, ANN202 - a Prefect flow and its arguments
    """Run an explain or score flow with its tasks on the run's Dask workers (flows/runners.py)."""
    from flows.runners import dask_scheduler

    with dask_scheduler(cfg) as dask:
        return stage_flow(*args, dask)


def _score_keys(counts: dict) -> dict[str, list[str]]:
    """The explain and score keys of a score flow's rows, as pipeline() records them."""
    return {"explain_keys": sorted({c["explain_key"] for c in counts.values()}),
            "score_keys": sorted({c["score_key"] for c in counts.values()})}


def _report(cfg: RunConfig, sid: str) -> int:
    from flows.pipeline import report_flow
    from flows.reports import write_reports

    store = Store(cfg.store)
    if sid == "all":
        if not any(store.root.glob("saes/*/cfg.json")):
            raise MissingInput(f"no SAE in store {store.root}: {first_step('encode')}")
        path = write_reports(store, None)
    else:
        if not (store.sae_dir(sid) / "cfg.json").exists():
            raise MissingInput(f"no SAE {sid} in store {store.root}: {first_step('encode')}")
        path = report_flow(cfg, sid)
    sys.stdout.write(f"dashboard: {Path(path).resolve()}\n")
    return 0


def new_run_id() -> str:
    """A run id as pipeline() makes them: `run-<yyyymmdd-hhmmss, UTC>-<6 hex digits>`."""
    return f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _recorded(cfg: RunConfig, stage: str, run_id: str, started: datetime, data: DataRef, sid: str,
              call: Callable[[], T], keys_of: Callable[[T], dict]) -> T:
    """Run `call` (a stage flow) as run `run_id` and record its `runs` row, ok or failed."""
    from flows.pipeline import lineage
    from flows.stages.llm_session import close_session

    inputs = lineage(cfg, data, sid)
    try:
        out = call()
    except BaseException as exc:
        record_stage_run(cfg, stage, run_id, "failed", started, f"{type(exc).__name__}: {exc}", inputs=inputs)
        raise
    finally:
        close_session(run_id)
    Store(cfg.store).ensure_table("llm_calls")  # a run without an LLM still has the table, as in pipeline()
    record_stage_run(cfg, stage, run_id, "ok", started, keys=keys_of(out), inputs=inputs)
    return out


def record_stage_run(cfg: RunConfig, stage: str, run_id: str, status: str, started: datetime, error: str = "",
                     keys: dict | None = None, inputs: dict | None = None) -> None:
    """The `runs` row of a stage command (flows.pipeline.record_run, with the stage as its flow)."""
    from flows.pipeline import record_run

    record_run(cfg, run_id, status, started, error, keys, inputs, flow=stage)
