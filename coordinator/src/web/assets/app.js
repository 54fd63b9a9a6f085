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

// A setting is a model/defense at its training ε (a tied defense is one per grid ε).
function settingOf(c) {
  return `${c.model}/${c.defense}` + (c.defense_epsilon ? ` ε=${epsLabel({ epsilon: c.defense_epsilon, epsilon_space: c.epsilon_space })}` : "");
}

// Seeds' values grouped: Map key -> Map x -> [{seed, y}].
function groupBySeed() { return new Map(); }
function addValue(groups, key, x, seed, y) {
  if (!groups.has(key)) groups.set(key, new Map());
  const at = groups.get(key);
  if (!at.has(x)) at.set(x, []);
  at.get(x).push({ seed, y });
}

// Series from grouped values: the mean over seeds with a ± std bar at each x, and (with more
// than one seed) each seed's own line, faint. `title(key, x, stats)` is a mark's hover text.
function seriesOf(groups, title) {
  return [...groups.entries()].map(([key, at], i) => {
    const xs = [...at.keys()].sort((a, b) => a - b);
    const marks = xs.map((x) => {
      const st = meanStd(at.get(x).map((v) => v.y));
      return { x, y: st.mean, yerr: st.std, title: title(key, x, st) };
    });
    const seeds = [...new Set(xs.flatMap((x) => at.get(x).map((v) => v.seed)))].sort((a, b) => a - b);
    const faint = seeds.length > 1 ? {
      lines: seeds.map((seed) => xs.flatMap((x) => at.get(x).filter((v) => v.seed === seed).map((v) => ({ x, y: v.y })))),
    } : null;
    return { key, color: PALETTE[i % PALETTE.length], line: marks, marks, faint };
  });
}

function seedsNote(st) { return st.n > 1 ? ` ± ${pct(st.std)} (${st.n} seeds)` : ""; }

// Accuracy against ε, one line per setting and attack (the clean cell at ε = 0 starts every
// attack's line).
function accuracyChart(cells, hidden, redraw) {
  const done = cells.filter((c) => c.state === "done" && c.result);
  const groups = groupBySeed();
  let space = "pixel";
  for (const c of done) {
    space = c.epsilon_space;
    const setting = settingOf(c);
    const attacks = c.attack === "none" ? [...new Set(done.filter((d) => settingOf(d) === setting && d.attack !== "none").map((d) => d.attack))] : [c.attack];
    for (const attack of attacks) addValue(groups, `${setting} · ${attack}`, c.attack === "none" ? 0 : c.epsilon, c.seed, c.result.accuracy);
  }
  if (!groups.size) return el("p", { class: "muted" }, "No cell is done yet.");
  const series = seriesOf(groups, (key, eps, st) => `${key} at ε=${epsLabel({ epsilon: eps, epsilon_space: space })}: ${pct(st.mean)} %${seedsNote(st)}`);
  const ticks = [...new Set(series.flatMap((s) => s.marks.map((m) => m.x)))].sort((a, b) => a - b);
  return drawChart({
    id: "chart-accuracy", xLabel: "ε", yLabel: "accuracy (%)", series, hidden, redraw,
    x: { min: 0, max: Math.max(...ticks, 1e-9), ticks: ticks.map((v) => ({ v, label: epsLabel({ epsilon: v, epsilon_space: space }) })) },
    y: PERCENT_AXIS,
  });
}

const CURVE_METRICS = { test_accuracy: "test accuracy (%)", train_accuracy: "train accuracy (%)", train_loss: "train loss", images_per_second: "images/s" };

// Learning curves: a metric per epoch, one line per setting (mean over seeds ± std, each seed
// faint).
function curvesChart(runs, metric, hidden, redraw, id) {
  const groups = groupBySeed();
  for (const r of runs) for (const e of r.epochs) addValue(groups, settingOf(r), e.epoch, r.seed, e[metric]);
  if (!groups.size) return el("p", { class: "muted" }, "No epoch is reported yet.");
  const isAccuracy = metric.endsWith("accuracy");
  const show = (v) => isAccuracy ? `${pct(v)} %` : v.toFixed(metric === "train_loss" ? 4 : 0);
  const series = seriesOf(groups, (key, epoch, st) => `${key} epoch ${epoch}: ${show(st.mean)}` + (st.n > 1 ? ` ± ${isAccuracy ? pct(st.std) : st.std.toFixed(4)} (${st.n} seeds)` : ""));
  const epochs = [...new Set(series.flatMap((s) => s.marks.map((m) => m.x)))].sort((a, b) => a - b);
  const step = Math.max(1, Math.ceil(epochs.length / 12));
  const values = series.flatMap((s) => [...s.marks.map((m) => m.y + m.yerr), ...(s.faint ? s.faint.lines.flat().map((p) => p.y) : [])]);
  return drawChart({
    id, xLabel: "epoch", yLabel: CURVE_METRICS[metric], series, hidden, redraw,
    x: { min: Math.min(...epochs), max: Math.max(...epochs), ticks: epochs.filter((_, i) => i % step === 0).map((v) => ({ v, label: String(v) })) },
    y: isAccuracy ? PERCENT_AXIS : valueAxis(values),
  });
}

