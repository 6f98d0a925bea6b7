// The dashboard: SAE panels, latent table (Tabulator), score plots (Plotly), runs, spend.
"use strict";
(function () {
  const D = atlas.data();
  const L = D.latents;
  const n = L.latent.length;
  const href = (i) => atlas.latentHref("latents/", D.saes[L.sae[i]].sae_id, L.latent[i]);
  document.getElementById("generated").textContent = "generated " + D.generated_at + " · " + n + " latents";

  // --- SAE panels -------------------------------------------------------------------------------
  const cards = document.getElementById("saes");
  if (!D.saes.length) cards.append(atlas.el("p", "nothing scored yet: no SAE in this store"));
  for (const s of D.saes) {
    const card = atlas.el("div", null, "card");
    card.append(atlas.el("h3", s.sae_id));
    card.append(atlas.kv([["model", s.model], ["layer", s.layer], ["n_latents", s.n_latents], ["k", s.k],
      ["training tokens", s.tokens], ["FVU", s.fvu], ["L0", s.l0], ["dead fraction", s.dead_fraction],
      ...Object.entries(s.status_counts).map(([k, v]) => ["latents " + k, v])]));
    const metrics = Object.entries(s.metrics || {});
    if (metrics.length) { card.append(atlas.el("h3", "SAE metrics")); card.append(atlas.kv(metrics)); }
    if (s.sweep && s.sweep.length) {
      const plot = atlas.el("div", null, "plot"); plot.style.width = "420px"; plot.style.height = "260px";
      card.append(plot);
      const byK = {};
      for (const p of s.sweep) (byK[p.k] = byK[p.k] || []).push(p);
      atlas.lazy(plot, () => Plotly.newPlot(plot, Object.entries(byK).map(([k, pts]) => ({
        x: pts.map((p) => p.n_latents), y: pts.map((p) => p.fvu), mode: "lines+markers", name: "k=" + k })),
        { title: { text: "sweep: FVU vs n_latents" }, xaxis: { type: "log", title: { text: "n_latents" } },
          yaxis: { title: { text: "FVU" } }, margin: { t: 30, l: 50, r: 10, b: 40 } }, atlas.plotConfig));
    }
    cards.append(card);
  }

  // --- latent table -----------------------------------------------------------------------------
  const multiSae = D.saes.length > 1;
  const rows = [];
  for (let i = 0; i < n; i++) {
    const r = { i: i, latent: L.latent[i], sae: D.saes[L.sae[i]].sae_id, status: L.status[i],
      frequency: L.frequency[i], max_act: L.max_act[i], n_active: L.n_active[i], explainer: L.explainer[i],
      explanation: L.explanation[i] || L.note[i] };
    Object.keys(L.metrics).forEach((c, j) => { r["m" + j] = L.metrics[c][i]; });
    rows.push(r);
  }
  const text = (cell) => { const v = cell.getValue(); const span = atlas.el("span", v === null ? "" : v);
    span.title = v === null ? "" : String(v); return span; };
  const num = (digits) => (cell) => document.createTextNode(atlas.fmt(cell.getValue(), digits));
  const title = (cell) => document.createTextNode(cell.getValue());
  const columns = [
    { title: "latent", field: "latent", sorter: "number", width: 80, headerFilter: "number",
      formatter: (cell) => atlas.link(href(cell.getRow().getData().i), cell.getValue()) },
    { title: "status", field: "status", width: 90, headerFilter: "list",
      headerFilterParams: { valuesLookup: true, clearable: true } },
    { title: "frequency", field: "frequency", sorter: "number", width: 95, formatter: num(5) },
    { title: "max act", field: "max_act", sorter: "number", width: 80, formatter: num(2) },
    ...Object.keys(L.metrics).map((c, j) => ({ title: c, field: "m" + j, sorter: "number", width: 120,
      formatter: num(3), titleFormatter: title })),
    { title: "explainer", field: "explainer", width: 80 , formatter: text },
    { title: "explanation (or why there is none)", field: "explanation", formatter: text, minWidth: 300,
      widthGrow: 3 },
  ];
  if (multiSae) columns.unshift({ title: "SAE", field: "sae", width: 130, formatter: text, headerFilter: "list",
    headerFilterParams: { valuesLookup: true, clearable: true } });
  for (const c of columns) if (!c.titleFormatter) c.titleFormatter = title;
  // Tabulator (vendored, MIT; flows/reports/static/vendor): sorting, header filters and a virtual DOM
  // that renders only the visible rows, so 4096+ latents stay fast.
  const table = new Tabulator("#latent-table", { data: rows, columns: columns, layout: "fitColumns",
    height: "75vh", renderVertical: "virtual", index: "i", initialSort: [{ column: "latent", dir: "asc" }] });
  const shown = document.getElementById("shown");
  table.on("dataFiltered", (filters, filtered) => { shown.textContent = filtered.length + " of " + n + " latents"; });
  table.on("tableBuilt", () => {
    shown.textContent = n + " of " + n + " latents"; document.body.dataset.ready = "1";
    performance.mark("atlas-table-built");
  });
  // Full-text search over every explanation: the full texts are a separate script (the index keeps
  // only the start of each), loaded on first use; a script tag, since fetch() is refused on file://.
  const search = document.getElementById("search");
  let lower = null;
  const applySearch = () => {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    if (!words.length) { table.clearFilter(); return; }
    table.setFilter((row) => { const t = lower ? lower[row.i] : (row.explanation || "").toLowerCase();
      return words.every((w) => t.includes(w)); });
  };
  search.addEventListener("input", () => {
    if (lower === null && !document.getElementById("texts")) {
      const s = document.createElement("script"); s.id = "texts"; s.src = document.body.dataset.texts;
      s.onload = () => { lower = window.ATLAS_TEXT.map((t, i) => (t + " " + (L.note[i] || "")).toLowerCase());
        applySearch(); document.body.dataset.textsLoaded = "1"; };
      document.head.append(s);
    }
    applySearch();
  });

  // --- score distributions: one chart per (scorer, population), scaled by the explainer's bars ------
  const open = (ev) => { const p = ev.points[0]; if (p && p.customdata !== undefined) location.href = href(p.customdata); };
  const charts = document.getElementById("distributions");
  const groups = {};
  for (const s of D.series) {
    const key = s.scorer + " · " + s.population + (s.estimator ? " (" + s.estimator + ")" : "");
    (groups[key] = groups[key] || []).push(s);
  }
  const bins = 20;
  const hist = (vals) => { const c = new Array(bins).fill(0);
    for (const v of vals) if (v !== null) c[Math.min(bins - 1, Math.floor(v * bins))]++; return c; };
  const mids = [...Array(bins).keys()].map((b) => (b + 0.5) / bins);
  if (!D.series.length) charts.append(atlas.el("p", "nothing scored yet"));
  for (const [key, series] of Object.entries(groups)) {
    const div = atlas.el("div"); charts.append(div);
    const real = series.filter((s) => !s.baseline), base = series.filter((s) => s.baseline);
    const own = real.length ? real : series;
    let top = 1;
    for (const s of own) top = Math.max(top, ...hist(s.f1));
    const traces = own.map((s) => ({ type: "bar", x: mids, y: hist(s.f1), name: atlas.plotText(s.explainer),
      opacity: 0.75, width: 1 / bins }));
    const notes = [];
    for (const s of real.length ? base : []) {
      const c = hist(s.f1);
      traces.push({ type: "scatter", mode: "lines", line: { shape: "hvh", dash: "dot" }, x: mids,
        y: c.map((v) => Math.min(v, top * 1.1)), name: atlas.plotText(s.explainer) + " (baseline)" });
      // an off-scale bin is named in a corner note (one line per baseline), not drawn to its height
      const off = c.map((v, b) => [v, b]).filter(([v]) => v > top * 1.1)
        .map(([v, b]) => v + " at " + (b / bins).toFixed(2) + "–" + ((b + 1) / bins).toFixed(2));
      if (off.length) notes.push({ xref: "paper", yref: "paper", x: 1, y: 1 - 0.07 * notes.length, xanchor: "right",
        yanchor: "top", showarrow: false, font: { size: 10 }, bgcolor: "rgba(255,255,255,0.8)",
        text: atlas.plotText(s.explainer) + " off scale: " + off.join(", ") });
    }
    atlas.lazy(div, () => Plotly.newPlot(div, traces, { title: { text: "F1 · " + atlas.plotText(key) }, barmode: "overlay",
      xaxis: { range: [0, 1], title: { text: "F1" } }, yaxis: { range: [0, top * 1.25], title: { text: "latents" } },
      annotations: notes, margin: { t: 30, l: 50, r: 10, b: 40 }, legend: { orientation: "h", y: -0.25 } },
      atlas.plotConfig));
  }

  // --- scatter plots: precision vs recall, F1 vs firing frequency (headline rows of real explainers) --
  const scatter = document.getElementById("scatter");
  const headline = Object.keys(L.metrics).filter((c) => c.startsWith("f1 "));
  for (const c of headline) {
    const name = c.slice(3), p = L.metrics["precision " + name], r = L.metrics["recall " + name], f = L.metrics[c];
    const idx = [...Array(n).keys()].filter((i) => f[i] !== null);
    const label = (i) => "latent " + L.latent[i] + ": " + atlas.plotText((L.explanation[i] || "").slice(0, 60));
    const pr = atlas.el("div"), ff = atlas.el("div"); scatter.append(pr, ff);
    atlas.lazy(pr, () => Plotly.newPlot(pr, [{ type: "scatter", mode: "markers", x: idx.map((i) => r[i]), y: idx.map((i) => p[i]),
      customdata: idx, text: idx.map(label), hoverinfo: "text+x+y", marker: { size: 4, opacity: 0.6 } }],
      { title: { text: "precision vs recall · " + atlas.plotText(name) }, xaxis: { title: { text: "recall" }, range: [0, 1.02] },
        yaxis: { title: { text: "precision" }, range: [0, 1.02] }, margin: { t: 30, l: 50, r: 10, b: 40 } }, atlas.plotConfig));
    const fq = idx.filter((i) => L.frequency[i] > 0);
    atlas.lazy(ff, () => Plotly.newPlot(ff, [{ type: "scatter", mode: "markers", x: fq.map((i) => L.frequency[i]), y: fq.map((i) => f[i]),
      customdata: fq, text: fq.map(label), hoverinfo: "text+x+y", marker: { size: 4, opacity: 0.6 } }],
      { title: { text: "F1 vs firing frequency · " + atlas.plotText(name) },
        xaxis: { type: "log", title: { text: "firing frequency (log)" } }, yaxis: { title: { text: "F1" }, range: [0, 1.02] },
        margin: { t: 30, l: 50, r: 10, b: 40 } }, atlas.plotConfig));
    pr.onDrawn = ff.onDrawn = (gd) => gd.on("plotly_click", open);
  }

  // --- comparison: explainers (every series, baselines included), SAEs, runs -------------------------
  const compare = document.getElementById("compare");
  if (D.series.length) {
    const byExplainer = atlas.el("div"); compare.append(byExplainer);
    atlas.lazy(byExplainer, () => Plotly.newPlot(byExplainer, D.series.map((s) => ({ type: "box", y: s.f1, boxpoints: false,
      name: atlas.plotText(s.explainer + " · " + s.population + (s.estimator ? " " + s.estimator : "")) })),
      { title: { text: "F1 by explainer and population" }, showlegend: false, yaxis: { range: [0, 1.02] },
        margin: { t: 30, l: 40, r: 10, b: 110 } }, atlas.plotConfig));
  }
  if (headline.length) {
    const bySae = atlas.el("div"); compare.append(bySae);
    const traces = [];
    for (const c of headline) D.saes.forEach((s, j) => {
      const f = L.metrics[c]; const y = [];
      for (let i = 0; i < n; i++) if (L.sae[i] === j && f[i] !== null) y.push(f[i]);
      if (y.length) traces.push({ type: "box", y: y, boxpoints: false,
        name: atlas.plotText(s.sae_id.slice(0, 24) + " · " + c.slice(3)) });
    });
    atlas.lazy(bySae, () => Plotly.newPlot(bySae, traces, { title: { text: "headline F1 by SAE" }, showlegend: false,
      yaxis: { range: [0, 1.02] }, margin: { t: 30, l: 40, r: 10, b: 110 } }, atlas.plotConfig));
  }
  const small = (id, data, cols) => new Tabulator(id, { data: data, layout: "fitDataStretch", maxHeight: "360px",
    columns: cols.map((c) => ({ title: c, field: c, formatter: text, titleFormatter: title,
      sorter: typeof (data[0] || {})[c] === "number" ? "number" : "string" })) });
  if (D.run_comparison.length) small("#run-compare", D.run_comparison,
    ["run_id", "sae_id", "explainer", "scorer", "population", "latents", "median_f1"]);

  // --- runs and spend ---------------------------------------------------------------------------------
  if (D.runs.length) small("#runs", D.runs, ["run_id", "flow", "status", "started_at", "finished_at", "sae_id",
    "model", "config_hash", "error"]);
  else document.getElementById("runs").append(atlas.el("p", "no runs recorded"));
  const spend = document.getElementById("spend");
  if (D.spend.cost_t.length || D.spend.tokens_t.length) {
    const div = atlas.el("div"); div.style.width = "900px"; spend.append(div);
    atlas.lazy(div, () => Plotly.newPlot(div, [
      { x: D.spend.cost_t, y: D.spend.cost_usd, name: "cost (USD, explanations)", mode: "lines" },
      { x: D.spend.tokens_t, y: D.spend.tokens, name: "tokens (every LLM call)", mode: "lines", yaxis: "y2" }],
      { title: { text: "cumulative LLM spend" }, yaxis: { title: { text: "USD" } },
        yaxis2: { title: { text: "tokens" }, overlaying: "y", side: "right" }, margin: { t: 30, l: 60, r: 60, b: 40 } },
      atlas.plotConfig));
  } else spend.append(atlas.el("p", "no LLM calls in this store (N2G runs spend nothing)"));
})();
