// advsweep dashboard: the sweeps list (/) and a sweep page (/sweeps/ID), read from the
// coordinator's JSON API; a sweep page follows the sweep's server-sent events and re-reads
// the pivot table (the same table.csv `advsweep report` writes) when the sweep changes.
"use strict";

const main = document.getElementById("main");
const where = document.getElementById("where");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) { showLogin(); throw new Error("sign in first"); }
  if (!response.ok) {
    let why = response.statusText;
    try { why = (await response.json()).error || why; } catch (_) {}
    throw new Error(why);
  }
  return response;
}

function showLogin() {
  main.replaceChildren(document.getElementById("login").content.cloneNode(true));
  if (new URLSearchParams(location.search).has("refused")) {
    document.getElementById("login-error").textContent = "That token was refused.";
  }
}

function fail(error) {
  if (String(error.message) !== "sign in first") {
    main.replaceChildren(el("p", { class: "error" }, "Error: " + error.message));
  }
}

function counts(c) { return `${c.done} done, ${c.failed} failed, ${c.running} running, ${c.pending} pending of ${c.total}`; }

function started(ms) { return new Date(ms).toLocaleString(); }

function bar(c) {
  const span = el("span");
  span.style.width = c.total ? `${(100 * (c.done + c.failed)) / c.total}%` : "0";
  return el("span", { class: "bar", title: counts(c) }, span);
}

// The Markdown table `advsweep report` prints: its rows, and the lines around it (legend).
function parseMarkdownTable(text) {
  const rows = []; const notes = [];
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t.startsWith("|")) {
      const cells = t.slice(1, t.endsWith("|") ? -1 : undefined).split("|").map((c) => c.trim());
      if (!cells.every((c) => /^:?-+:?$/.test(c))) rows.push(cells);
    } else if (t) notes.push(t);
  }
  return { rows, notes };
}

const METRICS = ["accuracy", "attack_success_rate", "mean_linf", "mean_l2", "seconds", "images_per_second"];

function tableOf(rows, id) {
  const [head, ...body] = rows;
  return el("table", { id },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...body.map((r) => el("tr", {}, ...r.map((v) => el("td", { class: /^-?[0-9.]+( ± [0-9.]+)?$/.test(v) ? "num" : "" }, v))))));
}

