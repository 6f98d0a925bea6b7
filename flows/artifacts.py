"""Prefect artifacts of a run: the score summary (table), the run's provenance (markdown) and the progress of
long stages.

Every artifact has a key, so the Prefect UI lists it on its Artifacts page and keeps one version per run
under that key. Keys are stable per store and SAE, `atlas-<store>-<sae>-<kind>` (`artifact_key`), so the
runs of one SAE in one store line up as versions of the same artifacts, and two stores never mix.

Artifacts are for people watching the UI: the store is the record. So creating one needs a flow or task
run (and hence an API); outside one (plain functions, `flow.fn()` in tests) every function here is a
no-op, logged at debug, and an API failure is a warning, never an error that fails a finished run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl

from flows.store import Store

log = logging.getLogger(__name__)

KEY_PREFIX = "atlas"
MAX_SAE_SLUG = 48
"""Longer SAE slugs are cut and get a hash of the full id, so keys stay readable and unique."""

LINEAGE_LABELS = {"model": "model", "model_fingerprint": "model fingerprint", "layer": "layer", "corpus": "corpus",
                  "corpus_fingerprint": "corpus fingerprint", "dataset_id": "dataset", "sae_id": "SAE",
                  "sae_path": "SAE path (loaded)"}
"""Row labels of the lineage (flows/pipeline.py::lineage); other keys are shown as they are."""


def slug(text: str) -> str:
    """Lowercase letters, digits and single dashes, no dash at either end (what an artifact key allows)."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")


def _short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def store_slug(store: Store | str | Path) -> str:
    """Six hex digits of the store's absolute path: the same store spelled two ways is one slug."""
    root = store.root if isinstance(store, Store) else Path(store)
    return _short_hash(str(root.expanduser().resolve()))


def sae_slug(sae_id: str) -> str:
    """The SAE id as a key part; a long one is cut and ends in a hash of the whole id."""
    text = slug(sae_id) or "sae"
    if len(text) > MAX_SAE_SLUG:
        text = f"{text[:MAX_SAE_SLUG - 7].rstrip('-')}-{_short_hash(sae_id)}"
    return text


def artifact_key(store: Store | str | Path, sae_id: str | None, kind: str) -> str:
    """`atlas-<store hash>-<sae>-<kind>` (without the SAE part for stages before there is one), e.g.
    `atlas-1a2b3c-bert-l2-n512-k16-05e0eb5e-scores` for SAE `bert-L2-n512-k16-05e0eb5e`."""
    parts = [KEY_PREFIX, store_slug(store), *([sae_slug(sae_id)] if sae_id else []), slug(kind) or "artifact"]
    return "-".join(parts)


def _in_run() -> bool:
    """True inside a flow or task run, where an artifact has a run to belong to and an API to go to."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _publish(what: str, create: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a prefect.artifacts function in a run; outside one, or if the API fails, log and return None."""
    if not _in_run():
        log.debug("no flow or task run: %s artifact not created", what)
        return None
    try:
        return create(*args, **kwargs)
    except Exception as exc:  # artifacts are a view; never fail the run that computed the results
        log.warning("could not create the %s artifact: %s: %s", what, type(exc).__name__, exc)
        return None


def _cell(value: Any) -> Any:
    """JSON-able table cell: NaN and infinities become None, floats are rounded for reading."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 4)
    return value


def summary_table(summary_rows: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows of flows/reports/summary.py::score_summary as table-artifact rows: a readable population
    ("natural (exact)", "sampled") first, then the other columns as they are; NaN -> None."""
    from flows.reports.summary import population_label

    rows = []
    for row in summary_rows.iter_rows(named=True):
        cells = {"population": population_label(row) if "population" in row else None}
        cells.update((k, _cell(v)) for k, v in row.items() if k not in ("population", "estimator"))
        rows.append(cells)
    return rows


