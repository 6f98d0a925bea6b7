"""Explanation <-> `explanations` table rows, and "the newest row per key wins" for every reader.

Tables are append-only (a rerun appends, never rewrites), so a reader that wants the current state of a
key takes its newest row: `latest_rows` is that rule, used by the resume logic and by the reports.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from explain.records import Explanation
from flows.store import Store
from flows.store.schemas import table_schema


def explanation_frame(explanations: list[Explanation], sae_id: str, run_id: str, explain_key: str) -> pl.DataFrame:
    """`explanations` rows of one chunk, keyed by the settings that produced them (`explain_key`)."""
    now = datetime.now(UTC)
    rows = [
        {
            "sae_id": sae_id, "latent": e.latent, "explainer": e.explainer, "model": e.model,
            "prompt_version": e.prompt_version, "explanation": e.text, "patterns": e.patterns_json(),
            "status": e.status, "error": e.error, "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens, "cost_usd": e.cost_usd, "run_id": run_id,
            "created_at": now, "explain_key": explain_key,
        }
        for e in explanations
    ]
    schema = table_schema("explanations").schema  # typed even when empty or when a column is all null
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


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


def latest_rows(frame: pl.LazyFrame | pl.DataFrame, keys: list[str], order: str | list[str] | None = None
                ) -> pl.DataFrame:
    """The newest row of each `keys` value: the last one by `order` (ascending, nulls oldest; ties and
    `order=None` keep the frame's order, so a later-appended row wins). The kept rows stay in their
    order after that sort; an empty frame comes back empty."""
    lazy = frame.lazy()
    if order:
        # maintain_order: equal timestamps (one chunk of rows) still resolve to the later-written row.
        lazy = lazy.sort(order, nulls_last=False, maintain_order=True)
    return lazy.unique(subset=keys, keep="last", maintain_order=True).collect()


def latest_explanations(store: Store, sae_id: str, explainer: str, explain_key: str) -> pl.DataFrame:
    """The newest `explanations` row per latent for (sae_id, explainer, explain_key), by latent."""
    if not store.has("explanations"):
        return table_schema("explanations").empty()
    rows = store.scan("explanations").filter((pl.col("sae_id") == sae_id) & (pl.col("explainer") == explainer)
                                             & (pl.col("explain_key") == explain_key))
    return latest_rows(rows, ["latent"], "created_at").sort("latent")


def scored_latents(store: Store, sae_id: str, explainer: str, scorer: str, score_key: str) -> set[int]:
    """Latents with a `scores` row for (sae_id, explainer, scorer) under `score_key`.

    Any row counts: a scorer appends all of a latent's rows (its sampled row and, when the weights allow,
    its natural ipw estimate; or the exact natural row) in one chunk, so one row means the latent is done.
    A latent without an ipw row (no weights) is scored, not pending."""
    if not store.has("scores"):
        return set()
    frame = (
        store.scan("scores")
        .filter((pl.col("sae_id") == sae_id) & (pl.col("explainer") == explainer) & (pl.col("scorer") == scorer)
                & (pl.col("score_key") == score_key))
        .select("latent")
        .unique()
        .collect()
    )
    return set(frame["latent"].to_list())
