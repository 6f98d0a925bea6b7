"""The static export in real Chromium, from file://: loads clean and offline, the table sorts and the
search filters, a latent page shows shaded tokens and its histogram, and planted script never runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from planted_store import SAE, SCRIPT, fill

from flows.reports import write_reports


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    store = fill(tmp_path_factory.mktemp("static") / "store")
    return write_reports(store).parent


def _latents_in_table(page) -> list[int]:  # noqa: ANN001 - a Playwright page
    cells = page.locator("#latent-table .tabulator-row .tabulator-cell[tabulator-field='latent']")
    return [int(t) for t in cells.all_inner_texts()]


def test_index_loads_offline_without_errors(reports: Path, visit) -> None:
    seen = visit((reports / "index.html").as_uri())
    assert seen.errors == [] and seen.outside == []
    assert sorted(_latents_in_table(seen.page)) == [0, 1, 2, 3, 4]
    panel = seen.page.inner_text("#saes")
    assert SAE in panel and "0.125" in panel and "dead fraction" in panel  # FVU and the dead fraction shown
    seen.page.locator("#distributions > div").first.scroll_into_view_if_needed()  # charts draw when in view
    seen.page.wait_for_selector("#distributions > div[data-drawn='1'] .main-svg")


def test_table_sorts_by_a_column(reports: Path, visit) -> None:
    page = visit((reports / "index.html").as_uri()).page
    header = page.locator(".tabulator-col[tabulator-field='frequency'] .tabulator-col-title")
    header.click()
    ascending = _latents_in_table(page)
    header.click()
    descending = _latents_in_table(page)
    assert ascending == [3, 2, 1, 0, 4]  # frequencies 0.0, 0.005, 0.01, 0.0123, 0.75
    assert descending == ascending[::-1]


def test_search_filters_on_full_text(reports: Path, visit) -> None:
    page = visit((reports / "index.html").as_uri()).page
    page.fill("#search", "cat bold")
    page.wait_for_selector("body[data-texts-loaded='1']")
    assert _latents_in_table(page) == [0]
    page.fill("#search", "window.__xss")  # the planted script is searchable text
    assert _latents_in_table(page) == [1]
    page.fill("#search", "")
    assert len(_latents_in_table(page)) == 5


def test_latent_page_shades_tokens_and_draws_its_histogram(reports: Path, visit) -> None:
    seen = visit((reports / "latents" / SAE / "0.html").as_uri())
    page = seen.page
    assert seen.errors == [] and seen.outside == []
    shaded = page.locator("#examples .tok.on")
    assert shaded.count() >= 3
    assert all(s for s in shaded.evaluate_all("els => els.map(e => e.style.background)"))
    assert "cat" in shaded.all_inner_texts()  # the top example's peak token (4.5 on "cat")
    page.wait_for_selector("#histogram[data-drawn='1'] .trace.bars path", state="attached")  # after Plotly
    assert "0.01230" in page.inner_text("#histogram")  # firing density in the title
    # the score example of context 11: true [0, 2, 0, 1.5], n2g's simulation [1, 2, 0, 0]
    assert page.locator("#examples .tok[title^='true']").evaluate_all("els => els.map(e => e.title)") == [
        "true 0 / sim 1", "true 2 / sim 2", "true 0 / sim 0", "true 1.50 / sim 0"]
    page.locator("#correlated a").first.click()
    page.wait_for_url("**/latents/sae-tiny/1.html")


@pytest.mark.parametrize("name", ["index.html", f"latents/{SAE}/1.html"])
def test_planted_script_renders_as_text(reports: Path, visit, name: str) -> None:
    seen = visit((reports / name).as_uri())
    if name == "index.html":
        seen.page.fill("#search", "dog")
        seen.page.wait_for_selector("body[data-texts-loaded='1']")
    assert seen.page.evaluate("window.__xss") is None
    assert seen.page.locator("img").count() == 0
    assert not any(r.endswith("/x") for r in seen.requests)
    assert SCRIPT in seen.page.inner_text("body")


@pytest.mark.parametrize(("latent", "words"), [(2, "no pattern survived pruning"), (3, "dead"), (4, "too dense")])
def test_unexplained_latent_says_why(reports: Path, visit, latent: int, words: str) -> None:
    page = visit((reports / "latents" / SAE / f"{latent}.html").as_uri()).page
    assert words in page.inner_text("#notice")


def test_a_real_run_loads_clean(tiny_run, visit) -> None:
    _, summary = tiny_run
    seen = visit(Path(summary["report"]).as_uri())
    assert seen.errors == [] and seen.outside == []
    assert seen.page.locator("#latent-table .tabulator-row").count() >= 25  # 25+ latents on one screen
    latent = visit((Path(summary["report"]).parent / "latents" / summary["sae_id"] / "0.html").as_uri())
    assert latent.errors == [] and latent.outside == []


def test_a_scatter_point_opens_its_latent(reports: Path, visit) -> None:
    page = visit((reports / "index.html").as_uri()).page
    chart = page.locator("#scatter > div").first
    chart.scroll_into_view_if_needed()
    page.wait_for_selector("#scatter > div[data-drawn='1']")
    n_points = page.evaluate("document.querySelector('#scatter > div').data[0].customdata.length")
    assert n_points == 2  # latents 0 and 1 have n2g scores
    page.evaluate("document.querySelector('#scatter > div').emit('plotly_click', {points: [{customdata: 1}]})")
    page.wait_for_url("**/latents/sae-tiny/1.html")
