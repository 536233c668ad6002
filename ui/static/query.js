// The query page: panels with an expression editor, a table (instant query) or graph (range
// query) tab, Thanos's dedup/partial-response/downsampling toggles, and the state of every
// panel in the URL as Prometheus writes it (g0.expr=…&g0.tab=0&g0.range_input=1h…).
import { api, h, seriesName, APIError } from "./api.js";
import { createEditor, createExplorer } from "./editor.js";
import { renderGraph, toGrid } from "./graph.js";

const UNIT_MS = { y: 31536000000, w: 604800000, d: 86400000, h: 3600000, m: 60000, s: 1000, ms: 1 };
const RANGE_STEPS = ["1s", "10s", "1m", "5m", "15m", "30m", "1h", "2h", "6h", "12h", "1d", "2d",
  "1w", "2w", "4w", "8w", "1y", "2y"].map(parseDuration);
const MAX_TABLE_ROWS = 10000;

export function parseDuration(s) {
  const m = String(s || "").trim().match(/^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$/);
  if (!m || !s.trim()) return null;
  const [y, w, d, hh, mm, ss, ms] = [2, 4, 6, 8, 10, 12, 14].map((i) => +(m[i] || 0));
  const total = y * UNIT_MS.y + w * UNIT_MS.w + d * UNIT_MS.d + hh * UNIT_MS.h + mm * UNIT_MS.m + ss * UNIT_MS.s + ms;
  return total > 0 ? total : null;
}

export function formatDuration(ms) {
  let out = "";
  for (const [u, f] of Object.entries(UNIT_MS)) {
    if (ms >= f) { out += `${Math.floor(ms / f)}${u}`; ms %= f; }
  }
  return out || "0s";
}