// The (attack, ε) points a trade-off can be drawn at: every attacked cell's, in order.
function tradeoffChoices(cells) {
  const seen = new Map();
  for (const c of cells) if (c.attack !== "none") seen.set(`${c.attack} ${c.epsilon}`, { attack: c.attack, epsilon: c.epsilon, label: `${c.attack} at ε=${epsLabel(c)}` });
  return [...seen.entries()].sort((a, b) => a[1].attack.localeCompare(b[1].attack) || a[1].epsilon - b[1].epsilon);
}

// Clean against robust accuracy at one attack and ε: a point per setting (the mean over seeds
// with ± std in both directions, each seed faint).
function tradeoffChart(cells, choice, hidden, redraw) {
  const done = cells.filter((c) => c.state === "done" && c.result);
  const clean = new Map(done.filter((c) => c.attack === "none").map((c) => [`${settingOf(c)}|${c.seed}`, c.result.accuracy]));
  const bySetting = new Map();
  for (const c of done) {
    if (!choice || c.attack !== choice.attack || c.epsilon !== choice.epsilon) continue;
    const x = clean.get(`${settingOf(c)}|${c.seed}`);
    if (x === undefined) continue;
    if (!bySetting.has(settingOf(c))) bySetting.set(settingOf(c), []);
    bySetting.get(settingOf(c)).push({ seed: c.seed, x, y: c.result.accuracy });
  }
  if (!bySetting.size) return el("p", { class: "muted" }, "No setting has both a clean and an attacked cell done yet.");
  const series = [...bySetting.entries()].map(([key, points], i) => {
    const sx = meanStd(points.map((p) => p.x)); const sy = meanStd(points.map((p) => p.y));
    return {
      key, color: PALETTE[i % PALETTE.length], line: [],
      marks: [{ x: sx.mean, y: sy.mean, xerr: sx.std, yerr: sy.std, title: `${key}: clean ${pct(sx.mean)} %, robust ${pct(sy.mean)} %` + (sx.n > 1 ? ` (± ${pct(sx.std)}, ± ${pct(sy.std)}; ${sx.n} seeds)` : "") }],
      faint: points.length > 1 ? { marks: points.map((p) => ({ x: p.x, y: p.y, title: `${key} seed ${p.seed}: clean ${pct(p.x)} %, robust ${pct(p.y)} %` })) } : null,
    };
  });
  return drawChart({ id: "chart-tradeoff", xLabel: "clean accuracy (%)", yLabel: `robust accuracy (%), ${choice.label}`, series, hidden, redraw, x: PERCENT_AXIS, y: PERCENT_AXIS });
}

