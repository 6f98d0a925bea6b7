"""Explanations and their scores in Neuronpedia's upload format, one JSON record per explanation.

Neuronpedia names a latent by (modelId, layer, index): `layer` is its "source" id, the layer and the
SAE set (e.g. "6-res-jb"). A record: {"modelId", "layer", "index" (a string, as Neuronpedia's exports
have it), "description", "authorName", "explanationModelName", "typeName", "scores": [{"method",
"population", "estimator", "value", ...metrics}]}. Baselines and failed explanations are not exported.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from flows.reports.data import is_baseline, load_report_data
from flows.reports.panels import sae_panels
from flows.reports.scores import all_score_rows, clean, scores_by_latent
from flows.store import Store

log = logging.getLogger(__name__)

TYPE_NAMES = {"n2g": "latent-atlas_n2g", "llm": "latent-atlas_llm"}
"""Neuronpedia's `typeName` (how the explanation was made) per explainer."""


def model_id(model: str | None) -> str:
    """Neuronpedia-style model id from a model name: the last path part, lower case ("gpt2-small" stays)."""
    name = (model or "unknown").rstrip("/").rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", name)


def neuronpedia_records(store: Store, sae_id: str, source: str | None = None, author: str = "latent-atlas",
                        model: str | None = None) -> list[dict]:
    """One record per ok, non-baseline explanation of the SAE's current rows (the newest ok run's keys)."""
    panel = sae_panels(store, [sae_id], {})[0]
    mid = model or model_id(panel["model"])
    layer = source or f"{panel['layer']}-res-latent-atlas"
    data = load_report_data(store, sae_id, examples=False)
    keys = data.latent_keys()
    scores = scores_by_latent(all_score_rows(store, sae_id, _keys(store, sae_id)))
    records = []
    for key in keys:
        for e in data.explanations.get(key, []):
            if is_baseline(e["explainer"]) or e.get("status") != "ok":
                continue
            records.append({
                "modelId": mid, "layer": layer, "index": str(key[1]), "description": e.get("explanation") or "",
                "authorName": author, "explanationModelName": e.get("model") or e["explainer"],
                "typeName": TYPE_NAMES.get(e["explainer"], f"latent-atlas_{e['explainer']}"),
                "scores": [_score(s) for s in scores.get(key, []) if s["explainer"] == e["explainer"]],
            })
    return records


def _keys(store: Store, sae_id: str) -> dict[str, set[str]]:
    from flows.reports.data import current_keys

    return current_keys(store.read("runs"), sae_id) if store.has("runs") else {}


def _score(row: dict) -> dict:
    return {"method": row["scorer"], "population": row.get("population"), "estimator": row.get("estimator"),
            "value": clean(row.get("f1")), **{m: clean(row.get(m)) for m in ("precision", "recall", "auroc",
                                                                             "correlation", "balanced_accuracy")}}


def export_neuronpedia(store: Store, out: Path, source: str | None = None, author: str = "latent-atlas",
                       model: str | None = None) -> list[Path]:
    """Write `<out>/<sae_id>.jsonl` (one record per line) for every SAE of the store; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for cfg in sorted(store.root.glob("saes/*/cfg.json")):
        sae_id = cfg.parent.name
        records = neuronpedia_records(store, sae_id, source, author, model)
        path = out / f"{sae_id}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        log.info("neuronpedia: %d explanations of %s -> %s", len(records), sae_id, path)
        paths.append(path)
    return paths
