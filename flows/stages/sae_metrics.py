"""Evaluate a stored SAE into `sae_metrics`: held-out FVU, downstream loss, probe loss, ablation sparsity.

Runs after the SAE stage, for trained and loaded SAEs alike, on the contexts the SAE never trained on
(flows/stages/sae.py::training_rows). One row per (sae_id, metrics_key); a rerun with the same key skips.
What does not apply is null with its reason in `notes`: no activation file (streamed run) -> no held-out
reconstruction metrics; encoder models -> embedding cosine instead of CE/KL and no ablation sparsity.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import numpy as np
import polars as pl
import torch

from flows.config import RunConfig, key_fields, stable_hash
from flows.stages.data import DataRef, load_subject, read_contexts
from flows.stages.sae import heldout_contexts, load_stored_sae, training_rows
from flows.store import Store

log = logging.getLogger(__name__)

METRICS_VERSION = 1
"""Bumped when a metric's definition changes: old rows then stay, under their own key."""
METRIC_COLUMNS = ("delta_ce", "kl", "loss_recovered", "embed_cosine", "embed_cosine_zero", "embed_recovered",
                  "probe_ce", "probe_ce_residual", "probe_tasks", "ablation_sparsity")


def metrics_key(cfg: RunConfig) -> str:
    """The evaluation settings and the held-out split: what changes a metrics row of a given SAE."""
    return stable_hash({"eval": key_fields(cfg, "sae_eval"), "heldout_frac": cfg.train.heldout_frac,
                        "version": METRICS_VERSION}, 10)


def stored_metrics(store: Store, sid: str, key: str) -> dict | None:
    if not store.has("sae_metrics"):
        return None
    rows = store.scan("sae_metrics").filter((pl.col("sae_id") == sid) & (pl.col("metrics_key") == key)).collect()
    return rows.row(-1, named=True) if rows.height else None


def evaluate_sae(cfg: RunConfig, data: DataRef, sid: str) -> dict | None:
    """Compute and store the SAE's sae_metrics row (or return the stored one); None when disabled."""
    if not cfg.sae_eval.enabled:
        return None
    store, key = Store(cfg.store), metrics_key(cfg)
    if (row := stored_metrics(store, sid, key)) is not None:
        log.info("sae_metrics for %s (metrics %s) already in the store", sid, key)
        return row
    t0 = time.perf_counter()
    sae = load_stored_sae(store, sid, cfg.device)
    row = {"sae_id": sid, "metrics_key": key, "n_latents": sae.cfg.n_latents, "k": sae.cfg.k,
           **_training_columns(store, sid), **dict.fromkeys(METRIC_COLUMNS)}
    notes: list[str] = []
    codes = _reconstruction(cfg, data, sae, row, notes)
    held = _heldout_contexts(cfg, store, data)
    if held is None:
        notes.append("no held-out contexts (a bare activation file, or train.heldout_frac 0): no downstream, "
                     "probe or ablation metrics")
    else:
        _model_metrics(cfg, data, sae, held, row, notes)
        if codes is not None:
            _probe_metrics(cfg, held, codes, row, notes)
    row["fvu_above_one"] = row.get("fvu_heldout") is not None and row["fvu_heldout"] > 1
    row.update(notes="; ".join(notes), eval_s=round(time.perf_counter() - t0, 2), created_at=datetime.now(UTC))
    store.append("sae_metrics", pl.DataFrame([row], schema_overrides=_schema()), part="metrics")
    log.info("sae_metrics for %s in %.1f s: fvu_heldout %s l0 %s dead %s", sid, row["eval_s"],
             row.get("fvu_heldout"), row.get("l0"), row.get("dead_frac"))
    return row


def _heldout_contexts(cfg: RunConfig, store: Store, data: DataRef) -> pl.DataFrame | None:
    """The dataset's held-out contexts (token_ids, tokens), or None without any."""
    if data.n_contexts == 0 or not store.has("contexts"):
        return None
    contexts = read_contexts(store, data.dataset_id)
    held = contexts.tail(heldout_contexts(cfg, contexts.height))
    return held if held.height else None


def _schema() -> dict:
    from flows.store.schemas import table_schema

    return dict(table_schema("sae_metrics").schema)


def _training_columns(store: Store, sid: str) -> dict:
    """tokens, fvu and dead_frac_train from the SAE's saved training stats (null for a loaded SAE)."""
    from sae.formats import load_sae_metadata

    stats = load_sae_metadata(store.sae_dir(sid)).get("training_stats") or {}
    return {"tokens": stats.get("tokens_seen"), "fvu": stats.get("fvu"), "dead_frac_train": stats.get("dead_fraction")}


def _reconstruction(cfg: RunConfig, data: DataRef, sae, row: dict, notes: list[str]):
    """Held-out FVU, L0 and dead fraction into row; returns the held-out rows' (acts, values, indices)."""
    from sae.data.activation_files import open_activations
    from sae.evaluate import encode_rows, heldout_metrics

    row.update(fvu_heldout=None, l0=None, dead_frac=None, heldout_tokens=0, heldout_rows="")
    if not data.activations_path:
        notes.append("streamed activations: no file rows to hold out, no held-out FVU")
        return None
    acts = open_activations(data.activations_path)
    cut = training_rows(cfg, data, len(acts))
    end = min(len(acts), cut + cfg.sae_eval.max_tokens)
    row.update(heldout_metrics(sae, acts[cut:end]), heldout_rows=f"{cut}-{end}")
    n_probe = min(end - cut, cfg.sae_eval.probe_tokens)
    residual = np.asarray(acts[cut : cut + n_probe], dtype=np.float32)
    return (residual, *encode_rows(sae, residual))


def _model_metrics(cfg: RunConfig, data: DataRef, sae, held: pl.DataFrame, row: dict, notes: list[str]) -> None:
    """Downstream loss (CE/KL for causal LMs, embedding cosine for encoders) and ablation sparsity."""
    n = cfg.sae_eval.downstream_contexts
    if n == 0:
        notes.append("downstream metrics off (sae_eval.downstream_contexts 0)")
        return
    from flows.stages.sae_model_metrics import causal_metrics, encoder_metrics, is_causal

    subject = load_subject(cfg)
    token_ids = held["token_ids"].to_list()[:n]
    if is_causal(subject):
        causal_metrics(cfg, subject, data.layer, sae, token_ids, row, notes)
    else:
        encoder_metrics(subject, data.layer, sae, token_ids, row)
        notes.append("encoder model: embedding cosine instead of CE/KL; ablation sparsity needs next-token "
                     "logits (causal LMs), null")


def _probe_metrics(cfg: RunConfig, held: pl.DataFrame, codes, row: dict, notes: list[str]) -> None:
    from sae.probe_tasks import task_labels
    from sae.probes import probe_losses

    residual, values, indices = codes
    if len(residual) == 0 or cfg.sae_eval.probe_tokens == 0:
        notes.append("probe loss off")
        return
    tokens = held["tokens"].to_list()
    labels = {t: y[: len(residual)] for t, y in task_labels(tokens).items()}
    if any(len(y) < len(residual) for y in labels.values()):
        notes.append("held-out tokens do not align with the activation rows: no probe loss")
        return
    with torch.no_grad():
        tasks = probe_losses(values, indices, row["n_latents"], residual, labels, cfg.sae_eval.probe_candidates)
    if tasks:
        row["probe_ce"] = float(np.mean([t["ce"] for t in tasks.values()]))
        row["probe_ce_residual"] = float(np.mean([t["ce_residual"] for t in tasks.values()]))
    row["probe_tasks"] = json.dumps(tasks)
