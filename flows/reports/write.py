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

from flows.reports.data import LatentKey, ReportData, load_report_data
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


def write_reports(store: Store, sae_id: str | None = None) -> Path:
    """Write the dashboard and every latent's page (of one SAE, or of all); return the index path."""
    started = time.perf_counter()
    data = load_report_data(store, sae_id)
    reports_dir = store.reports_dir()
    keys = data.latent_keys()
    _write_latent_pages(data, keys, reports_dir)
    index = reports_dir / "index.html"
    _write_text(index, index_page(data, {key: latent_href(key) for key in keys}))
    log.info("reports: %d latent pages + index in %.1f s -> %s", len(keys), time.perf_counter() - started, index)
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
