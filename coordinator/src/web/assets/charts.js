// advsweep dashboard charts: small SVG of our own (nothing from a CDN, no library to bundle).
// One drawing function serves every chart of the page: series of lines and/or marks, a mark's
// values on hover (its <title>), ± bars (seeds' spread) and a legend whose entries hide or
// show their series. A series may also carry faint lines and marks: its seeds one by one.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// The mean and sample standard deviation of `values` (0 for one value).
function meanStd(values) {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = values.length > 1 ? Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1)) : 0;
  return { mean, std, n: values.length };
}

// About five round ticks over [lo, hi].
function niceTicks(lo, hi) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

// spec: { id, xLabel, yLabel, x: {min, max, ticks: [{v, label}]}, y: {min, max, ticks, format},
//   series: [{ key, color, line: [{x, y}], marks: [{x, y, xerr, yerr, title}],
//              faint: { lines: [[{x, y}]], marks: [{x, y, title}] } }],
//   hidden: Set of keys, redraw: () => void }
// Returns a <div class="chart"> holding the SVG (id = spec.id) and its legend (`${id}-legend`).
function drawChart(spec) {
  const W = 640, H = 320, L = 56, R = 24, T = 12, B = 42;
  const { x: xs, y: ys } = spec;
  const span = (a) => (a.max > a.min ? a.max - a.min : 1);
  const px = (v) => L + (W - L - R) * ((v - xs.min) / span(xs));
  const py = (v) => T + (H - T - B) * (1 - (v - ys.min) / span(ys));
  const chart = svg("svg", { id: spec.id, viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  for (const t of ys.ticks) {
    chart.append(svg("line", { x1: L, x2: W - R, y1: py(t.v), y2: py(t.v), stroke: "#e4e7ec" }),
      svg("text", { x: L - 6, y: py(t.v) + 4, "text-anchor": "end", "font-size": 11 }, t.label));
  }
  for (const t of xs.ticks) {
    chart.append(svg("text", { x: px(t.v), y: H - B + 16, "text-anchor": "middle", "font-size": 11 }, t.label));
  }
  const midY = (T + H - B) / 2;
  chart.append(svg("text", { x: (L + W) / 2, y: H - 6, "text-anchor": "middle", "font-size": 12 }, spec.xLabel),
    svg("text", { x: 14, y: midY, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 14 ${midY})` }, spec.yLabel));
  const clampY = (v) => Math.min(ys.max, Math.max(ys.min, v));
  const clampX = (v) => Math.min(xs.max, Math.max(xs.min, v));
  const polyline = (points, attrs) => svg("polyline", { fill: "none", points: points.map((p) => `${px(p.x)},${py(p.y)}`).join(" "), ...attrs });
  for (const s of spec.series.filter((s) => !spec.hidden.has(s.key))) {
    if (s.faint) {
      const g = svg("g", { class: "seeds", "data-series": s.key, opacity: 0.35 });
      for (const line of s.faint.lines || []) g.append(polyline(line, { stroke: s.color, "stroke-width": 1 }));
      for (const m of s.faint.marks || []) g.append(svg("circle", { class: "seed", cx: px(m.x), cy: py(m.y), r: 2.5, fill: s.color }, svg("title", {}, m.title)));
      chart.append(g);
    }
    const g = svg("g", { class: "series", "data-series": s.key });
    if (s.line && s.line.length > 1) g.append(polyline(s.line, { stroke: s.color, "stroke-width": 2 }));
    for (const m of s.marks) {
      if (m.yerr > 0) g.append(svg("line", { x1: px(m.x), x2: px(m.x), y1: py(clampY(m.y + m.yerr)), y2: py(clampY(m.y - m.yerr)), stroke: s.color }));
      if (m.xerr > 0) g.append(svg("line", { x1: px(clampX(m.x - m.xerr)), x2: px(clampX(m.x + m.xerr)), y1: py(m.y), y2: py(m.y), stroke: s.color }));
      g.append(svg("circle", { cx: px(m.x), cy: py(m.y), r: 4, fill: s.color }, svg("title", {}, m.title)));
    }
    chart.append(g);
  }
  const legend = el("ul", { class: "legend", id: `${spec.id}-legend` }, ...spec.series.map((s) => {
    const item = el("li", { class: spec.hidden.has(s.key) ? "off" : "", "data-series": s.key }, el("span", { class: "swatch" }), s.key);
    item.firstChild.style.background = s.color;
    item.addEventListener("click", () => { if (spec.hidden.has(s.key)) spec.hidden.delete(s.key); else spec.hidden.add(s.key); spec.redraw(); });
    return item;
  }));
  return el("div", { class: "chart" }, chart, legend);
}

// A y axis for accuracies in [0, 1], labelled in percent.
const PERCENT_AXIS = { min: 0, max: 1, ticks: [0, 0.25, 0.5, 0.75, 1].map((v) => ({ v, label: `${100 * v}` })) };

// A y axis over `values` with round ticks (a loss, images/s).
function valueAxis(values) {
  const lo = Math.min(0, ...values); const hi = Math.max(...values, lo + 1e-9);
  const ticks = niceTicks(lo, hi);
  return { min: lo, max: Math.max(hi, ticks[ticks.length - 1]), ticks: ticks.map((v) => ({ v, label: String(v) })) };
}
