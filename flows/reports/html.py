"""HTML building blocks for the reports: page shell, tables, numbers, token shading, an SVG histogram.

Everything is plain string building (fast enough for thousands of pages) and self-contained: inline CSS,
a few lines of inline vanilla JS, no external resources. Every piece of data text goes through `esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

import numpy as np

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:2px 6px;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.rnd{color:#888}.muted{color:#888}.err{color:#b00}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.5em 1em}
.card b{display:block;font-size:1.4em}
.win{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word}
.ex td{vertical-align:top}
.a1{background:rgba(255,120,0,.1)}.a2{background:rgba(255,120,0,.2)}.a3{background:rgba(255,120,0,.3)}
.a4{background:rgba(255,120,0,.4)}.a5{background:rgba(255,120,0,.5)}.a6{background:rgba(255,120,0,.6)}
.a7{background:rgba(255,120,0,.7)}.a8{background:rgba(255,120,0,.8)}.a9{background:rgba(255,120,0,.9)}
.s1,.s2,.s3,.s4,.s5,.s6,.s7,.s8,.s9{box-shadow:inset 0 -3px 0 rgba(30,90,255,var(--s))}
.s1{--s:.2}.s2{--s:.3}.s3{--s:.4}.s4{--s:.5}.s5{--s:.6}.s6{--s:.7}.s7{--s:.8}.s8{--s:.9}.s9{--s:1}
#latents th{cursor:pointer;user-select:none}
"""

SORT_FILTER_JS = """
(function(){
  var t=document.getElementById('latents'); if(!t) return;
  var body=t.tBodies[0], rows=Array.prototype.slice.call(body.rows), dir={};
  function key(r,i){var c=r.cells[i], v=c.getAttribute('data-v');
    if(v!==null){return v===''?NaN:parseFloat(v);} return c.textContent.toLowerCase();}
  Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){
    th.addEventListener('click',function(){
      dir[i]=-(dir[i]||-1);
      rows.sort(function(a,b){var x=key(a,i),y=key(b,i);
        if(typeof x==='number'||typeof y==='number'){
          if(isNaN(x)) return isNaN(y)?0:1; if(isNaN(y)) return -1; return dir[i]*(x-y);}
        return dir[i]*(x<y?-1:x>y?1:0);});
      rows.forEach(function(r){body.appendChild(r);});});});
  var box=document.getElementById('filter'), only=document.getElementById('only-scored');
  function apply(){var q=box.value.toLowerCase(), n=0;
    rows.forEach(function(r){var ok=(!q||r.textContent.toLowerCase().indexOf(q)>=0)&&
      (!only.checked||r.getAttribute('data-scored')==='1'); r.style.display=ok?'':'none'; if(ok) n++;});
    document.getElementById('shown').textContent=n;}
  box.addEventListener('input',apply); only.addEventListener('change',apply); apply();
})();
"""


def esc(value: object) -> str:
    """HTML-escape any value's text (quotes included, so it is safe inside attributes too)."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str, script: str = "") -> str:
    """A whole self-contained HTML document."""
    js = f"<script>{script}</script>" if script else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
        f"<body>{body}{js}</body></html>\n"
    )


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value: object, digits: int = 3) -> str:
    """A number for display: '–' when missing/NaN, ints as ints, floats with `digits` significant."""
    if is_missing(value):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return esc(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def sort_value(value: object) -> str:
    """The `data-v` attribute of a numeric cell ('' for missing, sorted last)."""
    return "" if is_missing(value) else repr(float(value))  # type: ignore[arg-type]


def num_cell(value: object, digits: int = 3) -> str:
    return f'<td class="n" data-v="{sort_value(value)}">{num(value, digits)}</td>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], attrs: str = "") -> str:
    """A table; `header` is escaped, row cells are pre-built HTML (`<td>...</td>` or plain escaped text)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def level(value: float, scale: float) -> int:
    """Shade level 1..9 of a positive value relative to `scale` (0 for values <= 0)."""
    if value <= 0 or scale <= 0:
        return 0
    return min(9, 1 + int(8.999 * value / scale))


def shaded_window(
    plain: Sequence[str],
    seps: Sequence[str],
    texts: Sequence[str],
    acts: np.ndarray,
    scale: float,
    sims: np.ndarray | None = None,
    sim_scale: float = 1.0,
) -> str:
    """Tokens with their activation as orange background (and simulation as a blue underline).

    plain/seps/texts: already-escaped separator+text, separator and text per token ([window]);
    acts/sims: [window].
    Only tokens with a positive activation or simulation get a span; runs of plain tokens are joined in
    one go, so the cost is per active token rather than per token.
    """
    active = acts > 0 if sims is None else (acts > 0) | (sims > 0)
    out, prev = [], 0
    for i in active.nonzero()[0].tolist():
        out.extend(plain[prev:i])
        act = float(acts[i])
        sim = float(sims[i]) if sims is not None else 0.0
        cls = f"a{level(act, scale)} s{level(sim, sim_scale)}"
        tip = f"{act:.3g}" if sims is None else f"true {act:.3g} / sim {sim:.3g}"
        out.append(f'{seps[i]}<span class="{cls}" title="{tip}">{texts[i]}</span>')
        prev = i + 1
    out.extend(plain[prev:])
    return "".join(out)


def histogram_svg(
    series: dict[str, Sequence[float]], colors: Sequence[str], bins: int = 20, title: str = ""
) -> str:
    """Side-by-side bar histogram on [0, 1] of each named series, as inline SVG."""
    width, height, pad = 640, 200, 30
    counts = {name: _bin_counts(values, bins) for name, values in series.items()}
    top = max([max(c) for c in counts.values() if c] + [1])
    slot = (width - 2 * pad) / bins
    bar = slot / max(len(series), 1) * 0.9
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img">']
    parts.append(f"<title>{esc(title)}</title>")
    for s, (name, color) in enumerate(zip(counts, colors, strict=False)):
        for b, count in enumerate(counts[name]):
            h = (height - pad) * count / top
            x = pad + b * slot + s * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{esc(name)}: {count} in [{b / bins:.2f}, {(b + 1) / bins:.2f})</title></rect>"
            )
        parts.append(
            f'<rect x="{pad + 120 * s}" y="{height + 22}" width="10" height="10" fill="{color}"/>'
            f'<text x="{pad + 14 + 120 * s}" y="{height + 31}" font-size="11">{esc(name)}</text>'
        )
    for tick in range(0, 11, 2):
        x = pad + tick / 10 * (width - 2 * pad)
        parts.append(f'<text x="{x:.1f}" y="{height + 14}" font-size="10" text-anchor="middle">{tick / 10}</text>')
    parts.append(f'<text x="2" y="{pad - 8}" font-size="10">max {top}</text>')
    parts.append(f'<line x1="{pad}" y1="{height}" x2="{width - pad}" y2="{height}" stroke="#888"/></svg>')
    return "".join(parts)


def _bin_counts(values: Sequence[float], bins: int) -> list[int]:
    counts = [0] * bins
    for value in values:
        if not is_missing(value):
            counts[min(bins - 1, max(0, int(value * bins)))] += 1
    return counts