def _md(value: Any) -> str:
    """A value as one markdown table cell (code span; pipes escaped; `-` for nothing)."""
    if value is None or value == "":
        return "-"
    return "`" + str(value).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def run_markdown(store: Store, sae_id: str, run_id: str, config_hash: str, lineage: dict,
                 dashboard: str) -> str:
    """The provenance of a run as markdown (never indented: indented lines render as code blocks)."""
    page = Path(dashboard).expanduser().resolve()
    lines = [
        f"# latent-atlas run {run_id}",
        "",
        "| | |",
        "|---|---|",
        f"| run | {_md(run_id)} |",
        f"| SAE | {_md(sae_id)} |",
        f"| config hash | {_md(config_hash)} |",
        f"| store | {_md(store.root.expanduser().resolve())} |",
        f"| dashboard | [{page}]({page.as_uri()}) |",
        "",
        "## Lineage",
        "",
        "What the results were computed from, by content (also in the store's `runs.inputs`).",
        "",
        "| input | value |",
        "|---|---|",
    ]
    lines += [f"| {LINEAGE_LABELS.get(k, k)} | {_md(v)} |" for k, v in lineage.items()]
    if "sae_id" not in lineage:
        lines.append(f"| SAE | {_md(sae_id)} |")
    return "\n".join(lines) + "\n"


def publish_run_artifacts(store: Store, sae_id: str, run_id: str, summary_rows: pl.DataFrame, config_hash: str,
                          lineage: dict, dashboard: str) -> None:
    """At the end of a run: the score summary of the explainer and its baselines per population (table,
    key `atlas-<store>-<sae>-scores`) and the run's config hash, lineage and dashboard (markdown, key
    `atlas-<store>-<sae>-run`). A no-op outside a flow or task run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = summary_table(summary_rows)
    _publish("score summary", create_table_artifact, table=rows, key=artifact_key(store, sae_id, "scores"),
             description=f"Median scores per population, explainer and scorer of SAE {sae_id}, run {run_id}"
                         + ("" if rows else " (no scores)"))
    _publish("run", create_markdown_artifact,
             markdown=run_markdown(store, sae_id, run_id, config_hash, lineage, dashboard),
             key=artifact_key(store, sae_id, "run"), description=f"Provenance of run {run_id} of SAE {sae_id}")


class StageProgress:
    """Progress of a long stage as a progress artifact: 0 at the start, updated per chunk, 100 at the end.

        with StageProgress.for_stage(store, sae_id, "score", total=len(chunks)) as progress:
            for chunk in chunks:
                work(chunk)
                progress.advance()

    Leaving the block by an exception keeps the last value (the UI shows how far the stage got). Updates
    are sent only when the whole percentage changes. A no-op outside a flow or task run.
    """

    def __init__(self, key: str, total: int, description: str | None = None) -> None:
        self.key = key
        self.total = max(int(total), 0)
        self.description = description
        self.done = 0
        self.artifact_id: UUID | None = None
        self._sent: float | None = None

    @classmethod
    def for_stage(cls, store: Store, sae_id: str | None, stage: str, total: int) -> StageProgress:
        """The progress of `stage` of one SAE in one store, key `atlas-<store>-<sae>-<stage>-progress`."""
        return cls(artifact_key(store, sae_id, f"{stage}-progress"), total, f"{stage}: share of {total} chunks done")

    @property
    def percent(self) -> float:
        if self.total == 0:
            return 100.0
        return round(min(100.0, 100.0 * self.done / self.total), 1)

    def start(self) -> StageProgress:
        """Create the artifact at 0 (a new version under the key)."""
        from prefect.artifacts import create_progress_artifact

        self.done, self._sent = 0, 0.0
        self.artifact_id = _publish("progress", create_progress_artifact, progress=0.0, key=self.key,
                                    description=self.description)
        return self

    def advance(self, n: int = 1) -> None:
        """`n` more chunks are done."""
        self.done += n
        if int(self.percent) != int(self._sent or 0):
            self._update(self.percent)

    def finish(self) -> None:
        """The stage is complete: 100."""
        self.done = max(self.done, self.total)
        self._update(100.0)

    def _update(self, percent: float) -> None:
        if self.artifact_id is None:
            return
        from prefect.artifacts import update_progress_artifact

        _publish("progress", update_progress_artifact, artifact_id=self.artifact_id, progress=percent)
        self._sent = percent

    def __enter__(self) -> StageProgress:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.finish()
