"""Real headless Chromium (Debian's /usr/bin/chromium through Playwright) and a live dashboard server.

Without Chromium the browser tests skip locally but fail under CI (CI=true), so CI cannot pass by
skipping them; .ci/run installs Chromium.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOCAL = ("file://", "http://127.0.0.1", "data:", "blob:", "about:")


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: the browser tests must run in CI (.ci/run installs chromium)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module (starting one costs about a second). Not per session:
    Playwright's sync API keeps an event loop running in the main thread while it is open, and Prefect's
    sync/async dispatch (e.g. `run_deployment` in tests/flows/test_schedule.py) would then return
    coroutines to later tests."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """A page with what it logged and requested."""

    page: object
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def visit(browser) -> Iterator:
    """visit(url) -> Visit: opens `url` in a fresh context, waits until the page's script finished
    (body[data-ready]); every request that would leave 127.0.0.1 / file:// is recorded and aborted."""
    contexts = []

    def open_(url: str) -> Visit:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        seen = Visit(page)
        page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen.errors.append(str(e)))

        def route(r) -> None:  # noqa: ANN001 - Playwright's Route
            seen.requests.append(r.request.url)
            if r.request.url.startswith(LOCAL):
                r.continue_()
            else:
                seen.outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto(url, wait_until="load")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        return seen

    yield open_
    for context in contexts:
        context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    port: int
    root: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    """The planted store served by the dashboard app (uvicorn in a thread, 127.0.0.1, a free port)."""
    import uvicorn
    from planted_store import fill

    from flows.dashboard.server import make_app

    root = tmp_path_factory.mktemp("served") / "store"
    fill(root)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(root), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "dashboard server did not start"
    yield Served(f"http://127.0.0.1:{port}", port, root)
    server.should_exit = True
    thread.join(timeout=10)
