"""`latent-atlas dashboard`: the store served live, the same pages as the static export.

FastAPI and uvicorn come with Prefect (no new dependency). Every request looks at the Parquet tables
again (the index is rebuilt when one of its tables has a new or changed part, `store_state`; latent
pages are always read afresh), so a run that finishes while the server is up shows on reload. The server binds 127.0.0.1
unless told otherwise and serves exactly: `/` (the dashboard), `/explanations.js`, `/assets/<name>`
(the fixed files of flows/reports/render.py::ASSETS), and `/latents/<sae_id>/<latent>` for an SAE in
the store; any path with `..` (raw or percent-encoded) or a backslash is refused before routing.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from urllib.parse import unquote

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

from flows.reports.data import current_keys, load_report_data
from flows.reports.histogram import activation_histograms
from flows.reports.index_view import full_texts, index_view
from flows.reports.latent_view import latent_view
from flows.reports.logits import latent_logits, logits_for
from flows.reports.render import ASSETS, index_html, latent_html, texts_js
from flows.reports.scores import all_score_rows, scores_by_latent
from flows.store import Store

log = logging.getLogger(__name__)

SAE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
"""What an SAE id looks like (flows/store/ids.py); anything else is not looked up on disk."""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""No inline script can run even if markup slipped through (the pages' scripts are files; their data is
JSON in a non-executable script element)."""


def is_traversal(raw_path: str) -> bool:
    """True when a request path tries to leave what the server serves (`..`, encoded or not, `\\`, NUL)."""
    decoded = raw_path
    for _ in range(3):  # %252e%252e: decode repeatedly, as a proxy in front might
        decoded = unquote(decoded)
    return ".." in decoded.split("/") or "\\" in decoded or "\x00" in decoded


def make_app(store_root: str | Path) -> FastAPI:
    """The dashboard app over the store at `store_root` (read on every request)."""
    store = Store(store_root)
    app = FastAPI(title="latent-atlas dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def refuse_traversal(request, call_next):  # noqa: ANN001, ANN202 - Starlette's middleware signature
        raw = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        if is_traversal(raw) or is_traversal(request.url.path):
            log.warning("dashboard: refused %r", raw)
            return PlainTextResponse("path refused", status_code=400)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    cache: dict[str, tuple[str, str]] = {}  # page -> (store state, text): rebuilt when a table part changes

    def cached(name: str, build) -> str:  # noqa: ANN001 - a zero-argument builder
        state = store_state(store)
        if name not in cache or cache[name][0] != state:
            cache[name] = (state, build())
        return cache[name][1]

    def build_index() -> str:
        data = load_report_data(store, None, None, examples=False)
        keys = current_keys(store.read("runs"), None) if store.has("runs") else {}
        return index_html(index_view(store, data, all_score_rows(store, None, keys)), "assets/", "", "explanations.js")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return cached("index", build_index)

    @app.get("/explanations.js")
    def texts() -> Response:
        text = cached("texts", lambda: texts_js(full_texts(load_report_data(store, None, None, examples=False))))
        return Response(text, media_type="text/javascript")

    @app.get("/assets/{name}")
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, "no such asset")
        return FileResponse(ASSETS[name], media_type=_media_type(name))

    @app.get("/latents/{sae_id}/{latent}", response_class=HTMLResponse)
    def latent_page(sae_id: str, latent: int) -> str:
        if not SAE_ID.match(sae_id) or not (store.sae_dir(sae_id) / "cfg.json").is_file():
            raise HTTPException(404, "no such SAE in this store")
        n_latents = _n_latents(store, sae_id)
        if latent < 0 or (n_latents is not None and latent >= n_latents):
            raise HTTPException(404, "no such latent")
        data = load_report_data(store, sae_id, None, latent=latent)
        keys = current_keys(store.read("runs"), sae_id) if store.has("runs") else {}
        scores = scores_by_latent(all_score_rows(store, sae_id, keys, latent)).get((sae_id, latent), [])
        histogram = activation_histograms(store, sae_id, [latent]).get(latent)
        neighbours = (latent - 1 if latent > 0 else None,
                      latent + 1 if n_latents is None or latent + 1 < n_latents else None)
        view = latent_view(data, (sae_id, latent), scores, histogram,
                           logits_for(latent_logits(store, sae_id, [latent]), latent), neighbours)
        return latent_html(view, "../../assets/", "", "../../")

    return app


INDEX_TABLES = ("runs", "latent_stats", "explanations", "scores", "llm_calls", "sae_metrics")
"""Tables the dashboard's index reads (with saes/ and any sae_sweep*/sae_fits*): a new part in any of
them, or a changed one, rebuilds it on the next request."""


def store_state(store: Store) -> str:
    """Names, sizes and times of the parts the index is built from: equal states, equal index."""
    root = store.root
    dirs = [root / t for t in INDEX_TABLES] + [p for p in root.glob("sae_sweep*")] + [p for p in root.glob("sae_fits*")]
    entries = [f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
               for d in dirs if d.is_dir() for p in sorted(d.rglob("*.parquet"))]
    entries += [f"{p.relative_to(root)}:{p.stat().st_mtime_ns}" for p in sorted(root.glob("saes/*/*.json"))]
    return "\n".join(entries)


def _n_latents(store: Store, sae_id: str) -> int | None:
    try:
        cfg = json.loads((store.sae_dir(sae_id) / "cfg.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = cfg.get("sae_config", {}).get("n_latents", cfg.get("d_sae"))
    return int(value) if value is not None else None


def _media_type(name: str) -> str:
    return {"js": "text/javascript", "css": "text/css"}.get(name.rsplit(".", 1)[-1], "text/plain")


def serve(store_root: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the dashboard until interrupted (uvicorn, one process)."""
    import uvicorn

    log.info("dashboard of %s on http://%s:%d/", store_root, host, port)
    uvicorn.run(make_app(store_root), host=host, port=port, log_level="warning")
