"""The per-latent page: stats, explanations (+ N2G patterns), scores, explain-set and score-set examples.

The score-set view shows every token's true activation (orange background) and, for each explainer, its
simulated activation (blue underline), matching `simulations` rows to `examples` rows by ctx_id (and by
equal true activations when a context holds several windows).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from flows.reports.data import LatentKey, ReportData, TokenText, is_baseline, parse_patterns
from flows.reports.html import esc, num, num_cell, page, shaded_window, table
from flows.reports.summary import population_label
from score.metrics import METRICS as SCORE_COLUMNS

STAT_SKIP = {"sae_id", "latent"}
MAX_PATTERNS_SHOWN = 40


def latent_page(data: ReportData, key: LatentKey, prev_href: str | None, next_href: str | None) -> str:
    """The whole HTML page of one latent; hrefs are relative to the page's own directory."""
    sae_id, latent = key
    stats = data.stats.get(key, {})
    examples = data.examples.get(key, [])
    scale = _act_scale(stats, examples)
    sections = [
        _nav(prev_href, next_href),
        f"<h1>Latent {latent} <span class=muted>{esc(sae_id)}</span></h1>",
        _stats_section(stats),
        _explanations_section(data.explanations.get(key, [])),
        _scores_section(data.scores.get(key, [])),
        _explain_set_section(examples, data.tokens, scale),
        _score_set_section(examples, data.simulations.get(key, []), data.tokens, scale),
    ]
    return page(f"latent {latent} · {sae_id}", "".join(sections))


def _nav(prev_href: str | None, next_href: str | None) -> str:
    links = ['<a href="../../index.html">index</a>']
    if prev_href:
        links.append(f'<a href="{esc(prev_href)}">previous</a>')
    if next_href:
        links.append(f'<a href="{esc(next_href)}">next</a>')
    return f"<nav>{' · '.join(links)}</nav>"


def _act_scale(stats: dict, examples: list[dict]) -> float:
    peak = max((row["acts_max"] for row in examples), default=0.0)
    return float(stats.get("max_act") or 0.0) or peak or 1.0


def _stats_section(stats: dict) -> str:
    if not stats:
        return "<h2>Statistics</h2><p class=muted>no latent_stats row</p>"
    rows = []
    for name, value in stats.items():
        if name in STAT_SKIP:
            continue
        shown = ", ".join(num(v) for v in value) if isinstance(value, list) else num(value, 4)
        rows.append([esc(name), shown])
    return "<h2>Statistics</h2>" + table(["stat", "value"], rows)


def _explanations_section(explanations: list[dict]) -> str:
    if not explanations:
        return "<h2>Explanations</h2><p class=muted>not explained</p>"
    ordered = sorted(explanations, key=lambda r: (is_baseline(str(r.get("explainer", ""))), r.get("explainer")))
    return "<h2>Explanations</h2>" + "".join(_explanation_block(row) for row in ordered)


def _explanation_block(row: dict) -> str:
    status = str(row.get("status", ""))
    meta = [f"status {esc(status)}"]
    for name in ("model", "prompt_version", "cost_usd", "prompt_tokens", "completion_tokens", "run_id"):
        if row.get(name) not in (None, "", 0, 0.0):
            meta.append(f"{esc(name)} {num(row[name], 4)}")
    error = f'<p class="err">{esc(row["error"])}</p>' if row.get("error") else ""
    text = esc(row.get("explanation") or row.get("text") or "")
    patterns = parse_patterns(row.get("patterns"))
    pattern_table = ""
    if patterns:
        shown = sorted(patterns, key=lambda p: -float(p.get("act") or 0.0))[:MAX_PATTERNS_SHOWN]
        rows = [[f'<span class="win">{esc(" ".join(map(str, p.get("ngram") or [])))}</span>',
                 num_cell(p.get("act"))] for p in shown]
        more = f"<p class=muted>{len(patterns) - len(shown)} more</p>" if len(patterns) > len(shown) else ""
        pattern_table = table(["pattern (ends at the active token)", "act"], rows) + more
    return (
        f"<h3>{esc(row.get('explainer', ''))}</h3><p><b>{text}</b></p>"
        f"<p class=muted>{' · '.join(meta)}</p>{error}{pattern_table}"
    )


