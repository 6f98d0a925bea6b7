"""One latent's page data: a compact JSON-able dict that the shared latent page (static/latent.js) renders.

Compact because the static export holds one per latent (budget: 4096 latents in <= 40 MB with the
index): tokens go through a per-latent vocabulary, activations are rounded to 2 decimals, and a page
shows a bounded selection of examples (SHOWN) with the counts of all of them. Text stays raw here; the
browser inserts it with textContent, never as markup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flows.reports.data import LatentKey, ReportData, TokenText, is_baseline, parse_patterns
from flows.reports.scores import SCORE_FIELDS, clean, score_view


@dataclass(frozen=True)
class Shown:
    """How many examples of each group a latent page shows (the page states how many exist)."""

    top: int = 5
    """Explain-split activating examples with the highest activation ("top activations")."""
    per_decile: int = 1
    """Score-split activating examples per activation decile, top decile first."""
    random: int = 2
    """Score-split random (non-activating) examples."""
    similar: int = 2
    """Score-split hard negatives (trigger-token contexts and embedding neighbours)."""
    window: int = 16
    """Tokens shown of an example, centred on its peak (the stored windows are longer)."""
    patterns: int = 20
    """N2G patterns listed per explanation (strongest first; the explanation text has them all)."""
    baseline_text: int = 100
    """Characters of a baseline's explanation shown (a random baseline repeats another latent's)."""


SHOWN = Shown()


def latent_view(data: ReportData, key: LatentKey, scores: list[dict], histogram: dict | None,
                logits: dict | None, neighbours: tuple[int | None, int | None] = (None, None)) -> dict:
    """Everything one latent page shows; `scores`: all its score rows (scores.py), `histogram`:
    histogram.py's bins or None, `logits`: {"promoted": [[token, value]], "suppressed": ...} or
    {"none": why} (logit_lens), `neighbours`: previous and next latent of the same SAE."""
    sae_id, latent = key
    stats = data.stats.get(key, {})
    explanations = data.explanations.get(key, [])
    vocab: dict[str, int] = {}
    view = {
        "sae_id": sae_id, "latent": latent,
        "stats": {k: clean(stats.get(k), 6) for k in ("n_active", "n_contexts", "frequency", "max_act", "mean_act",
                                                       "status", "reason")},
        "score_fields": list(SCORE_FIELDS),
        "explanations": [_explanation(e, scores) for e in explanations if not is_baseline(e["explainer"])],
        "baselines": [_explanation(e, scores, baseline=True) for e in explanations if is_baseline(e["explainer"])],
        "correlated": [int(x) for x in (stats.get("cooccurring") or [])][:12],
        "histogram": histogram, "logits": logits, "prev": neighbours[0], "next": neighbours[1],
    }
    view["groups"] = _example_groups(data, key, vocab)
    view["vocab"] = list(vocab)
    view["notice"] = notice(view)
    return view


def _explanation(row: dict, scores: list[dict], baseline: bool = False) -> dict:
    """An explanation with its score rows (as lists in SCORE_FIELDS order: the keys are sent once)."""
    mine = [score_view(s) for s in scores if s["explainer"] == row["explainer"]]
    mine.sort(key=lambda s: (s.get("scorer") or "", s.get("population") != "natural", s.get("estimator") != "exact",
                             s.get("estimator") or ""))
    if baseline:  # the headline row per scorer (exact natural first): what an explanation is compared with
        mine = [s for i, s in enumerate(mine) if i == 0 or s.get("scorer") != mine[i - 1].get("scorer")]
    text = row.get("explanation") or ""
    patterns = [] if baseline else parse_patterns(row.get("patterns"))
    if baseline and len(text) > SHOWN.baseline_text:
        text = text[: SHOWN.baseline_text] + "…"
    return {"explainer": row["explainer"], "model": row.get("model") or "", "prompt_version": row.get("prompt_version")
            or "", "text": text, "status": row.get("status"), "error": row.get("error") or "",
            "patterns": [[p.get("ngram"), clean(p.get("act"), 2)] for p in patterns[: SHOWN.patterns]],
            "n_patterns": len(patterns), "cost_usd": clean(row.get("cost_usd"), 6),
            "scores": [[s.get(f) for f in SCORE_FIELDS] for s in mine]}


def notice(view: dict) -> str:
    """Why a latent has no explanation and what its page shows instead ("" when it has one)."""
    stats, status = view["stats"], view["stats"].get("status")
    if any(e["status"] == "ok" for e in view["explanations"]):
        return ""
    if status == "dead":
        return f"Not explained: the latent is dead ({stats.get('reason') or 'never active'}). Nothing fires, so " \
               "there are no examples; its correlated latents and output tokens are below where known."
    if status == "too_dense":
        return f"Not explained: too dense ({stats.get('reason')}). A latent that fires almost everywhere has no " \
               "contrast to explain; its activation histogram, top activations and correlated latents are below."
    if status and status != "ok":
        return f"Not explained: {status} ({stats.get('reason')}); the examples and histogram it has are below."
    failed = [e for e in view["explanations"] if e["status"] != "ok"]
    if failed:
        return "Explanation failed: " + "; ".join(f"{e['explainer']}: {e['error'] or e['status']}" for e in failed) \
               + ". Its examples and histogram are below."
    if not stats:
        return "No statistics for this latent in the current run; it may belong to an older run's settings."
    return "Not explained yet (run `latent-atlas explain`); its examples and histogram are below."


def _example_groups(data: ReportData, key: LatentKey, vocab: dict[str, int]) -> list[dict]:
    """Shown examples in order: top activations, score deciles (top first), random, hard negatives.

    Each group: {"key" ("top", "d10" .. "d1", "random", "similar"; static/latent.js names them),
    "total" (examples of that group in the store), "examples": [{"n": window length, "t": [token index
    into vocab], "a": sparse activations, "sim": {explainer/scorer: sparse simulated}}]}, sparse meaning
    [[position], [value]] of the non-zero entries.
    """
    rows = data.examples.get(key, [])
    sims: dict[int, dict[str, list[float]]] = {}
    for s in data.simulations.get(key, []):
        if is_baseline(s["explainer"]):  # a page simulates its own explanations; baselines have scores only
            continue
        sims.setdefault(int(s["ctx_id"]), {})[f"{s['explainer']}/{s['scorer']}"] = s["sim_acts"]
    top = sorted((r for r in rows if r["split"] == "explain" and r["kind"] == "activating"),
                 key=lambda r: -r.get("acts_max", 0.0))
    groups = [("top", top, SHOWN.top)]
    for q in range(9, -1, -1):
        in_q = [r for r in rows if r["split"] == "score" and r["kind"] == "activating" and r.get("quantile") == q]
        groups.append((f"d{q + 1}", in_q, SHOWN.per_decile))
    for kind, n in (("random", SHOWN.random), ("similar", SHOWN.similar)):
        picked = sorted((r for r in rows if r["split"] == "score" and r["kind"] == kind),
                        key=lambda r: int(r["ctx_id"]) not in sims)  # simulated ones first
        groups.append((kind, picked, n))
    out = []
    for label, members, n in groups:
        if members:
            out.append({"key": label, "total": len(members),
                        "examples": [_example(data, r, sims.get(int(r["ctx_id"]), {}), vocab) for r in members[:n]]})
    return out


def _example(data: ReportData, row: dict, sims: dict[str, list[float]], vocab: dict[str, int]) -> dict:
    acts = row["acts"]
    lo, hi = _window(acts, SHOWN.window)
    tokens = data.tokens.get(int(row["ctx_id"]))
    window = tokens.window(int(row["start"]) + lo, hi - lo) if tokens else TokenText(seps=[], texts=[])
    ids = [vocab.setdefault(text, len(vocab)) for text in window.plain]
    return {"n": hi - lo, "t": ids, "a": _sparse(acts[lo:hi]),
            "sim": {name: _sparse(values[lo:hi]) for name, values in sims.items()}}


def _window(acts: object, width: int) -> tuple[int, int]:
    """[lo, hi) of at most `width` positions around the peak of `acts` ([window])."""
    n = len(acts)
    peak = int(np.argmax(acts)) if n and float(np.max(acts)) > 0 else 0
    lo = max(0, min(peak - width // 2, n - width))
    return lo, min(n, lo + width)


def _sparse(values: object) -> list[list]:
    """[[positions], [values rounded to 2 decimals]] of the non-zero entries of `values` ([window])."""
    arr = np.asarray(values, dtype=np.float32)
    nz = np.flatnonzero(arr)
    return [nz.tolist(), [round(float(v), 2) for v in arr[nz]]]
