"""Explanation <-> `explanations` table rows, and the "latest row per latent" read used for resume."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from explain.records import Explanation
from flows.store import Store

EXPLANATION_SCHEMA: dict[str, pl.DataType] = {
    "sae_id": pl.String(),
    "latent": pl.Int32(),
    "explainer": pl.String(),
    "model": pl.String(),
    "prompt_version": pl.String(),
    "explanation": pl.String(),
    "patterns": pl.String(),
    "status": pl.String(),
    "error": pl.String(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "run_id": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
}


def explanation_frame(explanations: list[Explanation], sae_id: str, run_id: str) -> pl.DataFrame:
    now = datetime.now(UTC)
    rows = [
        {
            "sae_id": sae_id, "latent": e.latent, "explainer": e.explainer, "model": e.model,
            "prompt_version": e.prompt_version, "explanation": e.text, "patterns": e.patterns_json(),
            "status": e.status, "error": e.error, "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens, "cost_usd": e.cost_usd, "run_id": run_id,
            "created_at": now,
        }
        for e in explanations
    ]
    return pl.DataFrame(rows, schema=EXPLANATION_SCHEMA) if rows else pl.DataFrame(schema=EXPLANATION_SCHEMA)


def explanations_from_frame(frame: pl.DataFrame) -> list[Explanation]:
    return [
        Explanation(
            latent=row["latent"], explainer=row["explainer"], text=row["explanation"], status=row["status"],
            error=row["error"] or "", model=row["model"] or "", prompt_version=row["prompt_version"] or "",
            patterns=json.loads(row["patterns"]) if row["patterns"] else None,
            prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
            cost_usd=row["cost_usd"],
        )
        for row in frame.iter_rows(named=True)
    ]


def latest_explanations(store: Store, sae_id: str, explainer: str) -> pl.DataFrame:
    """The newest `explanations` row per latent for (sae_id, explainer); rows are append-only."""
    if not store.has("explanations"):
        return pl.DataFrame(schema=EXPLANATION_SCHEMA)
    return (
        store.scan("explanations")
        .filter((pl.col("sae_id") == sae_id) & (pl.col("explainer") == explainer))
        .sort("created_at")
        .group_by("latent")
        .last()
        .sort("latent")
        .collect()
    )


def scored_latents(store: Store, sae_id: str, explainer: str, scorer: str) -> set[int]:
    if not store.has("scores"):
        return set()
    frame = (
        store.scan("scores")
        .filter((pl.col("sae_id") == sae_id) & (pl.col("explainer") == explainer) & (pl.col("scorer") == scorer))
        .select("latent")
        .unique()
        .collect()
    )
    return set(frame["latent"].to_list())
