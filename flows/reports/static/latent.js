// One latent's page: explanations and scores, baselines, histogram (Plotly), examples with token
// shading, logit lens, correlated latents. Every string from the data goes in as text.
"use strict";
(function () {
  const D = atlas.data();
  // the page skeleton (kept here, not in each latent's file: the export holds thousands of them)
  const SECTIONS = [["explanations", "Explanations and scores"], ["baselines", "Baselines"],
    ["histogram", "Activation histogram"], ["examples", "Examples"],
    ["logits", "Top output tokens (logit lens: W_dec · W_U)"], ["correlated", "Correlated latents"],
    ["stats", "Statistics"]];
  const header = atlas.el("header"), main = atlas.el("main");
  header.append(atlas.link(document.body.dataset.index, "dashboard"), atlas.el("h1", null), atlas.el("nav"));
  header.querySelector("h1").id = "title"; header.querySelector("nav").id = "nav";
  const notice = atlas.el("p", null, "notice"); notice.id = "notice"; notice.hidden = true; main.append(notice);
  for (const [id, name] of SECTIONS) {
    const sec = atlas.el("section"); sec.append(atlas.el("h2", name));
    if (id === "examples") sec.append(atlas.el("p", "Tokens shaded by activation (darker: stronger; hover for the " +
      "value). Under a score example, each explanation's simulated activation, shaded in blue.", "hint"));
    const box = atlas.el("div", null, id === "histogram" ? "plot" : null); box.id = id; sec.append(box); main.append(sec);
  }
  document.body.prepend(header, main);
  const sib = (latent) => latent + document.body.dataset.suffix;  // pages of one SAE share a folder
  document.getElementById("title").textContent = "latent " + D.latent + " · " + D.sae_id;
  const nav = document.getElementById("nav");
  if (D.prev !== null) nav.append(atlas.link(sib(D.prev), "← " + D.prev), " ");
  if (D.next !== null) nav.append(atlas.link(sib(D.next), D.next + " →"));
  if (D.notice) { const p = document.getElementById("notice"); p.textContent = D.notice; p.hidden = false; }

  const F = D.score_fields, at = (row, f) => row[F.indexOf(f)];
  const scoreCols = ["scorer", "population", "estimator", "precision", "recall", "F1", "F1 95% CI", "AUROC",
    "correlation", "bal. acc.", "tokens", "positive", "mode"];
  const scoreRow = (s) => [at(s, "scorer"), at(s, "population"), at(s, "estimator"), at(s, "precision"),
    at(s, "recall"), at(s, "f1"), at(s, "f1_lo") === null || at(s, "f1_lo") === undefined ? "–"
      : "[" + atlas.fmt(at(s, "f1_lo")) + ", " + atlas.fmt(at(s, "f1_hi")) + "]",
    at(s, "auroc"), at(s, "correlation"), at(s, "balanced_accuracy"), at(s, "n_tokens"), at(s, "n_positive"),
    at(s, "mode")];
  const showExplanations = (id, list, empty) => {
    const box = document.getElementById(id);
    if (!list.length) { box.append(atlas.el("p", empty)); return; }
    for (const e of list) {
      const div = atlas.el("div", null, "explanation");
      div.append(atlas.el("div", e.status === "ok" ? e.text : "(" + e.status + ") " + e.error,
        e.status === "ok" ? "text" : "text error"));
      const meta = [e.explainer, e.model && "model " + e.model, e.prompt_version && "prompt " + e.prompt_version,
        e.cost_usd ? "$" + atlas.fmt(e.cost_usd, 4) : ""].filter(Boolean).join(" · ");
      div.append(atlas.el("div", meta, "meta"));
      if (e.patterns.length) {
        div.append(atlas.el("div", "patterns: " + e.patterns.length + " of " + e.n_patterns, "meta"));
        const list = atlas.el("div", null, "patterns");
        e.patterns.forEach((p, i) => { if (i) list.append(" · ");
          list.append(atlas.el("code", (p[0] || []).map((t) => t === null ? "[any]" : t).join(" ")),
            " " + atlas.fmt(p[1], 2)); });
        div.append(list);
      }
      if (e.scores.length) div.append(atlas.table(scoreCols, e.scores.map(scoreRow)));
      else div.append(atlas.el("div", "not scored", "meta"));
      box.append(div);
    }
  };
  showExplanations("explanations", D.explanations, "no explanation");
  showExplanations("baselines", D.baselines, "no baseline rows");

  // --- histogram ------------------------------------------------------------------------------------
  const hist = document.getElementById("histogram");
  const freq = D.stats.frequency;
  if (D.histogram) {
    const e = D.histogram.edges, mids = D.histogram.counts.map((_, i) => (e[i] + e[i + 1]) / 2);
    atlas.lazy(hist, () => Plotly.newPlot(hist, [{ type: "bar", x: mids, y: D.histogram.counts, width: e[1] - e[0] }],
      { title: { text: "non-zero activations · firing density " + atlas.fmt(freq, 5) + " of tokens" },
        xaxis: { title: { text: "activation" } }, yaxis: { title: { text: "tokens" } },
        margin: { t: 30, l: 50, r: 10, b: 40 } }, atlas.plotConfig));
  } else hist.append(atlas.el("p", "no cached activations (firing density " + atlas.fmt(freq, 5) + ")"));

  // --- examples ----------------------------------------------------------------------------------
  const maxAct = Math.max(D.stats.max_act || 0, 1e-9);
  const shade = (v, hue) => {
    // lightness 100% (zero) .. 52% (max): dark enough to see, light enough for black text
    const x = Math.max(0, Math.min(1, v / maxAct));
    return v > 0 ? "hsl(" + hue + ", 95%, " + (100 - 48 * x) + "%)" : "";
  };
  const line = (label, tokens, values, hue, trueActs) => {
    const div = atlas.el("div", null, "example");
    div.append(atlas.el("span", label, "row-label"));
    tokens.forEach((tok, i) => {
      if (tok.startsWith(" ")) { div.append(" "); tok = tok.slice(1); }  // the word gap stays unshaded
      const span = atlas.el("span", tok, "tok" + (values[i] > 0 ? " on" : ""));
      span.style.background = shade(values[i], hue);
      span.title = trueActs ? "true " + atlas.fmt(trueActs[i], 2) + " / sim " + atlas.fmt(values[i], 2)
        : "activation " + atlas.fmt(values[i], 2);
      div.append(span);
    });
    return div;
  };
  const ex = document.getElementById("examples");
  if (!D.groups.length) ex.append(atlas.el("p", "no examples stored for this latent"));
  for (const g of D.groups) {
    const box = atlas.el("div", null, "group");
    const label = g.key === "top" ? "top activations (explain split)"
      : g.key === "random" ? "random, non-activating (score split)"
      : g.key === "similar" ? "hard negatives (score split)"
      : "activation decile " + g.key.slice(1) + " of 10 (score split)";
    box.append(atlas.el("h3", label + " · showing " + g.examples.length + " of " + g.total));
    const dense = (sp, n) => { const v = new Array(n).fill(0); sp[0].forEach((p, j) => { v[p] = sp[1][j]; }); return v; };
    for (const x of g.examples) {
      const acts = dense(x.a, x.n);
      const tokens = acts.map((_, i) => (x.t[i] === undefined ? "?" : D.vocab[x.t[i]]));
      box.append(line("true", tokens, acts, 28));
      for (const [name, sim] of Object.entries(x.sim)) box.append(line("sim " + name, tokens, dense(sim, x.n), 210, acts));
    }
    ex.append(box);
  }

  // --- logit lens, correlated latents, stats ------------------------------------------------------
  const logits = document.getElementById("logits");
  if (!D.logits) logits.append(atlas.el("p", "not computed for this SAE (run the latent-cache stage again)"));
  else if (D.logits.none) logits.append(atlas.el("p", D.logits.none));
  else {
    const rows = [];
    for (let i = 0; i < Math.max(D.logits.promoted.length, D.logits.suppressed.length); i++) {
      const p = D.logits.promoted[i] || ["", null], s = D.logits.suppressed[i] || ["", null];
      rows.push([p[0], p[1], s[0], s[1]]);
    }
    logits.append(atlas.table(["promoted token", "logit", "suppressed token", "logit"], rows));
  }
  const corr = document.getElementById("correlated");
  if (!D.correlated.length) corr.append(atlas.el("p", "none recorded"));
  D.correlated.forEach((c, i) => { if (i) corr.append(", "); corr.append(atlas.link(sib(c), "latent " + c)); });
  document.getElementById("stats").append(atlas.kv(Object.entries(D.stats)));
  document.body.dataset.ready = "1";
})();
