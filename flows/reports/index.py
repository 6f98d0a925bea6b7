"""The dashboard (`reports/index.html`): summary, medians vs random baseline, F1 histogram, latent table."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict

from flows.reports.data import LatentKey, ReportData, is_baseline
from flows.reports.html import SORT_FILTER_JS, esc, histogram_svg, num, num_cell, page, table
from score.baselines import RANDOM_SUFFIX
from score.metrics import METRICS

MAX_TEXT = 160


def index_page(data: ReportData, hrefs: dict[LatentKey, str]) -> str:
    """The whole dashboard; `hrefs` maps each latent to its page, relative to the reports directory."""
    scores = [row for rows in data.scores.values() for row in rows]
    body = [
        "<h1>latent-atlas</h1>",
        _summary(data),
        _medians(scores),
        _histograms(scores),
        _runs(data.runs),
        _latent_table(data, hrefs),
    ]
    return page("latent-atlas dashboard", "".join(body), SORT_FILTER_JS)


def _summary(data: ReportData) -> str:
    keys = data.latent_keys()
    explained = {k for k, rows in data.explanations.items() if any(_real_ok(r) for r in rows)}
    failed = {k for k, rows in data.explanations.items() if any(_real_failed(r) for r in rows)}
    scored = {k for k, rows in data.scores.items() if any(not is_baseline(r["explainer"]) for r in rows)}
    saes = sorted({k[0] for k in keys})
    cards = [("SAEs", len(saes)), ("latents", len(keys)), ("explained", len(explained)),
             ("scored", len(scored)), ("explanation failed", len(failed))]
    statuses = Counter(str(s.get("status", "")) for s in data.stats.values())
    html_cards = "".join(f'<div class="card"><b>{n}</b>{esc(label)}</div>' for label, n in cards)
    by_status = ", ".join(f"{esc(s)}: {n}" for s, n in sorted(statuses.items()))
    sae_list = ", ".join(esc(s) for s in saes)
    return (
        f'<div class="cards">{html_cards}</div>'
        f"<p class=muted>SAE: {sae_list or '–'} · latent status: {by_status or '–'}</p>"
    )


def _real_ok(row: dict) -> bool:
    return not is_baseline(str(row.get("explainer", ""))) and row.get("status") == "ok"


def _real_failed(row: dict) -> bool:
    return not is_baseline(str(row.get("explainer", ""))) and row.get("status") not in ("ok", None)


def _median(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def _by_method(scores: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in scores:
        groups[(row["sae_id"], row["explainer"], row["scorer"])].append(row)
    return groups


def _medians(scores: list[dict]) -> str:
    groups = _by_method(scores)
    rows = []
    for (sae_id, explainer, scorer), group in sorted(groups.items()):
        if is_baseline(explainer):
            continue
        baseline = groups.get((sae_id, explainer + RANDOM_SUFFIX, scorer), [])
        cells = [
            f'<td class="n">{num(_median([r[m] for r in group]))}'
            f' <span class="rnd">{num(_median([r[m] for r in baseline]))}</span></td>'
            for m in METRICS
        ]
        rows.append([esc(sae_id), esc(explainer), esc(scorer), str(len(group)), str(len(baseline)), *cells])
    if not rows:
        return "<h2>Scores</h2><p class=muted>nothing scored yet</p>"
    header = ["SAE", "explainer", "scorer", "latents", "baseline latents", *[f"median {m}" for m in METRICS]]
    note = "<p class=muted>each cell: explainer median, then <span class=rnd>random-baseline median</span></p>"
    return "<h2>Scores</h2>" + note + table(header, rows)


def _histograms(scores: list[dict]) -> str:
    groups = _by_method(scores)
    parts = []
    for (sae_id, explainer, scorer), group in sorted(groups.items()):
        if is_baseline(explainer):
            continue
        baseline = groups.get((sae_id, explainer + RANDOM_SUFFIX, scorer), [])
        series = {explainer: [r["f1"] for r in group], explainer + RANDOM_SUFFIX: [r["f1"] for r in baseline]}
        title = f"F1 · {sae_id} · {explainer} / {scorer}"
        parts.append(f"<h3>{esc(title)}</h3>" + histogram_svg(series, ["#e07000", "#999"], title=title))
    return "<h2>F1 distribution</h2>" + "".join(parts) if parts else ""


def _runs(runs: list[dict]) -> str:
    if not runs:
        return ""
    header = list(runs[0])
    return "<h2>Recent runs</h2>" + table(header, [[esc(r.get(c) or "") for c in header] for r in runs])


LATENT_HEADER = ["SAE", "latent", "frequency", "max act", "explainer", "scorer", "explanation", "precision",
                 "recall", "F1", "AUROC", "corr", "baseline F1", "status"]


def _latent_table(data: ReportData, hrefs: dict[LatentKey, str]) -> str:
    rows = [row for key in data.latent_keys() for row in _latent_rows(data, key, hrefs[key])]
    head = "".join(f"<th>{esc(h)}</th>" for h in LATENT_HEADER)
    controls = (
        '<p><input id="filter" type="search" placeholder="filter rows (any text)" size="40"> '
        '<label><input id="only-scored" type="checkbox"> scored only</label> '
        f'<span class=muted><span id="shown">{len(rows)}</span> rows shown; click a header to sort</span></p>'
    )
    return (
        "<h2>Latents</h2>" + controls + f'<table id="latents"><thead><tr>{head}</tr></thead><tbody>'
        + "".join(rows) + "</tbody></table>"
    )


def _latent_rows(data: ReportData, key: LatentKey, href: str) -> list[str]:
    """One row per (explainer, scorer) of real explanations; one status row for an unexplained latent."""
    stats = data.stats.get(key, {})
    explanations = {r["explainer"]: r for r in data.explanations.get(key, []) if not is_baseline(r["explainer"])}
    scores = {(r["explainer"], r["scorer"]): r for r in data.scores.get(key, [])}
    prefix = (
        f"<td>{esc(key[0])}</td><td data-v=\"{key[1]}\"><a href=\"{esc(href)}\">{key[1]}</a></td>"
        f"{num_cell(stats.get('frequency'), 4)}{num_cell(stats.get('max_act'))}"
    )
    pairs = sorted({(e, s) for (e, s) in scores if not is_baseline(e)} | {(e, "") for e in explanations})
    pairs = [(e, s) for e, s in pairs if s or not any(e == e2 and s2 for e2, s2 in pairs)]
    if not pairs:
        status = _join(stats.get("status") or "no explanation", stats.get("reason"))
        return [f'<tr data-scored="0">{prefix}<td></td><td></td><td></td>'
                + num_cell(None) * 6 + f"<td>{esc(status)}</td></tr>"]
    out = []
    for explainer, scorer in pairs:
        explanation = explanations.get(explainer, {})
        score = scores.get((explainer, scorer))
        baseline = scores.get((explainer + RANDOM_SUFFIX, scorer))
        text = str(explanation.get("explanation") or "")
        short = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"
        status = "scored" if score else _join(explanation.get("status") or "not scored", explanation.get("error"))
        metrics = "".join(num_cell(score.get(m) if score else None) for m in METRICS)
        out.append(
            f'<tr data-scored="{1 if score else 0}">{prefix}<td>{esc(explainer)}</td><td>{esc(scorer)}</td>'
            f'<td title="{esc(text)}">{esc(short)}</td>{metrics}'
            f"{num_cell(baseline.get('f1') if baseline else None)}<td>{esc(status)}</td></tr>"
        )
    return out


def _join(status: object, reason: object) -> str:
    return f"{status}: {reason}" if reason else str(status)
