"""The served dashboard: same pages as the export, read on request, local only, no path traversal."""

from __future__ import annotations

import http.client
import inspect
from datetime import UTC, datetime

import polars as pl
import pytest
from planted_store import SAE, SCRIPT, run_row

from flows.cli.main import build_parser
from flows.dashboard.server import serve
from flows.store import Store


def _get(port: int, raw_path: str) -> tuple[int, bytes]:
    """A request with the path sent byte for byte (no client-side normalisation of `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", raw_path, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_index_and_latent_page_load_clean(served, visit) -> None:
    seen = visit(served.url + "/")
    assert seen.errors == [] and seen.outside == []
    assert seen.page.locator("#latent-table .tabulator-row").count() == 5
    link = seen.page.locator(".tabulator-cell[tabulator-field='latent'] a", has_text="0").first
    link.click()
    seen.page.wait_for_url(f"**/latents/{SAE}/0")
    seen.page.wait_for_selector("body[data-ready='1']")
    assert seen.page.locator("#examples .tok.on").count() >= 3
    seen.page.wait_for_selector("#histogram[data-drawn='1'] .trace.bars path", state="attached")
    assert seen.errors == [] and seen.outside == []


def test_planted_script_renders_as_text_when_served(served, visit) -> None:
    for path in ("/", f"/latents/{SAE}/1"):
        seen = visit(served.url + path)
        assert seen.page.evaluate("window.__xss") is None
        assert seen.page.locator("img").count() == 0
        assert SCRIPT in seen.page.inner_text("body")


def test_a_new_run_shows_on_reload(served, visit) -> None:
    Store(served.root).append("runs", pl.DataFrame([run_row("run-new", "ok", datetime(2025, 2, 1, tzinfo=UTC))]))
    seen = visit(served.url + "/")
    assert "run-new" in seen.page.inner_text("#runs")


@pytest.mark.parametrize("path", [
    "/assets/../../../etc/passwd", "/assets/%2e%2e/%2e%2e/runs", "/latents/..%2f..%2fsaes/1",
    "/latents/%2E%2E/1", "/assets/%252e%252e/cfg.json", "/latents/sae-tiny/..", "/assets/..%5c..%5cetc",
    f"/latents/{SAE}/../../saes/{SAE}/cfg.json",
])
def test_path_traversal_is_refused(served, path: str) -> None:
    status, body = _get(served.port, path)
    assert status in (400, 404), (path, status)
    assert b"training_stats" not in body and b"root:" not in body


def test_only_known_assets_and_saes_are_served(served) -> None:
    assert _get(served.port, "/assets/plotly.min.js")[0] == 200
    assert _get(served.port, "/assets/cfg.json")[0] == 404
    assert _get(served.port, "/latents/no-such-sae/0")[0] == 404
    assert _get(served.port, f"/latents/{SAE}/99")[0] == 404  # the SAE has 5 latents


def test_binds_localhost_unless_told_otherwise() -> None:
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    args = build_parser().parse_args(["dashboard", "--store", "x"])
    assert args.host == "127.0.0.1"
