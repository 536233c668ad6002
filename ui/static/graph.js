// The range-query graph: one SVG path per series (never one node per point), axes, a legend
// whose entries toggle series, a hover tooltip and an optional stacked mode.
import { h, seriesName } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const PAD = { left: 64, right: 16, top: 10, bottom: 26 };
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
  43200, 86400, 172800, 604800, 1209600, 2592000, 7776000, 31536000];

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

export function color(i) {
  return i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360} 60% 48%)`;
}

// SI-suffixed value text for axes: 1.5k, 20M, 3m (milli).
export function formatValue(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a === 0) return "0";
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"], [1, ""], [1e-3, "m"], [1e-6, "µ"]];
  for (const [f, u] of units) if (a >= f) return `${+(v / f).toPrecision(4)}${u}`;
  return v.toExponential(2);
}

function niceStep(range, count) {
  const raw = range / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function timeLabel(t, step) {
  const iso = new Date(t * 1000).toISOString();
  if (step >= 86400) return iso.slice(5, 10);
  const hm = step < 60 ? iso.slice(11, 19) : iso.slice(11, 16);
  return hm === "00:00" ? iso.slice(5, 10) : hm;
}

// Series of a matrix result on the query's step grid (NaN where a series has no point);
// computed once per result, re-used when the legend, stacking or the width change.
export function toGrid(result, start, end, step) {
  const n = Math.max(1, Math.floor((end - start) / step + 1e-9) + 1);
  const fill = (ys, points, value) => {
    for (let i = 0; i < points.length; i++) {
      const k = Math.round((points[i][0] - start) / step);
      if (k >= 0 && k < n) ys[k] = value(points[i][1]);
    }
  };
  return result.map((s, i) => {
    const ys = new Float64Array(n).fill(NaN);
    fill(ys, s.values || [], parseFloat);
    fill(ys, s.histograms || [], (hist) => parseFloat(hist.count));
    return { metric: s.metric, name: seriesName(s.metric), ys, color: color(i), index: i };
  });
}

function stackUp(series) {
  const n = series[0]?.ys.length || 0;
  const base = new Float64Array(n);
  return series.map((s) => {
    const lo = Float64Array.from(base), hi = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      const y = s.ys[k];
      hi[k] = Number.isNaN(y) ? NaN : base[k] + y;
      if (!Number.isNaN(y)) base[k] += y;
    }
    return { ...s, lo, hi };
  });
}

// Runs of consecutive points of a series (gaps split them), each reduced to the first and last
// point of every pixel column plus the column's lowest and highest: a path costs about as much
// for 11,000 points as for the ~2,000 the plot has room for, and looks the same.
function columnRuns(vals, x0, dx) {
  const runs = [];
  let run = null, col = NaN;
  for (let k = 0; k < vals.length; k++) {
    if (Number.isNaN(vals[k])) { run = null; col = NaN; continue; }
    if (run === null) { run = []; runs.push(run); }
    const c = Math.round(x0 + k * dx);
    if (c !== col) { run.push([k, k, k, k]); col = c; continue; }  // first, min, max, last
    const cell = run[run.length - 1];
    if (vals[k] < vals[cell[1]]) cell[1] = k;
    if (vals[k] > vals[cell[2]]) cell[2] = k;
    cell[3] = k;
  }
  return runs;
}

function seriesPaths(s, stacked, px, py) {
  const pt = (k, v) => `${px(k).toFixed(1)},${py(v).toFixed(1)}`;
  let line = "", area = "";
  for (const run of columnRuns(s.hi, px(0), px(1) - px(0))) {
    const ks = run.flatMap((cell) => [...new Set(cell[1] < cell[2] ? cell : [cell[0], cell[2], cell[1], cell[3]])]);
    line += "M" + ks.map((k) => pt(k, s.hi[k])).join("L") + (ks.length === 1 ? "h0.01" : "");
    if (stacked) {
      const last = run.map((cell) => cell[3]);
      area += "M" + last.map((k) => pt(k, s.hi[k])).join("L") +
        "L" + last.reverse().map((k) => pt(k, s.lo[k])).join("L") + "Z";
    }
  }
  return { line, area };
}

// Renders a toGrid() result into `root`; `hidden` is a Set of series names kept across re-renders.
export function renderGraph(root, grid, { start, end, step, stacked, hidden, width, height = 320, onToggle }) {
  const visible = grid.filter((s) => !hidden.has(s.name));
  const drawn = stacked ? stackUp(visible) : visible.map((s) => ({ ...s, lo: null, hi: s.ys }));
  let lo = Infinity, hi = -Infinity;
  for (const s of drawn) for (const y of s.hi) if (Number.isFinite(y)) { if (y < lo) lo = y; if (y > hi) hi = y; }
  if (stacked) lo = Math.min(lo, 0);
  if (lo === Infinity) { lo = 0; hi = 1; }
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const ystep = niceStep(hi - lo, 6);
  lo = Math.floor(lo / ystep) * ystep; hi = Math.ceil(hi / ystep) * ystep;  // whole ticks at both ends
  const W = Math.max(width || 800, 300), H = height;
  const x = (t) => PAD.left + ((t - start) / Math.max(end - start, 1e-9)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);
  const tAt = (k) => start + k * step;

  const chart = svg("svg", { class: "graph", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  const axes = svg("g", { class: "axes" });
  for (let v = Math.ceil(lo / ystep) * ystep; v <= hi + ystep * 1e-9; v += ystep) {
    const py = y(v).toFixed(1);
    axes.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: py, y2: py, class: "gridline" }));
    const label = svg("text", { x: PAD.left - 6, y: py, "text-anchor": "end", "dominant-baseline": "middle" });
    label.textContent = formatValue(Math.abs(v) < ystep * 1e-9 ? 0 : v);
    axes.append(label);
  }
  const span = end - start, want = Math.max(2, Math.floor((W - PAD.left - PAD.right) / 90));
  const tstep = TIME_STEPS.find((s) => span / s <= want) || TIME_STEPS.at(-1);
  for (let t = Math.ceil(start / tstep) * tstep; t <= end; t += tstep) {
    const px = x(t).toFixed(1);
    axes.append(svg("line", { x1: px, x2: px, y1: PAD.top, y2: H - PAD.bottom, class: "gridline" }));
    const label = svg("text", { x: px, y: H - PAD.bottom + 16, "text-anchor": "middle" });
    label.textContent = timeLabel(t, tstep);
    axes.append(label);
  }
  chart.append(axes);

  const paths = new Map();
  for (const s of drawn) {
    const { line, area } = seriesPaths(s, stacked, (k) => x(tAt(k)), y);
    const g = svg("g", { class: "series", "data-series": s.name });
    if (area) g.append(svg("path", { d: area, fill: s.color, class: "area" }));
    g.append(svg("path", { d: line, stroke: s.color, class: "line" }));
    paths.set(s.name, g);
    chart.append(g);
  }

  const cursor = svg("line", { class: "cursor", y1: PAD.top, y2: H - PAD.bottom, visibility: "hidden" });
  const dot = svg("circle", { r: 4, class: "dot", visibility: "hidden" });
  const overlay = svg("rect", { x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right,
    height: H - PAD.top - PAD.bottom, class: "overlay" });
  chart.append(cursor, dot, overlay);
  const tooltip = h("div", { class: "tooltip", hidden: true });

  let highlighted = null;
  const hide = () => {
    tooltip.hidden = true;
    cursor.setAttribute("visibility", "hidden"); dot.setAttribute("visibility", "hidden");
    highlighted?.classList.remove("highlight"); highlighted = null;
  };
  overlay.addEventListener("mouseleave", hide);
  overlay.addEventListener("mousemove", (e) => {
    const box = chart.getBoundingClientRect();
    const scale = W / box.width;  // the SVG shrinks with its container (CSS max-width)
    const mx = (e.clientX - box.left) * scale, my = (e.clientY - box.top) * scale;
    const t = start + ((mx - PAD.left) / (W - PAD.left - PAD.right)) * (end - start);
    const k = Math.min(Math.max(Math.round((t - start) / step), 0), (drawn[0]?.hi.length || 1) - 1);
    const at = drawn.filter((s) => !Number.isNaN(s.hi[k]));
    if (!at.length) { hide(); return; }
    const near = at.reduce((a, b) => (Math.abs(y(a.hi[k]) - my) <= Math.abs(y(b.hi[k]) - my) ? a : b));
    const px = x(tAt(k));
    cursor.setAttribute("x1", px); cursor.setAttribute("x2", px); cursor.setAttribute("visibility", "visible");
    dot.setAttribute("cx", px); dot.setAttribute("cy", y(near.hi[k])); dot.setAttribute("fill", near.color);
    dot.setAttribute("visibility", "visible");
    highlighted?.classList.remove("highlight");
    highlighted = paths.get(near.name); highlighted?.classList.add("highlight");
    const others = at.filter((s) => s !== near).sort((a, b) => b.ys[k] - a.ys[k]).slice(0, 7);
    const row = (s, cls) => h("div", { class: `tt-row ${cls}` },
      h("span", { class: "swatch", style: `background:${s.color}` }),
      h("span", { class: "tt-name" }, s.name), h("b", {}, String(s.ys[k])));
    tooltip.replaceChildren(
      h("div", { class: "tt-time" }, new Date(tAt(k) * 1000).toISOString().replace("T", " ").replace(".000Z", "Z")),
      row(near, "tt-near"), ...others.map((s) => row(s, "")),
      ...(at.length > others.length + 1 ? [h("div", { class: "tt-more" }, `+${at.length - others.length - 1} more`)] : []));
    tooltip.hidden = false;
    const left = px + 14 + 320 > W ? Math.max(px - 334, 0) : px + 14;
    tooltip.style.left = `${left / scale}px`; tooltip.style.top = `${Math.max(my - 10, 0) / scale}px`;
  });

  const legend = h("div", { class: "legend" }, grid.map((s) => h("div", {
    class: `legend-item${hidden.has(s.name) ? " off" : ""}`, title: "Click: show/hide. Ctrl/⌘-click: show only this.",
    "data-series": s.name,
    onclick: (e) => onToggle(s.name, e.ctrlKey || e.metaKey, grid.map((g) => g.name)),
  }, h("span", { class: "swatch", style: `background:${s.color}` }), h("span", {}, s.name))));
  root.replaceChildren(h("div", { class: "chart" }, chart, tooltip), legend);
}
