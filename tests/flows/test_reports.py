"""Static reports from a planted store (tests/dashboard/planted_store.py): layout and stable addresses,
known numbers in the embedded data, escaping, histograms against numpy, why a latent is unexplained,
the fingerprint skip, generic SAE metrics and sweeps, the Neuronpedia export, and the CLI's errors."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dashboard.planted_store import ACTS, EXPLANATION_1, IMG, SAE, SCRIPT, fill

from flows.cli.main import main
from flows.reports import write_reports
from flows.reports.histogram import activation_histograms
from flows.reports.neuronpedia import neuronpedia_records
from flows.reports.panels import sae_panels, sweep_points
from flows.reports.render import script_json
from flows.store import Store


def _embedded(path: Path) -> dict:
    """The JSON a page embeds (what its script renders)."""
    text = path.read_text()
    return json.loads(re.search(r'<script id="atlas-data" type="application/json">(.*?)</script>', text, re.S)[1])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    store = fill(tmp_path_factory.mktemp("reports") / "store")
    write_reports(store, current_run={"run_id": "run-now", "flow": "pipeline", "status": "running",
                                      "started_at": datetime(2025, 3, 1, tzinfo=UTC)})
    return store


def test_layout_and_stable_addresses(store: Store) -> None:
    reports = store.reports_dir()
    assert (reports / "index.html").is_file() and (reports / "explanations.js").is_file()
    assert sorted(p.name for p in (reports / "latents" / SAE).glob("*.html")) == [f"{i}.html" for i in range(5)]
    assets = {p.name for p in (reports / "assets").iterdir()}
    assert {"plotly.min.js", "tabulator.min.js", "latent.js", "index.js"} <= assets
    for page in reports.rglob("*.html"):
        srcs = re.findall(r'(?:src|href)="([^"]+)"', page.read_text())
        assert srcs and all(not s.startswith(("http:", "https:", "//")) for s in srcs), page
        assert all((page.parent / s).resolve().is_file() for s in srcs), page


def test_index_data_has_the_known_numbers(store: Store) -> None:
    data = _embedded(store.reports_dir() / "index.html")
    table = data["latents"]
    assert table["latent"] == [0, 1, 2, 3, 4] and table["status"] == ["ok", "ok", "ok", "dead", "too_dense"]
    # latent 0's headline is its exact natural row (0.75, 0.5: F1 0.6), latent 1's the sampled one (F1 1/3)
    assert table["metrics"]["f1 n2g/simulation"][:2] == [0.6, 0.333]
    assert table["note"][2] == "failed: no pattern survived pruning" and table["note"][3].startswith("dead")
    baselines = [s for s in data["series"] if s["baseline"]]
    assert [s["explainer"] for s in baselines] == ["n2g-random"] and baselines[0]["f1"][:2] == [0.0, 0.08]
    panel = data["saes"][0]
    assert (panel["fvu"], panel["l0"], panel["dead_fraction"], panel["k"]) == (0.125, 2.0, 0.2, 2)
    assert [r["run_id"] for r in data["runs"]] == ["run-now", "run-1"]  # the run writing it is listed


def test_untrusted_text_is_never_markup(store: Store) -> None:
    for path in store.reports_dir().rglob("*"):
        if path.suffix in (".html", ".js") and path.parent.name != "assets":
            text = path.read_text()
            assert "<script>window" not in text and "<img" not in text and "<b>bold" not in text, path
    page = _embedded(store.reports_dir() / "latents" / SAE / "1.html")
    assert page["explanations"][0]["text"] == EXPLANATION_1  # raw in the data, inserted as text by the script
    assert SCRIPT in page["vocab"] or " " + SCRIPT in page["vocab"]
    assert json.loads(script_json({"t": f"</script>{IMG}&"})) == {"t": f"</script>{IMG}&"}


def test_histograms_match_numpy(store: Store) -> None:
    got = activation_histograms(store, SAE, n_bins=4)
    assert set(got) == set(ACTS)
    for latent, values in ACTS.items():
        counts, edges = np.histogram(values, bins=4, range=(0.0, max(values)))
        assert got[latent]["counts"] == counts.tolist(), latent
        assert np.allclose(got[latent]["edges"], edges)
    assert activation_histograms(store, SAE, [1], n_bins=4).keys() == {1}


@pytest.mark.parametrize(("latent", "words"), [(0, ""), (2, "Explanation failed: n2g: no pattern survived pruning"),
                                               (3, "dead"), (4, "too dense")])
def test_every_unexplained_latent_says_why(store: Store, latent: int, words: str) -> None:
    notice = _embedded(store.reports_dir() / "latents" / SAE / f"{latent}.html")["notice"]
    assert (words in notice) if words else notice == ""


def test_latent_page_examples_and_scores(store: Store) -> None:
    page = _embedded(store.reports_dir() / "latents" / SAE / "0.html")
    assert [g["key"] for g in page["groups"]] == ["top", "d6", "random"]
    top = page["groups"][0]["examples"][0]
    assert [page["vocab"][i] for i in top["t"]][1] == " cat" and top["a"] == [[1, 5], [4.5, 1.0]]
    assert page["groups"][1]["examples"][0]["sim"] == {"n2g/simulation": [[0, 1], [1.0, 2.0]]}
    rows = page["explanations"][0]["scores"]
    assert [(r[1], r[2]) for r in rows] == [("natural", "exact"), ("sampled", "sample")]
    assert page["correlated"] == [1] and page["next"] == 1 and page["prev"] is None


def test_fingerprint_skips_latent_pages_but_not_the_index(tmp_path: Path) -> None:
    store = fill(tmp_path / "store")
    write_reports(store)
    page = store.reports_dir() / "latents" / SAE / "0.html"
    before = page.stat().st_mtime_ns
    store.append("runs", pl.DataFrame([{**_run("run-2")}]))
    write_reports(store)
    assert page.stat().st_mtime_ns == before
    assert "run-2" in (store.reports_dir() / "index.html").read_text()


def _run(run_id: str) -> dict:
    from dashboard.planted_store import run_row

    return run_row(run_id, "ok", datetime(2025, 1, 2, tzinfo=UTC))


def test_sae_metrics_and_sweeps_are_read_generically(tmp_path: Path) -> None:
    store = fill(tmp_path / "store")
    (tmp_path / "store" / "sae_metrics").mkdir()
    pl.DataFrame({"sae_id": [SAE], "fvu_heldout": [0.25], "probe_auc": [0.9], "note": ["x"]}).write_parquet(
        tmp_path / "store" / "sae_metrics" / "part-1.parquet")
    (tmp_path / "store" / "sae_sweep").mkdir()
    pl.DataFrame({"n_latents": [64, 128, 64], "k": [4, 4, 8], "fvu": [0.5, 0.4, 0.3]}).write_parquet(
        tmp_path / "store" / "sae_sweep" / "part-1.parquet")
    panel = sae_panels(store, [SAE], {})[0]
    assert panel["metrics"] == {"fvu_heldout": 0.25, "probe_auc": 0.9}  # numeric columns only
    assert [(p["k"], p["n_latents"], p["fvu"]) for p in panel["sweep"]] == [(4, 64, 0.5), (4, 128, 0.4), (8, 64, 0.3)]
    assert sweep_points(Store(tmp_path / "empty")) == {}


def test_a_fits_table_names_its_sweep_and_metrics_give_the_points(tmp_path: Path) -> None:
    store = fill(tmp_path / "store")
    (tmp_path / "store" / "sae_metrics").mkdir()
    pl.DataFrame({"sae_id": [SAE, "other"], "n_latents": [64, 32], "k": [4, 4], "fvu": [0.9, 0.9],
                  "fvu_heldout": [0.2, 0.3]}).write_parquet(tmp_path / "store" / "sae_metrics" / "part-1.parquet")
    (tmp_path / "store" / "sae_fits").mkdir()
    pl.DataFrame({"fit": ["joint_nk"], "sae_ids": [[SAE, "other"]]}).write_parquet(
        tmp_path / "store" / "sae_fits" / "part-1.parquet")
    points = sweep_points(store)[SAE]
    assert [(p["n_latents"], p["fvu"]) for p in points] == [(32, 0.3), (64, 0.2)]  # held-out FVU, by n_latents


def test_neuronpedia_records(tmp_path: Path) -> None:
    store = fill(tmp_path / "store")
    records = neuronpedia_records(store, SAE)
    assert [r["index"] for r in records] == ["0", "1"]  # ok, non-baseline explanations only
    first = records[0]
    assert (first["modelId"], first["layer"], first["description"]) == ("tiny-model", "2-res-latent-atlas",
                                                                        "the cat <b>bold</b>")
    assert {(s["population"], s["value"]) for s in first["scores"]} == {("natural", 0.6), ("sampled", 0.729)}
    assert main(["export", "neuronpedia", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "np")]) == 0
    lines = (tmp_path / "np" / f"{SAE}.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == ["0", "1"]


@pytest.mark.parametrize("command", [["dashboard"], ["export", "neuronpedia", "--out", "x"], ["report"]])
def test_commands_on_a_missing_store_are_one_line_errors(tmp_path: Path, capsys, command: list[str]) -> None:
    missing = tmp_path / "typo"
    assert main([*command[:2], "--store", str(missing), *command[2:]] if command[0] == "export"
                else [*command, "--store", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such store" in err
    assert not missing.exists()


def test_dashboard_of_a_directory_that_is_no_store_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["dashboard", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no latent-atlas store" in err


def test_empty_store(tmp_path: Path) -> None:
    index = write_reports(Store(tmp_path))
    assert _embedded(index)["latents"]["latent"] == []


def test_a_run_is_listed_in_its_own_dashboard(tiny_run) -> None:
    _, summary = tiny_run
    index = Path(summary["report"])
    data = _embedded(index)
    assert summary["run_id"] in [r["run_id"] for r in data["runs"]]
    panel = data["saes"][0]
    assert (panel["n_latents"], panel["k"], panel["model"]) == (512, 16, "all-MiniLM-L6-v2")
    assert 0 <= panel["fvu"] < 1 and panel["l0"] == 16
    page = _embedded(index.parent / "latents" / summary["sae_id"] / "0.html")
    assert "encoder" in page["logits"]["none"]  # MiniLM has no unembedding, and the page says so


def test_pages_written_a_slice_at_a_time_are_the_same(tmp_path: Path, monkeypatch) -> None:
    import flows.reports.write as write

    pages = {}
    for per_read in (512, 2):  # 2: the 5 latents in slices [0, 2), [2, 4), [4, 5)
        monkeypatch.setattr(write, "PAGES_PER_READ", per_read)
        store = fill(tmp_path / f"store-{per_read}")
        write_reports(store)
        pages[per_read] = {p.name: _embedded(p) for p in (store.reports_dir() / "latents" / SAE).glob("*.html")}
    assert pages[2] == pages[512] and len(pages[2]) == 5
