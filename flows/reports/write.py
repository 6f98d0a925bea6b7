"""Static export of the reports: `<store>/reports/` opens from file:// with no server and no network.

Layout (docs/dashboard.md): `index.html` (the dashboard, its data embedded), `explanations.js` (the full
texts the search loads on first use), `assets/` (Plotly, Tabulator, the shared scripts and CSS, written
once), and `latents/<sae_id>/<latent>.html`, one small
page per latent: the shared template plus that latent's compact data. The latent pages are rewritten
only when the store changed (`reports_fingerprint`); the index every time, so the run that writes the
reports is listed in them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from urllib.parse import quote

import polars as pl

from flows.config import stable_hash
from flows.reports.data import LatentKey, current_keys, load_report_data, merged_keys
from flows.reports.histogram import activation_histograms
from flows.reports.index_view import full_texts, index_view
from flows.reports.latent_view import latent_view
from flows.reports.logits import latent_logits, logits_for
from flows.reports.render import HERE, copy_assets, index_html, latent_html, texts_js
from flows.reports.scores import all_score_rows, scores_by_latent
from flows.store import Store

log = logging.getLogger(__name__)


def latent_href(key: LatentKey) -> str:
    """Path of a latent's page relative to the reports directory (URL-quoted)."""
    sae_id, latent = key
    return f"latents/{quote(sae_id, safe='')}/{latent}.html"


def latent_path(reports_dir: Path, key: LatentKey) -> Path:
    sae_id, latent = key
    return reports_dir / "latents" / sae_id / f"{latent}.html"


CONTENT_TABLES = ("latent_stats", "examples", "explanations", "scores", "simulations")
"""The tables the pages show; with the resume keys and the pages' code they decide whether the reports are current."""


def reports_fingerprint(store: Store, sae_id: str | None, keys: dict[str, set[str]]) -> str:
    """Hash of what the reports are made from: the parts of the content tables (parts are immutable, so
    their names and sizes identify the rows) and the resume keys that pick the current rows. A rerun
    that adds no row and uses the same keys leaves it unchanged."""
    parts = {t: sorted(f"{p.name}:{p.stat().st_size}" for p in store.parts(t)) for t in CONTENT_TABLES}
    return stable_hash({"sae_id": sae_id, "parts": parts, "keys": {k: sorted(v) for k, v in keys.items()},
                        "pages": pages_version()}, 16)


def pages_version() -> str:
    """Hash of the templates and scripts the pages are made with: pages of an older version are rewritten."""
    files = sorted([*(HERE / "templates").glob("*.html"), *(HERE / "static").glob("*.*")])
    return stable_hash({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}, 16)


def write_reports(store: Store, sae_id: str | None = None, run_keys: dict | None = None,
                  current_run: dict | None = None) -> Path:
    """Write the dashboard and every latent's page (of one SAE, or of all); return the index path.

    `run_keys`: the resume keys of the run that writes them (its rows are current, though its `runs` row
    comes after); else those of the newest ok runs. `current_run`: that run's id, flow and start, listed in
    the dashboard's runs. Latent pages are skipped when they already show the store as it is."""
    started = time.perf_counter()
    reports_dir = store.reports_dir()
    index = reports_dir / "index.html"
    marker = reports_dir / f".fingerprint-{sae_id or 'all'}"
    runs = store.read("runs") if store.has("runs") else pl.DataFrame()
    keys = merged_keys(run_keys) if run_keys is not None else current_keys(runs, sae_id)
    fingerprint = reports_fingerprint(store, sae_id, keys)
    data = load_report_data(store, sae_id, keys, examples=False)
    score_rows = all_score_rows(store, sae_id, keys)
    copy_assets(reports_dir / "assets")
    up_to_date = index.exists() and marker.exists() and marker.read_text() == fingerprint
    if up_to_date:
        log.info("latent pages are up to date (nothing new in the store); rewriting the index only")
    else:
        write_latent_pages(store, data.latent_keys(), keys, scores_by_latent(score_rows), reports_dir)
    _write_text(reports_dir / "explanations.js", texts_js(full_texts(data)))
    _write_text(index, index_html(index_view(store, data, score_rows, current_run), "assets/", ".html"))
    _write_text(marker, fingerprint)
    log.info("reports: %d latents in %.1f s -> %s", len(data.latent_keys()), time.perf_counter() - started, index)
    return index


PAGES_PER_READ = 512
"""Latents whose rows (examples, simulations, tokens) are read at once while writing pages: memory stays
bounded by one slice, whatever the SAE's size."""


def write_latent_pages(store: Store, keys: list[LatentKey], run_keys: dict[str, set[str]],
                       scores: dict[LatentKey, list[dict]], reports_dir: Path) -> int:
    """One page per latent of `keys`; returns how many. Histograms and the logit lens are read once per
    SAE, the other rows a slice of PAGES_PER_READ latents at a time."""
    for sae_id in sorted({k[0] for k in keys}):
        mine = [k for k in keys if k[0] == sae_id]
        histograms, lens = activation_histograms(store, sae_id), latent_logits(store, sae_id)
        (reports_dir / "latents" / sae_id).mkdir(parents=True, exist_ok=True)
        for start in range(0, len(mine), PAGES_PER_READ):
            chunk = mine[start:start + PAGES_PER_READ]
            data = load_report_data(store, sae_id, run_keys, latent_range=(chunk[0][1], chunk[-1][1] + 1))
            for i, key in enumerate(chunk, start=start):
                prev_latent = mine[i - 1][1] if i > 0 else None
                next_latent = mine[i + 1][1] if i + 1 < len(mine) else None
                view = latent_view(data, key, scores.get(key, []), histograms.get(key[1]), logits_for(lens, key[1]),
                                   (prev_latent, next_latent))
                _write_text(latent_path(reports_dir, key),
                            latent_html(view, "../../assets/", ".html", "../../index.html"))
    return len(keys)


def _write_text(path: Path, text: str) -> None:
    """Write to a temp name then rename, so a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
