"""`sweep`: train a grid of SAEs (n latents x k) as Prefect tasks, evaluate each into `sae_metrics`, fit the
joint L(n, k) form and the loss-vs-compute frontier (sae/scaling.py) into `sae_fits`, and plot them.

Every SAE of the grid is the run's SAE with n_latents and k replaced, so it has the id and resume
behaviour of a run's SAE: a rerun skips trained SAEs and stored metrics, and resumes one cut short from its
checkpoint. From an activation file (`--activations`), the file's last rows are held out; from a model
and corpus, the run's prepare-data flow makes the activations first.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.config import RunConfig, stable_hash
from flows.stages.data import DataRef
from flows.stages.sae import train_or_load_sae
from flows.stages.sae_metrics import evaluate_sae, metrics_key
from flows.store import Store

log = logging.getLogger(__name__)


def grid_config(cfg: RunConfig, n_latents: int, k: int) -> RunConfig:
    """The run config of one SAE of the grid."""
    return cfg.model_copy(update={"sae": cfg.sae.model_copy(update={"n_latents": n_latents, "k": k})})


@task(name="sweep-sae", cache_policy=NO_CACHE)
def sweep_sae(cfg: RunConfig, data: DataRef, n_latents: int, k: int) -> dict:
    """Train (or find) one SAE of the grid and evaluate it; returns its sae_metrics row."""
    one = grid_config(cfg, n_latents, k)
    sid = train_or_load_sae(one, data)
    row = evaluate_sae(one, data, sid) or {}
    return {"sae_id": sid, "n_latents": n_latents, "k": k, "tokens": row.get("tokens"),
            "fvu_heldout": row.get("fvu_heldout"), "dead_frac": row.get("dead_frac")}


def file_data_ref(path: Path) -> DataRef:
    """A DataRef for a bare activation file: named by its content, rows held out as one-token contexts."""
    from flows.cli.train import activation_lineage
    from sae.data.activation_files import open_activations
    from sae.hashing import hash_files

    acts = open_activations(path)
    lineage = activation_lineage(path)
    digest = hash_files([("activations", path)], kind="activations")[:10]
    return DataRef(dataset_id=f"file-{digest}", layer=int(lineage.get("layer", 0)), activations_path=str(path),
                   n_contexts=0, ctx_len=1, d_model=int(acts.shape[1]),
                   model_fingerprint=str(lineage.get("model_fingerprint", digest)), model_type="file")


@flow(name="sae-sweep")
def sweep_flow(cfg: RunConfig, n_latents: list[int], ks: list[int], activations: str | None = None) -> dict:
    """Train and evaluate the grid, fit and plot; returns {grid_id, saes, fits, plot}."""
    if activations:
        data = file_data_ref(Path(activations))
    else:
        from flows.pipeline import prepare_data_flow

        data = prepare_data_flow(cfg)
    rows = [sweep_sae(cfg, data, n, k) for n in n_latents for k in ks if k <= n]
    grid_id = stable_hash({"data": data.activations_path or data.dataset_id, "grid": [[r["n_latents"], r["k"]]
                           for r in rows], "sae_ids": [r["sae_id"] for r in rows], "metrics": metrics_key(cfg)}, 10)
    fits, plot = fit_and_plot(Store(cfg.store), grid_id, rows, data.d_model, metrics_key(cfg))
    return {"grid_id": grid_id, "saes": rows, "fits": fits, "plot": plot}


def fit_and_plot(store: Store, grid_id: str, rows: list[dict], d_in: int, key: str) -> tuple[dict, str]:
    """Fit the joint form and the frontier to the rows' held-out FVU, store them in sae_fits, write the plot."""
    from sae.scaling import FRONTIER_FORM, JOINT_FORM, compute_flop, fit_frontier, fit_joint, frontier_mask
    from sae.scaling_plot import write_sweep_plot

    good = [r for r in rows if r["fvu_heldout"] is not None and r["tokens"]]
    columns = ("n_latents", "k", "fvu_heldout", "tokens")
    n, k, loss, tokens = (np.array([r[c] for r in good], dtype=float) for c in columns)
    compute = compute_flop(d_in, n, tokens)
    fits: dict = {}
    for name, form, fitter in (("joint_nk", JOINT_FORM, lambda: fit_joint(n, k, loss)),
                               ("frontier", FRONTIER_FORM, lambda: fit_frontier(compute, loss))):
        try:
            fits[name] = (form, fitter())
        except ValueError as exc:
            log.warning("sweep %s: no %s fit: %s", grid_id, name, exc)
    plot_path = store.reports_dir() / "sweeps" / f"{grid_id}.html"
    try:
        write_sweep_plot(plot_path, n, k, loss, compute, fits.get("joint_nk", (None, None))[1],
                         fits.get("frontier", (None, None))[1], frontier_mask(compute, loss))
        plot = str(plot_path.relative_to(store.root))
    except ImportError:
        log.warning("plotly is not installed: no sweep plot")
        plot = ""
    now, ids = datetime.now(UTC), [r["sae_id"] for r in rows]
    frame = pl.DataFrame([{"grid_id": grid_id, "fit": name, "form": form, "coefficients": json.dumps(fit.coefficients),
                           "loss": "fvu_heldout", "n_points": fit.n_points, "rmse_log": fit.rmse_log, "sae_ids": ids,
                           "metrics_key": key, "plot": plot, "created_at": now} for name, (form, fit) in fits.items()])
    store.append("sae_fits", frame, part="sweep")
    summary = {name: {"coefficients": fit.coefficients, "rmse_log": fit.rmse_log} for name, (_f, fit) in fits.items()}
    log.info("sweep %s fits: %s", grid_id, json.dumps(summary))
    return summary, plot
