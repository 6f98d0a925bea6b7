"""The dashboard's store-wide panels: one SAE panel per SAE, the runs list, LLM spend over time.

Every reader tolerates a missing table (a store written before it existed, or a stage not run yet) and
reads tables of other issues generically: `sae_metrics` by whatever numeric columns it has, and any
table whose name starts with `sae_sweep` or `sae_fits` as points (n_latents, k, fvu).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from flows.store import Store

log = logging.getLogger(__name__)

SWEEP_PREFIXES = ("sae_sweep", "sae_fits")
"""Tables of SAE sweeps (another stage writes them); the panel plots their fvu against n_latents per k."""


def sae_panels(store: Store, sae_ids: list[str], status_counts: dict[str, dict[str, int]]) -> list[dict]:
    """One panel per SAE: model, layer, n_latents, k, tokens, FVU, L0, dead fraction (the SAE's
    `cfg.json`), the numeric `sae_metrics` columns when the table exists, and latent counts by status."""
    metrics = _sae_metrics(store)
    sweeps = sweep_points(store)
    panels = []
    for sae_id in sae_ids:
        cfg = _sae_cfg(store.sae_dir(sae_id) / "cfg.json")
        meta, sae_cfg, stats = cfg.get("metadata", {}), cfg.get("sae_config", {}), cfg.get("training_stats", {})
        panels.append({
            "sae_id": sae_id, "model": meta.get("model"), "layer": meta.get("layer"),
            "n_latents": sae_cfg.get("n_latents", cfg.get("d_sae")), "k": sae_cfg.get("k", cfg.get("k")),
            "tokens": stats.get("tokens_seen"), "fvu": stats.get("fvu"), "l0": stats.get("l0"),
            "dead_fraction": stats.get("dead_fraction"), "metrics": metrics.get(sae_id, {}),
            "status_counts": status_counts.get(sae_id, {}), "sweep": sweeps.get(sae_id, sweeps.get("*", [])),
        })
    return panels


def _sae_cfg(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _table_frame(store: Store, name: str) -> pl.DataFrame:
    """Every part of a table directory, by path: works for tables this module does not declare."""
    parts = sorted((store.root / name).rglob("*.parquet")) if (store.root / name).is_dir() else []
    if not parts:
        return pl.DataFrame()
    try:
        return pl.scan_parquet(parts, missing_columns="insert", extra_columns="ignore").collect()
    except (pl.exceptions.PolarsError, OSError) as exc:  # a table being written by another process
        log.warning("dashboard: cannot read %s: %s", name, exc)
        return pl.DataFrame()


def _numeric(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if t.is_numeric()]


def _sae_metrics(store: Store) -> dict[str, dict[str, float]]:
    """The newest row of `sae_metrics` per SAE, its numeric columns only (whatever they are)."""
    frame = _table_frame(store, "sae_metrics")
    if frame.is_empty() or "sae_id" not in frame.columns:
        return {}
    out: dict[str, dict[str, float]] = {}
    if "created_at" in frame.columns:
        frame = frame.sort("created_at", nulls_last=False)
    for row in frame.select("sae_id", *_numeric(frame)).iter_rows(named=True):
        sae_id = row.pop("sae_id")
        out[sae_id] = {k: v for k, v in row.items() if v is not None}  # later rows replace earlier ones
    return out


def sweep_points(store: Store) -> dict[str, list[dict]]:
    """Points (n_latents, k, fvu) of every `sae_sweep*` / `sae_fits*` table, per SAE: the panel's fvu vs
    n_latents plot, one line per k. A table with those columns gives them itself (under its `sae_id`, or
    "*" for every panel); one that lists its SAEs (`sae_ids`, as sae_fits does) takes them from
    `sae_metrics` (held-out FVU where measured), shown on the panel of each SAE of the sweep."""
    out: dict[str, list[dict]] = {}
    tables = sorted(p.name for p in store.root.iterdir() if p.is_dir() and p.name.startswith(SWEEP_PREFIXES)) \
        if store.root.is_dir() else []
    metrics = _table_frame(store, "sae_metrics") if tables else pl.DataFrame()
    for name in tables:
        frame = _table_frame(store, name)
        if {"n_latents", "k", "fvu"} <= set(frame.columns):
            owner = pl.col("sae_id") if "sae_id" in frame.columns else pl.lit("*")
            rows = frame.select(owner.alias("owner"), "n_latents", "k", "fvu").drop_nulls().sort("k", "n_latents")
            for owner_id, n, k, fvu in rows.iter_rows():
                out.setdefault(owner_id, []).append({"n_latents": n, "k": k, "fvu": fvu, "table": name})
        elif "sae_ids" in frame.columns and {"sae_id", "n_latents", "k"} <= set(metrics.columns):
            fvu = "fvu_heldout" if "fvu_heldout" in metrics.columns else "fvu"
            for sae_ids in frame.get_column("sae_ids").drop_nulls().to_list():
                points = (metrics.filter(pl.col("sae_id").is_in(sae_ids)).select("n_latents", "k", fvu)
                          .drop_nulls().unique(["n_latents", "k"], keep="last").sort("k", "n_latents"))
                rows = [{"n_latents": n, "k": k, "fvu": v, "table": name} for n, k, v in points.iter_rows()]
                for sae_id in sae_ids:
                    out[sae_id] = rows
    return out


def runs_list(store: Store, current_run: dict | None = None, limit: int = 50) -> list[dict]:
    """The newest runs first, with the SAE each ran on; `current_run` (the run writing the reports, whose
    row is written when it ends) is listed first so a run appears in its own dashboard."""
    runs = store.read("runs") if store.has("runs") else pl.DataFrame()
    rows = []
    if runs.height:
        runs = runs.sort("started_at", descending=True, nulls_last=True).head(limit)
        for row in runs.iter_rows(named=True):
            inputs = _json(row.get("inputs"))
            rows.append({"run_id": row["run_id"], "flow": row.get("flow"), "status": row.get("status"),
                         "started_at": _iso(row.get("started_at")), "finished_at": _iso(row.get("finished_at")),
                         "sae_id": inputs.get("sae_id"), "model": inputs.get("model"),
                         "config_hash": row.get("config_hash"), "error": row.get("error") or ""})
    if current_run and current_run.get("run_id") not in {r["run_id"] for r in rows}:
        rows.insert(0, {**current_run, "started_at": _iso(current_run.get("started_at"))})
    return rows


def spend_over_time(store: Store) -> dict[str, list]:
    """Cumulative LLM cost (explanations.cost_usd, by created_at) and tokens (every llm_calls row)."""
    out: dict[str, list] = {"cost_t": [], "cost_usd": [], "tokens_t": [], "tokens": []}
    if store.has("explanations"):
        cost = (store.scan("explanations").filter(pl.col("cost_usd") > 0).select("created_at", "cost_usd")
                .sort("created_at").collect())
        cost = _thin(cost.with_columns(pl.col("cost_usd").cum_sum()))
        out["cost_t"] = [_iso(t) for t in cost["created_at"].to_list()]
        out["cost_usd"] = [round(v, 6) for v in cost["cost_usd"].to_list()]
    if store.has("llm_calls"):
        calls = (store.scan("llm_calls").select("created_at", (pl.col("prompt_tokens").fill_null(0)
                 + pl.col("completion_tokens").fill_null(0)).alias("n")).sort("created_at").collect())
        calls = _thin(calls.with_columns(pl.col("n").cum_sum()))
        out["tokens_t"] = [_iso(t) for t in calls["created_at"].to_list()]
        out["tokens"] = calls["n"].to_list()
    return out


def _thin(frame: pl.DataFrame, points: int = 400) -> pl.DataFrame:
    """At most about `points` rows of a cumulative series, the last kept: the index stays small."""
    step = max(1, frame.height // points)
    return frame.with_row_index("_i").filter((pl.col("_i") % step == 0) | (pl.col("_i") == frame.height - 1)).drop("_i")


def _json(value: object) -> dict:
    try:
        parsed = json.loads(value) if isinstance(value, str) and value else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _iso(value: object) -> str | None:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else (str(value) if value else None)
