"""Write the HTML reports from the store: `reports/index.html` and one page per latent.

Layout (docs/store.md): `<store>/reports/index.html` (the dashboard) and
`<store>/reports/latents/<sae_id>/<latent>.html`. Pages are self-contained (inline CSS/JS, no network)
and link to each other with relative paths, so the folder can be copied or served as static files.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.parse import quote

import polars as pl

from flows.config import stable_hash
from flows.reports.data import LatentKey, ReportData, current_keys, load_report_data, merged_keys
from flows.reports.index import index_page
from flows.reports.pages import latent_page
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
"""The tables the pages show; with the resume keys they decide whether the reports are current."""


def reports_fingerprint(store: Store, sae_id: str | None, keys: dict[str, set[str]]) -> str:
    """Hash of what the reports are made from: the parts of the content tables (parts are immutable, so
    their names and sizes identify the rows) and the resume keys that pick the current rows. A rerun
    that adds no row and uses the same keys leaves it unchanged."""
    parts = {t: sorted(f"{p.name}:{p.stat().st_size}" for p in store.parts(t)) for t in CONTENT_TABLES}
    return stable_hash({"sae_id": sae_id, "parts": parts, "keys": {k: sorted(v) for k, v in keys.items()}}, 16)


def write_reports(store: Store, sae_id: str | None = None, run_keys: dict | None = None) -> Path:
    """Write the dashboard and every latent's page (of one SAE, or of all); return the index path.

    `run_keys`: the resume keys of the run that writes them (its rows are current, though its `runs` row
    comes after); else those of the newest ok runs. Nothing is rewritten when the reports already show
    the store as it is (`reports_fingerprint`)."""
    started = time.perf_counter()
    reports_dir = store.reports_dir()
    index = reports_dir / "index.html"
    marker = reports_dir / f".fingerprint-{sae_id or 'all'}"
    runs = store.read("runs") if store.has("runs") else pl.DataFrame()
    keys = merged_keys(run_keys) if run_keys is not None else current_keys(runs, sae_id)
    fingerprint = reports_fingerprint(store, sae_id, keys)
    if index.exists() and marker.exists() and marker.read_text() == fingerprint:
        log.info("reports are up to date (nothing new in the store) -> %s", index)
        return index
    data = load_report_data(store, sae_id, keys)
    keys_of_pages = data.latent_keys()
    _write_latent_pages(data, keys_of_pages, reports_dir)
    _write_text(index, index_page(data, {key: latent_href(key) for key in keys_of_pages}))
    _write_text(marker, fingerprint)
    log.info("reports: %d latent pages + index in %.1f s -> %s", len(keys_of_pages), time.perf_counter() - started,
             index)
    return index


def _write_latent_pages(data: ReportData, keys: list[LatentKey], reports_dir: Path) -> None:
    for sae in sorted({k[0] for k in keys}):
        (reports_dir / "latents" / sae).mkdir(parents=True, exist_ok=True)
    for i, key in enumerate(keys):
        prev_href = _sibling_href(key, keys[i - 1] if i > 0 else None)
        next_href = _sibling_href(key, keys[i + 1] if i + 1 < len(keys) else None)
        _write_text(latent_path(reports_dir, key), latent_page(data, key, prev_href, next_href))


def _sibling_href(key: LatentKey, other: LatentKey | None) -> str | None:
    """Link from one latent page to a neighbour of the same SAE (pages of one SAE share a folder)."""
    if other is None or other[0] != key[0]:
        return None
    return f"{other[1]}.html"


def _write_text(path: Path, text: str) -> None:
    """Write to a temp name then rename, so a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
