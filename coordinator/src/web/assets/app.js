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
  filter.addEventListener("input", sort.redraw);
  const showReport = (r) => {
    current = r;
    const found = r.runs.flatMap((run) => run.warnings.map((w) => `${run.model}/${run.defense} seed ${run.seed}: ${w}`));
    warnings.replaceChildren(...(found.length ? found.map((w) => el("li", {}, w)) : [el("li", { class: "muted" }, "none")]));
    sort.redraw();
  };
  main.replaceChildren(
    el("h1", {}, report.name, " ", el("span", { class: "muted" }, report.sweep_id)),
    el("p", {}, "State: ", state, " ", progress),
    el("h2", {}, "Table"),
    el("p", { class: "layout" }, "rows ", rowsInput, " columns ", colsInput, " metric ", metric, " ", layoutError),
    table, notes,
    el("p", { class: "downloads" }, "Download: ", ...files.map((f) => el("a", { href: `/api/v1/sweeps/${report.sweep_id}/files/${f}` }, f))),
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
