// Shared helpers of the dashboard and the latent pages. Data is inserted as text only (textContent,
// createTextNode, attribute setters): corpus tokens, explanations and model names are untrusted.
"use strict";
const atlas = {
  data() { return JSON.parse(document.getElementById("atlas-data").textContent); },
  el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  },
  // a link whose text and href come from data: href set as an attribute, never parsed as markup
  link(href, text) { const a = atlas.el("a", text); a.setAttribute("href", href); return a; },
  latentHref(prefix, saeId, latent) {
    return prefix + encodeURIComponent(saeId) + "/" + latent + document.body.dataset.suffix;
  },
  fmt(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en");
    const d = digits === undefined ? 3 : digits;
    return Math.abs(v) > 0 && Math.abs(v) < Math.pow(10, -d) ? v.toExponential(2) : v.toFixed(d);
  },
  // Plotly renders a small subset of HTML in its strings: escape data before it goes into a label
  plotText(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  },
  kv(pairs) {
    const dl = atlas.el("dl", null, "kv");
    for (const [k, v] of pairs) { dl.append(atlas.el("dt", k), atlas.el("dd", atlas.fmt(v))); }
    return dl;
  },
  table(columns, rows) {
    const t = atlas.el("table", null, "plain"), head = t.createTHead().insertRow();
    for (const c of columns) head.append(atlas.el("th", c));
    const body = t.createTBody();
    for (const r of rows) {
      const tr = body.insertRow();
      for (const v of r) {
        const td = tr.insertCell();
        if (v instanceof Node) td.append(v); else td.textContent = atlas.fmt(v);
      }
    }
    return t;
  },
  plotConfig: { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage"] },
  // Plotly (4.8 MB of script) is loaded on first use, off the first screen's path; a script element,
  // since fetch() and modules are refused on file://.
  plotly() {
    if (!atlas._plotly) {
      atlas._plotly = new Promise((resolve, reject) => {
        const tag = document.createElement("script");
        tag.src = document.body.dataset.assets + "plotly.min.js";
        tag.onload = () => resolve(window.Plotly);
        tag.onerror = () => reject(new Error("cannot load plotly.min.js"));
        document.head.append(tag);
      });
    }
    return atlas._plotly;
  },
  // Draw a chart when it scrolls into view: at 4096 latents a dozen charts would otherwise hold up the
  // first screen (the table) by seconds. `draw` fills `div`; `div.dataset.drawn` says it has run.
  // `div.onDrawn(gd)`, when set, runs once the chart exists (to attach click handlers).
  lazy(div, draw) {
    const run = () => {
      atlas.plotly().then(draw).then((gd) => { if (div.onDrawn) div.onDrawn(gd); div.dataset.drawn = "1"; });
    };
    if (!("IntersectionObserver" in window)) { run(); return; }
    const seen = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) { seen.disconnect(); run(); }
    }, { rootMargin: "200px" });
    seen.observe(div);
  },
};
