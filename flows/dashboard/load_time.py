"""Measure how long a dashboard page takes to open in headless Chromium (a measurement, not a test).

    python -m flows.dashboard.load_time file:///path/to/store/reports/index.html --runs 3

Prints per load: the load event, when the page's script finished (body[data-ready]) and, for the
index, when the latent table was built (the `atlas-table-built` performance mark). Needs Playwright and
Debian's /usr/bin/chromium (no browser download).
"""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger("latent_atlas.load_time")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def load_times(url: str, runs: int = 3, chromium: str = "/usr/bin/chromium") -> list[dict[str, float]]:
    """Seconds to the load event, to the page's ready flag and to the table mark, for `runs` fresh pages."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        for _ in range(runs):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            page.goto(url, wait_until="load")
            loaded = time.perf_counter() - start
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            ready = time.perf_counter() - start
            mark = page.evaluate("(performance.getEntriesByName('atlas-table-built')[0] || {}).startTime || null")
            out.append({"load_s": round(loaded, 3), "ready_s": round(ready, 3),
                        "table_s": round(mark / 1000, 3) if mark else float("nan")})
            page.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url", help="file:// or http://127.0.0.1 URL of a dashboard page")
    parser.add_argument("--runs", type=int, default=3, help="fresh page loads (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for times in load_times(args.url, args.runs):
        log.info("load event %.2f s, ready %.2f s, table built %.2f s", times["load_s"], times["ready_s"],
                 times["table_s"])


if __name__ == "__main__":
    main()