def _scores_section(scores: list[dict]) -> str:
    if not scores:
        return "<h2>Scores</h2><p class=muted>not scored</p>"
    header = ["explainer", "scorer", "population", *SCORE_COLUMNS, "threshold", "n_tokens", "n_positive", "run_id"]
    ordered = sorted(scores, key=lambda r: (r["scorer"], is_baseline(r["explainer"]), r["explainer"]))
    rows = [
        # the population says whether the row is exact or an estimate ("natural (ipw)")
        [esc(r["explainer"]), esc(r["scorer"]), esc(population_label(r)),
         *(num_cell(r.get(c)) for c in SCORE_COLUMNS),
         num_cell(r.get("threshold")), num_cell(r.get("n_tokens")), num_cell(r.get("n_positive")),
         esc(r.get("run_id") or "")]
        for r in ordered
    ]
    return "<h2>Scores</h2>" + table(header, rows)


def _window_tokens(row: dict, tokens: dict[int, TokenText]) -> TokenText:
    """Tokens of an example window; '?' placeholders when the context's tokens are not in the store."""
    n = len(row["acts"])
    context = tokens.get(int(row["ctx_id"]))
    start = int(row.get("start") or 0)
    if context is None or start + n > len(context.texts):
        return TokenText(seps=[" "] * n, texts=["?"] * n)
    return context.window(start, n)


def _example_label(row: dict) -> str:
    quantile = row.get("quantile")
    q = f" q{quantile}" if quantile is not None and quantile >= 0 else ""
    return f"{esc(row.get('kind', ''))}{q}"


def _explain_set_section(examples: list[dict], tokens: dict[int, TokenText], scale: float) -> str:
    rows = [r for r in examples if r.get("split") == "explain"]
    if not rows:
        return "<h2>Explain set</h2><p class=muted>no examples</p>"
    body = []
    for row in rows:
        window = _window_tokens(row, tokens)
        body.append([
            _example_label(row), str(int(row["ctx_id"])), num_cell(row["acts_max"]),
            f'<td class="win">{shaded_window(window.plain, window.seps, window.texts, row["acts"], scale)}</td>',
        ])
    title = "<h2>Explain set</h2><p class=muted>what the explainer saw; shade = activation</p>"
    return title + table(["kind", "ctx", "max act", "tokens"], body, 'class="ex"')


def _simulations_by_explainer(simulations: list[dict]) -> dict[tuple[str, str], dict[int, list[dict]]]:
    grouped: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in simulations:
        if not is_baseline(row["explainer"]):
            grouped[(row["explainer"], row["scorer"])][int(row["ctx_id"])].append(row)
    return grouped


def _matching_simulation(candidates: list[dict], acts: np.ndarray) -> dict | None:
    """The simulations row of this window: the only one of its ctx_id, else the one with equal truth."""
    for sim in candidates:
        if len(sim["sim_acts"]) == len(acts) and (len(candidates) == 1 or np.array_equal(sim["true_acts"], acts)):
            return sim
    return None


def _score_set_section(
    examples: list[dict], simulations: list[dict], tokens: dict[int, TokenText], scale: float
) -> str:
    rows = [r for r in examples if r.get("split") == "score"]
    if not rows:
        return "<h2>Score set</h2><p class=muted>no examples</p>"
    by_explainer = _simulations_by_explainer(simulations)
    if not by_explainer:
        by_explainer = {("", ""): {}}
    parts = []
    for (explainer, scorer), by_ctx in sorted(by_explainer.items()):
        sim_scale = max((s["sim_acts_max"] for c in by_ctx.values() for s in c), default=0.0) or 1.0
        body = []
        for row in rows:
            window = _window_tokens(row, tokens)
            sim = _matching_simulation(by_ctx.get(int(row["ctx_id"]), []), row["acts"])
            sims = sim["sim_acts"] if sim else None
            shaded = shaded_window(window.plain, window.seps, window.texts, row["acts"], scale, sims, sim_scale)
            body.append([
                _example_label(row), str(int(row["ctx_id"])), num_cell(row["acts_max"]),
                num_cell(sim["sim_acts_max"] if sim else None), f'<td class="win">{shaded}</td>',
            ])
        what = f"true (shade) vs simulated by {esc(explainer)} / {esc(scorer)} (underline)" if explainer else (
            "true activation (shade); no simulations stored")
        parts.append(f"<h2>Score set</h2><p class=muted>held out from the explainer; {what}</p>")
        parts.append(table(["kind", "ctx", "max true", "max sim", "tokens"], body, 'class="ex"'))
    return "".join(parts)
