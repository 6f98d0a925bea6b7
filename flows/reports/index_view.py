"""The dashboard's data: SAE panels, runs, spend, the latent table and the score distributions.

Columnar (one list per column, rows aligned) because the index must stay small at scale (<= 2 MB for
4096 latents): the SAE id is stored once per SAE and referenced by position, scores are rounded to 3
digits, and the distributions share the latent table's row order instead of repeating latent ids.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from flows.reports.data import ReportData, is_baseline
from flows.reports.panels import runs_list, sae_panels, spend_over_time
from flows.reports.scores import clean
from flows.store import Store

DISTRIBUTION_METRICS = ("f1", "precision", "recall")
"""Headline metrics per real (explainer, scorer) in the latent table (the scatter plots use them)."""
TABLE_TEXT = 120
"""Characters of an explanation in the index; the full texts are a separate file that the search loads."""


def index_view(store: Store, data: ReportData, score_rows: pl.DataFrame, current_run: dict | None = None) -> dict:
    """Everything the dashboard shows; `score_rows`: scores.py::all_score_rows, `current_run`: the run that
    writes the reports (listed though its `runs` row comes when it ends)."""
    keys = data.latent_keys()
    sae_ids = sorted({k[0] for k in keys} | _stored_saes(store))
    position = {key: i for i, key in enumerate(keys)}
    counts: dict[str, dict[str, int]] = {}
    for (sae_id, _), stats in data.stats.items():
        counts.setdefault(sae_id, {}).setdefault(stats.get("status") or "?", 0)
        counts[sae_id][stats.get("status") or "?"] += 1
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "saes": sae_panels(store, sae_ids, counts),
        "runs": runs_list(store, current_run),
        "run_comparison": run_comparison(store),
        "spend": spend_over_time(store),
        "latents": latent_table(data, keys, sae_ids),
        "series": score_series(score_rows, position),
    }


def _stored_saes(store: Store) -> set[str]:
    return {p.parent.name for p in store.root.glob("saes/*/cfg.json")}


def latent_table(data: ReportData, keys: list[tuple[str, int]], sae_ids: list[str]) -> dict:
    """Columns of the latent table: SAE (position in `saes`), latent, status, statistics, the headline
    explanation and, per real (explainer, scorer), its headline F1, precision and recall."""
    sae_pos = {s: i for i, s in enumerate(sae_ids)}
    combos = sorted({(r["explainer"], r["scorer"]) for rows in data.scores.values() for r in rows
                     if not is_baseline(r["explainer"])})
    cols: dict[str, list] = {c: [] for c in ("sae", "latent", "status", "frequency", "max_act", "n_active",
                                             "explainer", "explanation", "note")}
    metric_cols = {f"{m} {e}/{s}": [] for e, s in combos for m in DISTRIBUTION_METRICS}
    for key in keys:
        stats = data.stats.get(key, {})
        real = [e for e in data.explanations.get(key, []) if not is_baseline(e["explainer"])]
        ok = [e for e in real if e.get("status") == "ok"]
        shown = ok[0] if ok else (real[0] if real else None)
        cols["sae"].append(sae_pos[key[0]])
        cols["latent"].append(key[1])
        cols["status"].append(stats.get("status") or "")
        cols["frequency"].append(clean(stats.get("frequency"), 7))
        cols["max_act"].append(clean(stats.get("max_act"), 3))
        cols["n_active"].append(stats.get("n_active"))
        cols["explainer"].append(shown["explainer"] if shown else "")
        text = (shown.get("explanation") or "") if ok else ""
        cols["explanation"].append(text if len(text) <= TABLE_TEXT else text[:TABLE_TEXT] + "…")
        cols["note"].append(_note(stats, shown, ok))
        headline = {(r["explainer"], r["scorer"]): r for r in data.scores.get(key, [])}
        for e, s in combos:
            row = headline.get((e, s), {})
            for m in DISTRIBUTION_METRICS:
                metric_cols[f"{m} {e}/{s}"].append(clean(row.get(m)))
    return {**cols, "metrics": metric_cols}


def full_texts(data: ReportData) -> list[str]:
    """Every real explanation of each latent (table order), joined: what the full-text search reads."""
    return [" | ".join(e.get("explanation") or "" for e in data.explanations.get(key, [])
                       if not is_baseline(e["explainer"]) and e.get("status") == "ok")
            for key in data.latent_keys()]


def _note(stats: dict, shown: dict | None, ok: list[dict]) -> str:
    """Why a row has no explanation, in a few words (the latent page says more)."""
    if ok:
        return ""
    if stats.get("status") and stats["status"] != "ok":
        return f"{stats['status']}: {stats.get('reason') or ''}".strip(": ")
    if shown is not None:
        return f"{shown['status']}: {shown.get('error') or ''}".strip(": ")
    return "not explained yet"


def score_series(frame: pl.DataFrame, position: dict[tuple[str, int], int]) -> list[dict]:
    """F1 of every (explainer, scorer, population, estimator), aligned with the latent table's rows (null
    where a latent has no such row; 2 digits: the plots bin them in twentieths). Baselines are series
    too (flagged), so the plots draw them in."""
    if frame.is_empty():
        return []
    frame = frame.with_columns(pl.col("estimator").fill_null(""))
    out = []
    for (explainer, scorer, population, estimator), part in frame.group_by(
            ["explainer", "scorer", "population", "estimator"], maintain_order=True):
        f1: list[float | None] = [None] * len(position)
        for sae_id, latent, value in part.select("sae_id", "latent", "f1").iter_rows():
            row = position.get((sae_id, int(latent)))
            if row is not None:
                f1[row] = clean(value, 2)
        out.append({"explainer": explainer, "scorer": scorer, "population": population, "estimator": estimator,
                    "baseline": is_baseline(explainer), "f1": f1})
    out.sort(key=lambda s: (s["baseline"], s["explainer"], s["scorer"], s["population"], s["estimator"]))
    return out


def run_comparison(store: Store) -> list[dict]:
    """Median F1 and latents scored per (run, SAE, explainer, scorer, population): every run's own rows,
    so runs with other settings (another explainer model, another SAE) compare side by side."""
    if not store.has("scores"):
        return []
    scores = store.scan("scores")
    if "population" not in scores.collect_schema().names():
        scores = scores.with_columns(pl.lit("sampled").alias("population"))
    frame = (scores.group_by("run_id", "sae_id", "explainer", "scorer", "population")
             .agg(pl.len().alias("latents"), pl.col("f1").fill_nan(None).median().alias("median_f1"))
             .sort("run_id", "explainer", "scorer", "population").collect())
    return [{k: clean(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