// A duration in words: "40 s", "12 min", "3 h 05 min", "2 d 4 h".
function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.round((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

function when(ms) { return ms ? new Date(ms).toLocaleString() : ""; }

function runHref(sweepId, runId) { return `/sweeps/${sweepId}/runs/${runId}`; }

function workerOf(r) { return r.worker_name || r.worker_id || ""; }

// Where a run in flight stands: its last reported epoch, or evaluating once it has trained.
function stage(r) {
  const last = r.epochs[r.epochs.length - 1];
  if (!last) return r.epochs_planned ? `epoch 0/${r.epochs_planned}` : "evaluating";
  return last.epoch >= r.epochs_planned ? "evaluating" : `epoch ${last.epoch}/${r.epochs_planned}`;
}

// The runs in flight, as the server pushes them (`event: running`).
function runningTable(sweepId, running) {
  if (!running.length) return el("p", { class: "muted", id: "running-none" }, "No run in flight.");
  return el("table", { id: "running" },
    el("thead", {}, el("tr", {}, ...["run", "worker", "attempt", "stage", "loss", "test acc %", "images/s"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...running.map((r) => {
      const last = r.epochs[r.epochs.length - 1];
      return el("tr", {},
        el("td", {}, el("a", { href: runHref(sweepId, r.run_id) }, `${settingOf(r)} seed ${r.seed}`)),
        el("td", {}, workerOf(r)), el("td", { class: "num" }, `${r.attempt}/${r.max_attempts}`),
        el("td", {}, stage(r)),
        el("td", { class: "num" }, last ? last.train_loss.toFixed(4) : ""),
        el("td", { class: "num" }, last ? pct(last.test_accuracy) : ""),
        el("td", { class: "num" }, last ? last.images_per_second.toFixed(0) : ""));
    })));
}

function attemptsText(run) {
  if (!run || !run.attempts.length) return "";
  return run.attempts.map((a) => `#${a.attempt} ${a.outcome}` + (a.worker_id ? ` on ${a.worker_id}` : "") + (a.reason ? `: ${a.reason}` : "")).join("; ");
}

// Failed cells with their error, and how their run's attempts ended.
function failedTable(cells, runsById) {
  const failed = cells.filter((c) => c.state === "failed");
  if (!failed.length) return el("p", { class: "muted", id: "failed-none" }, "No cell failed.");
  return el("table", { id: "failed" },
    el("thead", {}, el("tr", {}, ...["cell", "error", "attempts"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...failed.map((c) => el("tr", {},
      el("td", {}, `${settingOf(c)} seed ${c.seed} · ${c.attack} ε=${epsLabel(c)}`),
      el("td", { class: "error" }, c.error || ""),
      el("td", {}, attemptsText(runsById.get(c.run_id)))))));
}

// Every run: its state, worker, attempts, epochs, and its page and checkpoint.
function runsTable(sweepId, runs) {
  return el("table", { id: "runs" },
    el("thead", {}, el("tr", {}, ...["run", "state", "worker", "attempt", "epochs", "checkpoint"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...runs.map((r) => el("tr", {},
      el("td", {}, el("a", { href: runHref(sweepId, r.run_id) }, `${settingOf(r)} seed ${r.seed}`)),
      el("td", { class: `state-${r.state}` }, r.state), el("td", {}, workerOf(r)),
      el("td", { class: "num", title: attemptsText(r) }, r.attempt ? `${r.attempt}/${r.max_attempts}` : ""),
      el("td", { class: "num" }, `${r.epochs.length}/${r.epochs_planned}`),
      el("td", {}, r.state === "done" && r.epochs_planned > 0 ? el("a", { href: `/api/v1/sweeps/${sweepId}/runs/${r.run_id}/checkpoint` }, "safetensors") : "")))));
}

// The sweeps list, read again every 15 s while any sweep runs (one small JSON for every sweep).
async function sweepsPage() {
  where.textContent = "sweeps";
  const { sweeps } = await (await api("/api/v1/sweeps")).json();
  if (sweeps.some((s) => s.state === "running")) setTimeout(() => sweepsPage().catch(fail), 15000);
  sweeps.sort((a, b) => b.created_ms - a.created_ms);
  main.replaceChildren(
    el("h1", {}, "Sweeps"),
    sweeps.length === 0 ? el("p", { class: "muted" }, "No sweep submitted yet.") :
    el("table", { id: "sweeps" },
      el("thead", {}, el("tr", {}, ...["sweep", "state", "progress", "cells", "started", "ETA"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...sweeps.map((s) => el("tr", {},
        el("td", {}, el("a", { href: `/sweeps/${s.sweep_id}` }, s.name), " ", el("span", { class: "muted" }, s.sweep_id)),
        el("td", { class: `state-${s.state}` }, s.state),
        el("td", {}, bar(s.cells)),
        el("td", {}, counts(s.cells)),
        el("td", {}, started(s.created_ms)),
        el("td", {}, s.eta_seconds === null ? "" : duration(s.eta_seconds)))))));
}

// Follows a sweep's server-sent events: `onSummary(summary)`, `onRunning(runs)`; closes when
// the sweep has settled.
function follow(sweepId, onSummary, onRunning) {
  const events = new EventSource(`/api/v1/sweeps/${sweepId}/events`);
  events.addEventListener("summary", (e) => onSummary(JSON.parse(e.data)));
  events.addEventListener("running", (e) => onRunning(JSON.parse(e.data)));
  events.addEventListener("done", () => events.close());
  return events;
}

// Calls `f` `ms` after the first call that finds it idle, every call in between folded into
// that one (at most one call per `ms`, and none for each of a burst of changes); `now()` calls
// it at once (a sweep that settled: its last state, without waiting).
function coalesced(f, ms) {
  let timer = null; let running = false; let next = null;
  const start = async () => {
    timer = null; running = true;
    try { await f(); } catch (e) { fail(e); }
    running = false;
    const queued = next; next = null;
    if (queued === "now") start(); else if (queued === "later") later();
  };
  const later = () => {
    if (running) { next = next || "later"; return; }
    if (!timer) timer = setTimeout(start, ms);
  };
  const now = () => {
    if (running) { next = "now"; return; }
    clearTimeout(timer);
    start();
  };
  return { later, now };
}

async function sweepPage(id) {
  const [report, access] = await Promise.all([
    api(`/api/v1/sweeps/${encodeURIComponent(id)}`).then((r) => r.json()),
    api("/api/v1/access").then((r) => r.json()),
  ]);
  const sweepId = report.sweep_id;
  where.textContent = report.name;
  const state = el("span", { id: "state", class: `state-${report.state}` }, report.state);
  const progress = el("span", { id: "progress" });
  const retry = el("button", { id: "retry", hidden: "" }, "Retry failed cells");
  const retryNote = el("span", { id: "retry-note", class: "muted" });
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
  const runningDiv = el("div", { id: "in-flight" });
  const failedDiv = el("div");
  const runsDiv = el("div");
  const curveMetric = el("select", { id: "curve-metric" }, ...Object.entries(CURVE_METRICS).map(([k, label]) => el("option", { value: k }, label)));
  const tradeoffAt = el("select", { id: "tradeoff-at" });
  let current = report;
  let runs = [];
  const sort = { by: ["", 1], redraw: () => cellsDiv.replaceChildren(cellsTable(current.cells, filter, sort)) };
  const accuracyDiv = el("div", { id: "charts" }); const curvesDiv = el("div"); const tradeoffDiv = el("div");
  const hidden = { accuracy: new Set(), curves: new Set(), tradeoff: new Set() };
  const redrawAccuracy = () => accuracyDiv.replaceChildren(accuracyChart(current.cells, hidden.accuracy, redrawAccuracy));
  const redrawCurves = () => curvesDiv.replaceChildren(curvesChart(current.runs, curveMetric.value, hidden.curves, redrawCurves, "chart-curves"));
  const redrawTradeoff = () => {
    const choices = tradeoffChoices(current.cells);
    const chosen = tradeoffAt.value || (choices.length ? choices[choices.length - 1][0] : "");
    tradeoffAt.replaceChildren(...choices.map(([key, c]) => el("option", { value: key }, c.label)));
    tradeoffAt.value = chosen;
    const choice = choices.find(([key]) => key === chosen);
    tradeoffDiv.replaceChildren(choice ? tradeoffChart(current.cells, choice[1], hidden.tradeoff, redrawTradeoff) : el("p", { class: "muted" }, "The sweep has no attack."));
  };
  curveMetric.addEventListener("change", redrawCurves);
  tradeoffAt.addEventListener("change", redrawTradeoff);
  filter.addEventListener("input", sort.redraw);
  const showRuns = (list) => {
    runs = list;
    runsDiv.replaceChildren(runsTable(sweepId, runs));
    failedDiv.replaceChildren(failedTable(current.cells, new Map(runs.map((r) => [r.run_id, r]))));
  };
  const showReport = (r) => {
    current = r;
    const found = r.runs.flatMap((run) => run.warnings.map((w) => `${run.model}/${run.defense} seed ${run.seed}: ${w}`));
    warnings.replaceChildren(...(found.length ? found.map((w) => el("li", {}, w)) : [el("li", { class: "muted" }, "none")]));
    sort.redraw(); redrawAccuracy(); redrawCurves(); redrawTradeoff();
    failedDiv.replaceChildren(failedTable(current.cells, new Map(runs.map((x) => [x.run_id, x]))));
  };
  retry.addEventListener("click", async () => {
    retry.disabled = true;
    const response = await fetch(`/api/v1/sweeps/${sweepId}/retry`, { method: "POST", credentials: "same-origin", headers: { "X-Advsweep-Action": "retry" } });
    const answer = await response.json().catch(() => ({}));
    retryNote.textContent = response.ok ? `${answer.cells_requeued} cells and ${answer.runs_requeued} runs queued again.` : `Retry refused: ${answer.error || response.statusText}`;
    retry.disabled = false;
  });
  main.replaceChildren(
    el("h1", {}, report.name, " ", el("span", { class: "muted" }, sweepId)),
    el("p", {}, "State: ", state, " ", progress, " ", retry, " ", retryNote),
    el("h2", {}, "In flight"), runningDiv,
    el("h2", {}, "Table"),
    el("p", { class: "layout" }, "rows ", rowsInput, " columns ", colsInput, " metric ", metric, " ", layoutError),
    table, notes,
    el("p", { class: "downloads" }, "Download: ", ...files.map((f) => el("a", { href: `/api/v1/sweeps/${sweepId}/files/${f}` }, f)), el("span", { class: "muted" }, "checkpoints: in the runs table")),
    el("h2", {}, "Accuracy against ε"), accuracyDiv,
    el("h2", {}, "Learning curves"), el("p", {}, "metric ", curveMetric), curvesDiv,
    el("h2", {}, "Trade-off: clean against robust accuracy"), el("p", {}, "at ", tradeoffAt), tradeoffDiv,
    el("h2", {}, "Warnings"), warnings,
    el("h2", {}, "Failed cells"), failedDiv,
    el("h2", {}, "Runs"), runsDiv,
    el("h2", {}, "Cells"), el("p", {}, "filter ", filter), cellsDiv);
  // The table `advsweep report` prints (table.md), in the layout chosen above.
  const refreshTable = async () => {
    const query = new URLSearchParams({ rows: rowsInput.value, cols: colsInput.value, metric: metric.value });
    const response = await fetch(`/api/v1/sweeps/${sweepId}/files/table.md?${query}`, { credentials: "same-origin" });
    if (!response.ok) {
      layoutError.textContent = (await response.json().catch(() => ({}))).error || response.statusText;
      return;
    }
    layoutError.textContent = "";
    const parsed = parseMarkdownTable(await response.text());
    table.replaceChildren(parsed.rows.length ? tableOf(parsed.rows, "pivot") : el("p", { class: "muted" }, "No cell is done yet."));
    notes.textContent = parsed.notes.join(" ");
  };
  const refreshRuns = async () => showRuns((await (await api(`/api/v1/sweeps/${sweepId}/runs`)).json()).runs);
  for (const input of [rowsInput, colsInput, metric]) input.addEventListener("change", () => refreshTable().catch(fail));
  await refreshTable();
  await refreshRuns();
  showReport(report);
  // Re-read the report and runs when the server says something changed: 2 s after the change
  // on a sweep of up to 1,000 cells, 2 s more per 1,000 beyond (a large sweep's report is
  // megabytes), with every change in between folded in; at once when the sweep settles. The
  // counts and the runs in flight arrive live with the events meanwhile.
  const refreshEvery = 2000 * Math.max(1, report.cells.length / 1000);
  const refresh = coalesced(async () => {
    await refreshTable();
    await refreshRuns();
    showReport(await (await api(`/api/v1/sweeps/${sweepId}`)).json());
  }, refreshEvery);
  let updates = 0;
  // The stream's first events describe what was just loaded: no refresh for them.
  let fresh = true;
  setTimeout(() => { fresh = false; }, 1000);
  const refreshUnlessFresh = () => { if (!fresh) refresh.later(); };
  follow(sweepId, (s) => {
    // How many summaries the server pushed to this page (its live updates), for tests.
    progress.dataset.updates = String(++updates);
    state.textContent = s.state;
    state.className = `state-${s.state}`;
    progress.replaceChildren(bar(s.cells), " ", counts(s.cells), s.eta_seconds === null ? "" : `, about ${duration(s.eta_seconds)} left`);
    retry.hidden = !(access.actions.includes("retry") && s.cells.failed > 0);
    // Settled: read everything once more, whatever came just before.
    if (s.state !== "running") refresh.now(); else refreshUnlessFresh();
  }, (running) => {
    runningDiv.replaceChildren(runningTable(sweepId, running));
    refreshUnlessFresh();
  });
}

// One run: where it stands, its learning curve and epochs, its cells, its attempts and the
// workers that ran them, its checkpoint.
async function runPage(sweepKey, runId) {
  const load = async () => {
    const [run, report] = await Promise.all([
      api(`/api/v1/sweeps/${encodeURIComponent(sweepKey)}/runs/${encodeURIComponent(runId)}`).then((r) => r.json()),
      api(`/api/v1/sweeps/${encodeURIComponent(sweepKey)}`).then((r) => r.json()),
    ]);
    return { run, report };
  };
  const { run: first, report: firstReport } = await load();
  const sweepId = firstReport.sweep_id;
  const hidden = new Set();
  const draw = ({ run, report }) => {
    where.textContent = `${report.name} · run ${run.run_id}`;
    const curves = el("div");
    const redraw = () => curves.replaceChildren(curvesChart([{ ...run, defense: run.defense }], "test_accuracy", hidden, redraw, "chart-run-curve"));
    redraw();
    const cells = report.cells.filter((c) => c.run_id === run.run_id);
    main.replaceChildren(
      el("h1", {}, `${settingOf(run)} seed ${run.seed}`, " ", el("span", { class: "muted" }, run.run_id)),
      el("p", {}, el("a", { href: `/sweeps/${sweepId}` }, `← ${report.name}`)),
      el("p", {}, "State: ", el("span", { id: "run-state", class: `state-${run.state}` }, run.state),
        ` · attempt ${run.attempt}/${run.max_attempts}`, workerOf(run) ? ` · on ${workerOf(run)}` : "",
        run.state === "running" ? ` · ${stage(run)}` : ""),
      run.error ? el("p", { class: "error" }, run.error) : "",
      el("p", { class: "downloads" }, run.checkpoint
        ? el("a", { id: "checkpoint", href: `/api/v1/sweeps/${sweepId}/runs/${run.run_id}/checkpoint` }, `checkpoint (epoch ${run.checkpoint.epoch}, ${(run.checkpoint.bytes / 1e6).toFixed(1)} MB, safetensors)`)
        : el("span", { class: "muted" }, "No checkpoint stored.")),
      el("h2", {}, "Learning curve"), curves,
      el("h2", {}, "Epochs"),
      el("table", { id: "epochs" },
        el("thead", {}, el("tr", {}, ...["epoch", "train loss", "train acc %", "test acc %", "seconds", "images/s"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...run.epochs.map((e) => el("tr", {},
          el("td", { class: "num" }, e.epoch), el("td", { class: "num" }, e.train_loss.toFixed(4)),
          el("td", { class: "num" }, pct(e.train_accuracy)), el("td", { class: "num" }, pct(e.test_accuracy)),
          el("td", { class: "num" }, e.seconds.toFixed(1)), el("td", { class: "num" }, e.images_per_second.toFixed(0)))))),
      el("h2", {}, "Cells"),
      el("table", { id: "run-cells" },
        el("thead", {}, el("tr", {}, ...["defense", "attack", "ε", "state", "accuracy %", "success %", "error"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...cells.map((c) => el("tr", {},
          el("td", {}, c.defense), el("td", {}, c.attack), el("td", { class: "num" }, epsLabel(c)),
          el("td", { class: `state-${c.state}` }, c.state),
          el("td", { class: "num" }, pct(c.result && c.result.accuracy)),
          el("td", { class: "num" }, c.attack === "none" ? "" : pct(c.result && c.result.attack_success_rate)),
          el("td", { class: "error" }, c.error || ""))))),
      el("h2", {}, "Attempts"),
      run.attempts.length === 0 ? el("p", { class: "muted", id: "attempts-none" }, run.state === "running" ? `The first attempt is running on ${workerOf(run)}.` : "No attempt has ended yet.") :
      el("table", { id: "attempts" },
        el("thead", {}, el("tr", {}, ...["attempt", "worker", "outcome", "reason", "ended"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...run.attempts.map((a) => el("tr", {},
          el("td", { class: "num" }, a.attempt), el("td", {}, a.worker_id || ""), el("td", {}, a.outcome),
          el("td", { class: "error" }, a.reason || ""), el("td", {}, when(a.ended_ms)))))));
  };
  draw({ run: first, report: firstReport });
  const refresh = coalesced(async () => draw(await load()), 2000);
  follow(sweepId, (s) => (s.state !== "running" ? refresh.now() : refresh.later()), refresh.later);
}

const path = location.pathname;
const runMatch = path.match(/^\/sweeps\/([^/]+)\/runs\/([^/]+)\/?$/);
const sweepMatch = path.match(/^\/sweeps\/([^/]+)\/?$/);
(runMatch ? runPage(decodeURIComponent(runMatch[1]), decodeURIComponent(runMatch[2]))
  : sweepMatch ? sweepPage(decodeURIComponent(sweepMatch[1])) : sweepsPage()).catch(fail);
