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

// RFC 4180 CSV (quoted fields, doubled quotes).
function parseCsv(text) {
  const rows = []; let row = []; let field = ""; let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") { row.push(field); field = ""; }
    else if (ch === "\n") { row.push(field); rows.push(row); row = []; field = ""; }
    else if (ch !== "\r") field += ch;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}

function tableOf(rows, id) {
  const [head, ...body] = rows;
  return el("table", { id },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...body.map((r) => el("tr", {}, ...r.map((v) => el("td", { class: /^-?[0-9.]+$/.test(v) ? "num" : "" }, v))))));
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

async function sweepPage(id) {
  const report = await (await api(`/api/v1/sweeps/${encodeURIComponent(id)}`)).json();
  where.textContent = report.name;
  const state = el("span", { id: "state", class: `state-${report.state}` }, report.state);
  const progress = el("span", { id: "progress" });
  const table = el("div", { id: "table" });
  const files = ["table.csv", "cells.csv", "epochs.csv", "sweep.json"];
  main.replaceChildren(
    el("h1", {}, report.name, " ", el("span", { class: "muted" }, report.sweep_id)),
    el("p", {}, "State: ", state, " ", progress),
    el("h2", {}, "Accuracy (%)"), table,
    el("p", { class: "downloads" }, "Download: ", ...files.map((f) => el("a", { href: `/api/v1/sweeps/${report.sweep_id}/files/${f}` }, f))));
  const refreshTable = async () => {
    const csv = await (await api(`/api/v1/sweeps/${report.sweep_id}/files/table.csv`)).text();
    table.replaceChildren(tableOf(parseCsv(csv), "pivot"));
  };
  await refreshTable();
  const events = new EventSource(`/api/v1/sweeps/${report.sweep_id}/events`);
  events.addEventListener("summary", async (e) => {
    const s = JSON.parse(e.data);
    state.textContent = s.state;
    state.className = `state-${s.state}`;
    progress.replaceChildren(bar(s.cells), " ", counts(s.cells));
    await refreshTable().catch(fail);
  });
  events.addEventListener("done", () => events.close());
}

const path = location.pathname;
const sweep = path.match(/^\/sweeps\/([^/]+)\/?$/);
(sweep ? sweepPage(decodeURIComponent(sweep[1])) : sweepsPage()).catch(fail);