async function sweepsPage() {
  where.textContent = "sweeps";
  const { sweeps } = await (await api("/api/v1/sweeps")).json();
  sweeps.sort((a, b) => b.created_ms - a.created_ms);
  main.replaceChildren(
    el("h1", {}, "Sweeps"),
    sweeps.length === 0 ? el("p", { class: "muted" }, "No sweep submitted yet.") :
    el("table", { id: "sweeps" },
      el("thead", {}, el("tr", {}, ...["sweep", "state", "progress", "cells", "started"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...sweeps.map((s) => el("tr", {},
        el("td", {}, el("a", { href: `/sweeps/${s.sweep_id}` }, s.name), " ", el("span", { class: "muted" }, s.sweep_id)),
        el("td", { class: `state-${s.state}` }, s.state),
        el("td", {}, bar(s.cells)),
        el("td", {}, counts(s.cells)),
        el("td", {}, started(s.created_ms)))))));
}

function pct(v) { return v === null || v === undefined ? "" : (100 * v).toFixed(1); }

// ε as the reports print it (coordinator/report/src/epsilon.rs): whole multiples of 1/255 in
// pixel space as `8/255`, anything else as a decimal of at most four places.
function epsLabel(c) {
  if (c.epsilon === 0) return "0";
  const k = c.epsilon * 255;
  if (c.epsilon_space === "pixel" && Math.abs(k - Math.round(k)) < 1e-6 && Math.round(k) >= 1) return `${Math.round(k)}/255`;
  return String(+c.epsilon.toFixed(4));
}

// Every cell of the sweep, sortable by any column (click its header) and filtered by a text
// that any of its fields may contain.
function cellsTable(cells, filterInput, sort) {
  const columns = [
    ["model", (c) => c.model], ["defense", (c) => c.defense], ["seed", (c) => c.seed],
    ["attack", (c) => c.attack], ["ε", (c) => c.epsilon], ["state", (c) => c.state],
    ["accuracy %", (c) => c.result ? c.result.accuracy : null],
    ["success %", (c) => c.result && c.attack !== "none" ? c.result.attack_success_rate : null],
    ["error", (c) => c.error || ""],
  ];
  const needle = filterInput.value.trim().toLowerCase();
  let shown = cells.filter((c) => !needle || columns.some(([, f]) => String(f(c) ?? "").toLowerCase().includes(needle)));
  const [key, dir] = sort.by;
  const get = columns.find(([name]) => name === key)?.[1];
  if (get) shown = shown.slice().sort((a, b) => {
    const x = get(a); const y = get(b);
    if (x === y) return 0; if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : 1) * dir;
  });
  const head = columns.map(([name]) => {
    const th = el("th", { class: "sortable", "data-column": name }, name + (key === name ? (dir > 0 ? " ▲" : " ▼") : ""));
    th.addEventListener("click", () => { sort.by = [name, key === name ? -dir : 1]; sort.redraw(); });
    return th;
  });
  return el("table", { id: "cells" }, el("thead", {}, el("tr", {}, ...head)),
    el("tbody", {}, ...shown.map((c) => el("tr", { class: `state-row-${c.state}` },
      el("td", {}, c.model), el("td", {}, c.defense), el("td", { class: "num" }, c.seed),
      el("td", {}, c.attack), el("td", { class: "num" }, epsLabel(c)),
      el("td", { class: `state-${c.state}` }, c.state),
      el("td", { class: "num" }, pct(c.result && c.result.accuracy)),
      el("td", { class: "num" }, c.attack === "none" ? "" : pct(c.result && c.result.attack_success_rate)),
      el("td", { class: "error" }, c.error || "")))));
}

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// Accuracy against ε, one line per model/defense and attack (the clean cell at ε = 0 starts
// every attack's line): the mean over seeds with a ± std bar, each point's values on hover
// (its tooltip), and a legend whose entries hide or show their line.
function accuracyChart(cells, hidden, redraw) {
  const done = cells.filter((c) => c.state === "done" && c.result);
  const groups = new Map();
  // A setting is a model/defense at its training ε (a tied defense is one per grid ε).
  const settingOf = (c) => `${c.model}/${c.defense}` + (c.defense_epsilon ? ` ε=${epsLabel({ epsilon: c.defense_epsilon, epsilon_space: c.epsilon_space })}` : "");
  for (const c of done) {
    const setting = settingOf(c);
    const attacks = c.attack === "none" ? [...new Set(done.filter((d) => settingOf(d) === setting && d.attack !== "none").map((d) => d.attack))] : [c.attack];
    for (const attack of attacks) {
      const key = `${setting} · ${attack}`;
      if (!groups.has(key)) groups.set(key, new Map());
      const eps = c.attack === "none" ? 0 : c.epsilon;
      const at = groups.get(key);
      if (!at.has(eps)) at.set(eps, { cell: c, values: [] });
      at.get(eps).values.push(c.result.accuracy);
    }
  }
  const series = [...groups.entries()].map(([key, at], i) => ({
    key, color: PALETTE[i % PALETTE.length],
    points: [...at.entries()].sort((a, b) => a[0] - b[0]).map(([eps, { cell, values }]) => {
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      const std = values.length > 1 ? Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1)) : 0;
      return { eps, cell, mean, std, n: values.length };
    }),
  }));
  if (!series.length) return el("p", { class: "muted" }, "No cell is done yet.");
  const W = 660, H = 320, L = 50, R = 30, T = 10, B = 40;
  const maxEps = Math.max(...series.flatMap((s) => s.points.map((p) => p.eps)), 1e-9);
  const x = (e) => L + (W - L - R) * (e / maxEps);
  const y = (a) => T + (H - T - B) * (1 - a);
  const chart = svg("svg", { id: "chart-accuracy", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), stroke: "#e4e7ec" }),
      svg("text", { x: L - 6, y: y(t) + 4, "text-anchor": "end", "font-size": 11 }, `${100 * t}`));
  }
  const ticks = [...new Set(series.flatMap((s) => s.points.map((p) => p.eps)))].sort((a, b) => a - b);
  for (const e of ticks) {
    chart.append(svg("text", { x: x(e), y: H - B + 16, "text-anchor": "middle", "font-size": 11 }, epsLabel({ epsilon: e, epsilon_space: series[0].points[0].cell.epsilon_space })));
  }
  chart.append(svg("text", { x: (L + W) / 2, y: H - 6, "text-anchor": "middle", "font-size": 12 }, "ε"),
    svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 12 ${(T + H - B) / 2})` }, "accuracy (%)"));
  for (const s of series.filter((s) => !hidden.has(s.key))) {
    const g = svg("g", { class: "series", "data-series": s.key });
    g.append(svg("polyline", { fill: "none", stroke: s.color, "stroke-width": 2, points: s.points.map((p) => `${x(p.eps)},${y(p.mean)}`).join(" ") }));
    for (const p of s.points) {
      if (p.std > 0) g.append(svg("line", { x1: x(p.eps), x2: x(p.eps), y1: y(Math.min(1, p.mean + p.std)), y2: y(Math.max(0, p.mean - p.std)), stroke: s.color }));
      g.append(svg("circle", { cx: x(p.eps), cy: y(p.mean), r: 4, fill: s.color },
        svg("title", {}, `${s.key} at ε=${epsLabel({ epsilon: p.eps, epsilon_space: p.cell.epsilon_space })}: ${pct(p.mean)} %` + (p.n > 1 ? ` ± ${pct(p.std)} (${p.n} seeds)` : ""))));
    }
    chart.append(g);
  }
  const legend = el("ul", { class: "legend", id: "chart-legend" }, ...series.map((s) => {
    const item = el("li", { class: hidden.has(s.key) ? "off" : "", "data-series": s.key }, el("span", { class: "swatch" }), s.key);
    item.firstChild.style.background = s.color;
    item.addEventListener("click", () => { if (hidden.has(s.key)) hidden.delete(s.key); else hidden.add(s.key); redraw(); });
    return item;
  }));
  return el("div", { class: "chart" }, chart, legend);
}

async function sweepPage(id) {
  const report = await (await api(`/api/v1/sweeps/${encodeURIComponent(id)}`)).json();
  where.textContent = report.name;
  const state = el("span", { id: "state", class: `state-${report.state}` }, report.state);
  const progress = el("span", { id: "progress" });
  const table = el("div", { id: "table" });
  const notes = el("p", { class: "muted", id: "table-notes" });
  const rowsInput = el("input", { id: "rows", value: "attack,epsilon", size: "24" });
  const colsInput = el("input", { id: "cols", value: "model,defense", size: "24" });
  const metric = el("select", { id: "metric" }, ...METRICS.map((m) => el("option", { value: m }, m)));
  const layoutError = el("span", { class: "error", id: "layout-error" });
  const files = ["table.csv", "cells.csv", "epochs.csv", "sweep.json"];
  const warnings = el("ul", { id: "warnings" });
  const filter = el("input", { id: "filter", placeholder: "model, attack, state, error…", size: "32" });
  const cellsDiv = el("div");
  let current = report;
  const sort = { by: ["", 1], redraw: () => cellsDiv.replaceChildren(cellsTable(current.cells, filter, sort)) };
  const chartDiv = el("div", { id: "charts" });
  const hidden = new Set();
  const redrawChart = () => chartDiv.replaceChildren(accuracyChart(current.cells, hidden, redrawChart));
  filter.addEventListener("input", sort.redraw);
  const showReport = (r) => {
    current = r;
    const found = r.runs.flatMap((run) => run.warnings.map((w) => `${run.model}/${run.defense} seed ${run.seed}: ${w}`));
    warnings.replaceChildren(...(found.length ? found.map((w) => el("li", {}, w)) : [el("li", { class: "muted" }, "none")]));
    sort.redraw();
    redrawChart();
  };
  main.replaceChildren(
    el("h1", {}, report.name, " ", el("span", { class: "muted" }, report.sweep_id)),
    el("p", {}, "State: ", state, " ", progress),
    el("h2", {}, "Table"),
    el("p", { class: "layout" }, "rows ", rowsInput, " columns ", colsInput, " metric ", metric, " ", layoutError),
    table, notes,
    el("p", { class: "downloads" }, "Download: ", ...files.map((f) => el("a", { href: `/api/v1/sweeps/${report.sweep_id}/files/${f}` }, f))),
    el("h2", {}, "Accuracy against ε"), chartDiv,
    el("h2", {}, "Warnings"), warnings,
    el("h2", {}, "Cells"), el("p", {}, "filter ", filter), cellsDiv);
  // The table `advsweep report` prints (table.md), in the layout chosen above.
  const refreshTable = async () => {
    const query = new URLSearchParams({ rows: rowsInput.value, cols: colsInput.value, metric: metric.value });
    const response = await fetch(`/api/v1/sweeps/${report.sweep_id}/files/table.md?${query}`, { credentials: "same-origin" });
    if (!response.ok) {
      layoutError.textContent = (await response.json().catch(() => ({}))).error || response.statusText;
      return;
    }
    layoutError.textContent = "";
    const parsed = parseMarkdownTable(await response.text());
    table.replaceChildren(parsed.rows.length ? tableOf(parsed.rows, "pivot") : el("p", { class: "muted" }, "No cell is done yet."));
    notes.textContent = parsed.notes.join(" ");
  };
  for (const input of [rowsInput, colsInput, metric]) input.addEventListener("change", () => refreshTable().catch(fail));
  await refreshTable();
  showReport(report);
  const events = new EventSource(`/api/v1/sweeps/${report.sweep_id}/events`);
  let updates = 0;
  events.addEventListener("summary", async (e) => {
    const s = JSON.parse(e.data);
    // How many summaries the server pushed to this page (its live updates), for tests.
    progress.dataset.updates = String(++updates);
    state.textContent = s.state;
    state.className = `state-${s.state}`;
    progress.replaceChildren(bar(s.cells), " ", counts(s.cells));
    await refreshTable().catch(fail);
    showReport(await (await api(`/api/v1/sweeps/${report.sweep_id}`)).json());
  });
  events.addEventListener("done", () => events.close());
}

const path = location.pathname;
const sweep = path.match(/^\/sweeps\/([^/]+)\/?$/);
(sweep ? sweepPage(decodeURIComponent(sweep[1])) : sweepsPage()).catch(fail);
