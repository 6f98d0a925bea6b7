"""`latent-atlas status`: what a store holds, in a few short tables.

Runs (ok / failed, when, config hash), per SAE the latents explained and scored by each explainer and
scorer (the newest row of each key, flows/store/rows.py::latest_rows), failures grouped by reason, and
the LLM spend (tokens from the call log, dollars from the explanations). Read-only: it never creates
or changes a table.
"""

from __future__ import annotations

import polars as pl

from flows.store import Store
from flows.store.rows import latest_rows
from flows.store.schemas import table_schema

MAX_REASONS = 5
"""Failure reasons listed per table (the most frequent); the rest are counted on one line."""


def store_status(store: Store) -> str:
    """The status report of `store` as plain text (what `latent-atlas status` prints)."""
    if not store.has("runs"):
        return f"{store.root}: no runs yet"
    parts = [_runs(store), _explained(store), _scored(store), _failures(store), _spend(store)]
    return "\n\n".join(p for p in parts if p)


def _newest(store: Store, table: str, order: str | None) -> pl.DataFrame:
    """The newest row of each key of `table` (by `order`, else the later-appended)."""
    return latest_rows(store.scan(table), list(table_schema(table).key), order)


def _table(frame: pl.DataFrame) -> str:
    """A frame as aligned plain-text columns."""
    rows = [frame.columns] + [[_cell(v) for v in row] for row in frame.iter_rows()]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(frame.columns))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _runs(store: Store) -> str:
    runs = store.read("runs").sort("started_at")
    counts = runs.group_by("status").len().sort("status")
    summary = ", ".join(f"{n} {status}" for status, n in counts.iter_rows())
    flow = ["flow"] if "flow" in runs.columns else []  # pipeline, or the stage command that ran (explain, score)
    recent = runs.tail(5).select(
        "run_id", *flow, "status", pl.col("started_at").dt.strftime("%Y-%m-%d %H:%M UTC").alias("started"),
        ((pl.col("finished_at") - pl.col("started_at")).dt.total_seconds()).alias("seconds"), "config_hash",
        pl.col("error").str.slice(0, 60))
    return f"runs: {summary} (newest {recent.height}):\n{_table(recent)}"


def _explained(store: Store) -> str:
    if not store.has("explanations"):
        return "explanations: none"
    latest = _newest(store, "explanations", "created_at")
    by = (latest.group_by("sae_id", "explainer")
          .agg(pl.len().alias("latents"), (pl.col("status") == "ok").sum().alias("ok"),
               (pl.col("status") == "failed").sum().alias("failed"),
               (pl.col("status") == "skipped").sum().alias("skipped"))
          .sort("sae_id", "explainer"))
    return f"explanations (newest row per latent and key):\n{_table(by)}"


def _scored(store: Store) -> str:
    if not store.has("scores"):
        return "scores: none"
    latest = _newest(store, "scores", None)
    # the estimator (exact, ipw, sample) says how a row was computed: an estimate is no exact count
    columns = [c for c in ("sae_id", "explainer", "scorer", "population", "estimator") if c in latest.columns]
    by = (latest.group_by(columns)
          .agg(pl.col("latent").n_unique().alias("latents"), pl.col("f1").median().alias("median_f1"))
          .sort(columns, nulls_last=True))
    return f"scores:\n{_table(by)}"


def _failures(store: Store) -> str:
    lines = []
    if store.has("explanations"):
        latest = _newest(store, "explanations", "created_at").filter(pl.col("status") != "ok")
        if latest.height:
            reasons = (latest.with_columns(pl.col("error").str.slice(0, 90))
                       .group_by("explainer", "status", "error").len().sort("len", descending=True))
            lines.append(f"explanations not ok, by reason:\n{_table(reasons.head(MAX_REASONS))}")
            if reasons.height > MAX_REASONS:
                lines.append(f"... and {reasons.height - MAX_REASONS} more reasons")
    if store.has("score_failures"):
        scores = store.read("scores").select("sae_id", "score_key", "latent", "explainer", "scorer") \
            if store.has("scores") else None
        failed = store.read("score_failures")
        if scores is not None and scores.height:  # a later score row under the same key supersedes a failure
            failed = failed.join(scores.unique(), on=["sae_id", "score_key", "latent", "explainer", "scorer"],
                                 how="anti")
        if failed.height:
            reasons = (failed.with_columns(pl.col("reason").str.slice(0, 90))
                       .group_by("explainer", "scorer", "status", "reason").len().sort("len", descending=True))
            lines.append(f"latents not scored, by reason:\n{_table(reasons.head(MAX_REASONS))}")
    runs = store.read("runs").filter(pl.col("status") == "failed")
    if runs.height:
        errors = runs.group_by(pl.col("error").str.slice(0, 90)).len().sort("len", descending=True)
        lines.append(f"failed runs, by error:\n{_table(errors.head(MAX_REASONS))}")
    return "\n".join(lines)


def _spend(store: Store) -> str:
    if not store.has("llm_calls") or store.read("llm_calls").height == 0:
        return "LLM: no calls"
    calls = store.read("llm_calls")
    by = (calls.group_by("model", "purpose")
          .agg(pl.len().alias("calls"), (pl.col("status") == "cached").sum().alias("cached"),
               (pl.col("status").is_in(["failed", "invalid"])).sum().alias("failed"),
               pl.col("prompt_tokens").sum(), pl.col("completion_tokens").sum())
          .sort("model", "purpose"))
    dollars = float(store.read("explanations")["cost_usd"].sum()) if store.has("explanations") else 0.0
    return f"LLM calls (explanation cost recorded: ${dollars:.4f}):\n{_table(by)}"