// "2024-01-02 03:04:05" (UTC, as Prometheus's URLs carry it), RFC 3339 or Unix seconds -> ms.
export function parseTime(s) {
  s = String(s || "").trim();
  if (!s) return null;
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(parseFloat(s) * 1000);
  const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s.replace(" ", "T") : `${s.replace(" ", "T")}Z`;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

export function formatInputTime(ms) {
  return new Date(ms).toISOString().slice(0, 19).replace("T", " ");
}

// A panel without g<N>.tab is a table, as in Prometheus (tab 0 is the graph).
const DEFAULTS = { expr: "", tab: 1, range_input: "1h", end_input: "", moment_input: "", step_input: "",
  stacked: "0", deduplicate: "", partial_response: "", max_source_resolution: "" };
// What the server does for a toggle left at "" (not sent): Thanos's defaults, and the
// querier's --query.partial-response as its flags say (read once per page).
const serverDefaults = { deduplicate: true, partial_response: true };

// Panels from the URL's g<N>.<field> parameters, in N order; one empty panel if none.
export function panelsFromURL(search) {
  const byIndex = new Map();
  for (const [k, v] of new URLSearchParams(search)) {
    const m = k.match(/^g(\d+)\.(\w+)$/);
    if (!m) continue;
    if (!byIndex.has(+m[1])) byIndex.set(+m[1], { ...DEFAULTS });
    byIndex.get(+m[1])[m[2]] = v;
  }
  const panels = [...byIndex.keys()].sort((a, b) => a - b).map((i) => byIndex.get(i));
  for (const p of panels) p.tab = p.tab === "0" || p.tab === 0 ? 0 : 1;
  return panels.length ? panels : [{ ...DEFAULTS }];
}

export function panelsToURL(panels) {
  const q = new URLSearchParams();
  panels.forEach((p, i) => {
    for (const k of Object.keys(DEFAULTS)) {
      const v = p[k];
      if (k === "expr" || k === "tab" || k === "range_input" || (v !== "" && v !== undefined && v !== DEFAULTS[k]))
        q.set(`g${i}.${k}`, String(v));
    }
  });
  return q.toString();
}

class Panel {
  constructor(state, page) {
    this.s = state; this.page = page; this.hidden = new Set(); this.last = null; this.abort = null;
    this.editor = createEditor(state.expr, () => this.run(), (v) => { this.s.expr = v; });
    this.explorer = createExplorer((name) => this.editor.insert(name));
    this.el = h("section", { class: "panel" });
    this.render();
  }

  // Thanos's parameters; a toggle the user never touched is not sent (the server's default).
  opts() {
    const o = {};
    const bool = (v) => (v === "" ? undefined : v === "1" ? "true" : "false");
    o.dedup = bool(this.s.deduplicate);
    o.partial_response = bool(this.s.partial_response);
    o.max_source_resolution = this.s.max_source_resolution || undefined;
    return o;
  }

  check(label, key) {
    const on = this.s[key] === "" ? serverDefaults[key] : this.s[key] === "1";
    return h("label", { class: "check" }, h("input", { type: "checkbox", "data-opt": key,
      checked: on, onchange: (e) => { this.s[key] = e.target.checked ? "1" : "0"; this.run(); } }), label);
  }

  render() {
    const s = this.s;
    const tabs = h("div", { class: "tabs", role: "tablist" }, ["Graph", "Table"].map((name, i) =>
      h("button", { type: "button", role: "tab", class: s.tab === i ? "tab active" : "tab", "data-tab": i,
        onclick: () => { if (s.tab !== i) { s.tab = i; this.render(); this.run(); } } }, name)));
    const resolution = h("select", { "data-opt": "max_source_resolution", title: "Max source resolution",
      onchange: (e) => { s.max_source_resolution = e.target.value; this.run(); } },
      [["", "Server default"], ["auto", "Auto downsampling"], ["0s", "Only raw data"], ["5m", "Max 5m"], ["1h", "Max 1h"]]
        .map(([v, t]) => h("option", { value: v, selected: s.max_source_resolution === v }, t)));
    const toolbar = s.tab === 0 ? this.graphControls() : this.tableControls();
    this.body = h("div", { class: "panel-body" });
    this.status = h("div", { class: "messages" });
    this.el.replaceChildren(
      h("div", { class: "expr-row" }, this.editor.element,
        h("button", { type: "button", title: "Metrics explorer", "data-explore": "",
          onclick: () => this.explorer.toggle() }, "Metrics"),
        h("button", { type: "button", class: "primary", "data-run": "", onclick: () => this.run() }, "Execute"),
        h("button", { type: "button", class: "icon", title: "Remove panel", "data-remove": "",
          onclick: () => this.page.remove(this) }, "✕")),
      this.explorer.element,
      h("div", { class: "options" }, this.check("Use deduplication", "deduplicate"),
        this.check("Use partial response", "partial_response"), resolution),
      tabs, toolbar, this.status, this.body);
    if (this.last) this.show(this.last);
  }

  graphControls() {
    const s = this.s;
    const range = h("input", { class: "range", value: s.range_input, size: 6, title: "Range",
      onchange: (e) => { if (parseDuration(e.target.value)) { s.range_input = e.target.value.trim(); this.run(); } else e.target.value = s.range_input; } });
    const shift = (dir) => {
      const cur = parseDuration(s.range_input) || 3600000;
      const next = dir > 0 ? RANGE_STEPS.find((r) => r > cur) : [...RANGE_STEPS].reverse().find((r) => r < cur);
      if (next) { s.range_input = formatDuration(next); range.value = s.range_input; this.run(); }
    };
    const end = h("input", { class: "end", value: s.end_input, placeholder: "End time, UTC (now)", size: 19,
      onchange: (e) => { const t = parseTime(e.target.value); s.end_input = t === null ? "" : formatInputTime(t); e.target.value = s.end_input; this.run(); } });
    const move = (dir) => {
      const r = parseDuration(s.range_input) || 3600000;
      const base = parseTime(s.end_input) ?? Date.now();
      s.end_input = formatInputTime(base + (dir * r) / 2); end.value = s.end_input; this.run();
    };
    return h("div", { class: "toolbar" },
      h("div", { class: "group" }, h("button", { type: "button", onclick: () => shift(-1), title: "Shorter range" }, "−"), range,
        h("button", { type: "button", onclick: () => shift(1), title: "Longer range" }, "+")),
      h("div", { class: "group" }, h("button", { type: "button", onclick: () => move(-1), title: "Back" }, "«"), end,
        h("button", { type: "button", onclick: () => move(1), title: "Forward" }, "»"),
        h("button", { type: "button", title: "Now", onclick: () => { s.end_input = ""; end.value = ""; this.run(); } }, "now")),
      h("input", { class: "step", value: s.step_input, placeholder: "Res. (s)", size: 7, title: "Resolution (step) in seconds or a duration",
        onchange: (e) => { s.step_input = e.target.value.trim(); this.run(); } }),
      h("label", { class: "check" }, h("input", { type: "checkbox", "data-opt": "stacked", checked: s.stacked === "1",
        onchange: (e) => { s.stacked = e.target.checked ? "1" : "0"; if (this.last) this.show(this.last); this.page.save(); } }), "Stacked"));
  }

  tableControls() {
    const s = this.s;
    const at = h("input", { class: "moment", value: s.moment_input, placeholder: "Evaluation time, UTC (now)", size: 24,
      onchange: (e) => { const t = parseTime(e.target.value); s.moment_input = t === null ? "" : formatInputTime(t); e.target.value = s.moment_input; this.run(); } });
    const move = (dir) => {
      s.moment_input = formatInputTime((parseTime(s.moment_input) ?? Date.now()) + dir * 3600000);
      at.value = s.moment_input; this.run();
    };
    return h("div", { class: "toolbar" }, h("div", { class: "group" },
      h("button", { type: "button", onclick: () => move(-1), title: "Back 1h" }, "«"), at,
      h("button", { type: "button", onclick: () => move(1), title: "Forward 1h" }, "»"),
      h("button", { type: "button", onclick: () => { s.moment_input = ""; at.value = ""; this.run(); } }, "now")));
  }

  async run() {
    const s = this.s;
    this.page.save();
    if (!s.expr.trim()) { this.last = null; this.body.replaceChildren(); this.status.replaceChildren(); return; }
    this.abort?.abort();
    const abort = this.abort = new AbortController();
    const t0 = performance.now();
    this.status.replaceChildren(h("div", { class: "loading" }, "Loading…"));
    let req;
    if (s.tab === 1) {
      const t = parseTime(s.moment_input);
      req = { kind: "table", params: { query: s.expr, time: t === null ? undefined : t / 1000, ...this.opts() } };
    } else {
      const range = parseDuration(s.range_input) || 3600000;
      const end = (parseTime(s.end_input) ?? Date.now()) / 1000;
      const start = end - range / 1000;
      const stepMs = s.step_input ? (/^\d+(\.\d+)?$/.test(s.step_input) ? parseFloat(s.step_input) * 1000 : parseDuration(s.step_input)) : null;
      const step = stepMs ? stepMs / 1000 : Math.max(Math.floor(range / 250000), 1);
      req = { kind: "graph", start, end, step, params: { query: s.expr, start, end, step, ...this.opts() } };
    }
    try {
      const res = await api(req.kind === "table" ? "/api/v1/query" : "/api/v1/query_range", req.params, abort.signal);
      if (abort.signal.aborted) return;
      this.last = { ...req, res, ms: Math.round(performance.now() - t0) };
    } catch (e) {
      if (e.name === "AbortError" || abort.signal.aborted) return;
      this.last = { ...req, error: e };
    }
    this.show(this.last);
  }

  show(last) {
    const { res, error } = last;
    const msgs = [];
    if (error) msgs.push(h("div", { class: "alert error", role: "alert" },
      h("b", {}, "Error"), error instanceof APIError && error.type ? ` (${error.type}): ` : ": ", error.message));
    for (const w of res?.warnings || []) msgs.push(h("div", { class: "alert warning" }, h("b", {}, "Warning: "), w));
    for (const w of res?.infos || []) msgs.push(h("div", { class: "alert info" }, h("b", {}, "Info: "), w));
    if (res) {
      const n = Array.isArray(res.data.result) ? res.data.result.length : 1;
      msgs.push(h("div", { class: "stats" }, `Load time: ${last.ms}ms · Result series: ${n}`));
    }
    this.status.replaceChildren(...msgs);
    if (!res || (last.kind === "table") !== (this.s.tab === 1)) { this.body.replaceChildren(); return; }
    if (last.kind === "table") this.body.replaceChildren(resultTable(res.data));
    else this.drawGraph(last);
  }

  drawGraph(last) {
    const { data } = last.res;
    if (data.resultType !== "matrix") {
      this.body.replaceChildren(h("div", { class: "alert info" }, `A range query returned a ${data.resultType}.`));
      return;
    }
    if (!data.result.length) { this.body.replaceChildren(h("div", { class: "empty" }, "No datapoints found.")); return; }
    const width = this.body.clientWidth || this.el.clientWidth - 24;
    last.grid ??= toGrid(data.result, last.start, last.end, last.step);
    renderGraph(this.body, last.grid, { start: last.start, end: last.end, step: last.step,
      stacked: this.s.stacked === "1", hidden: this.hidden, width,
      onToggle: (name, only, all) => {
        if (only) { const alone = this.hidden.size === all.length - 1 && !this.hidden.has(name); this.hidden = new Set(alone ? [] : all.filter((x) => x !== name)); }
        else if (this.hidden.has(name)) this.hidden.delete(name); else this.hidden.add(name);
        this.drawGraph(last);
      } });
  }
}

function valueText(v) { return v === undefined ? "" : v[1]; }

function histogramText(hist) {
  return hist ? `count=${hist[1].count} sum=${hist[1].sum}` : "";
}

export function resultTable(data) {
  const rows = [];
  const { resultType, result } = data;
  if (resultType === "vector") {
    for (const s of result.slice(0, MAX_TABLE_ROWS))
      rows.push([seriesName(s.metric), s.value ? valueText(s.value) : histogramText(s.histogram)]);
  } else if (resultType === "matrix") {
    for (const s of result.slice(0, MAX_TABLE_ROWS))
      rows.push([seriesName(s.metric), h("div", { class: "points" }, (s.values || []).map((p) => h("div", {}, `${p[1]} @${p[0]}`)),
        (s.histograms || []).map((p) => h("div", {}, `${histogramText(p)} @${p[0]}`)))]);
  } else {
    rows.push([resultType, result[1]]);
  }
  if (!rows.length) return h("div", { class: "empty" }, "Empty query result");
  return h("div", {}, h("table", { class: "result" }, h("tbody", {}, rows.map(([a, b]) =>
    h("tr", {}, h("td", { class: "series" }, a), h("td", { class: "value" }, b))))),
  result.length > MAX_TABLE_ROWS ? h("div", { class: "alert warning" }, `Showing ${MAX_TABLE_ROWS} of ${result.length} series.`) : null);
}

class QueryPage {
  constructor(root) {
    this.root = root;
    this.list = h("div", { class: "panels" });
    this.panels = panelsFromURL(location.search).map((s) => new Panel(s, this));
    root.replaceChildren(this.list, h("button", { type: "button", class: "add", "data-add": "",
      onclick: () => this.add() }, "Add Panel"));
    this.list.replaceChildren(...this.panels.map((p) => p.el));
    for (const p of this.panels) if (p.s.expr) p.run();
    let timer;
    addEventListener("resize", () => { clearTimeout(timer); timer = setTimeout(() => {
      for (const p of this.panels) if (p.last && p.s.tab === 0) p.show(p.last); }, 150); });
  }

  add() {
    const p = new Panel({ ...DEFAULTS }, this);
    this.panels.push(p); this.list.append(p.el); this.save();
    p.editor.textarea.focus();
  }

  remove(panel) {
    panel.abort?.abort();
    this.panels = this.panels.filter((p) => p !== panel);
    panel.el.remove(); this.save();
  }

  save() {
    history.replaceState(null, "", `?${panelsToURL(this.panels.map((p) => p.s))}`);
  }
}

export async function render(root) {
  try {
    const { data } = await api("/api/v1/status/flags");
    if (data["query.partial-response"] !== undefined) serverDefaults.partial_response = data["query.partial-response"] === "true";
  } catch { /* keep Thanos's default */ }
  return new QueryPage(root);
}
