// The bucket viewer: blocks on one shared timeline, a card per external label set and
// resolution, a row per compaction level; a click on a block shows its meta.json in short.
import { api, h, formatTime } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const LEVEL_COLORS = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"];
const ROW = 22, LEFT = 70, RIGHT = 10;
const RESOLUTIONS = { 0: "raw", 300000: "5m", 3600000: "1h" };

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function labelsText(labels) {
  const e = Object.entries(labels || {}).sort(([a], [b]) => a.localeCompare(b));
  return e.length ? `{${e.map(([k, v]) => `${k}="${v}"`).join(", ")}}` : "{}";
}

export function resolution(b) { return b.thanos?.downsample?.resolution ?? 0; }

function bytes(n) {
  if (!n) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  const i = Math.min(Math.floor(Math.log2(n) / 10), u.length - 1);
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${u[i]}`;
}

function details(b) {
  const rows = [
    ["ULID", b.ulid], ["Start", formatTime(b.minTime)], ["End", formatTime(b.maxTime)],
    ["Duration", `${((b.maxTime - b.minTime) / 3600000).toFixed(2)}h`],
    ["Resolution", RESOLUTIONS[resolution(b)] || `${resolution(b)}ms`], ["Level", b.compaction?.level],
    ["Series", b.stats?.numSeries], ["Samples", b.stats?.numSamples], ["Chunks", b.stats?.numChunks],
    ["Size", bytes(b.size_bytes)], ["Labels", labelsText(b.thanos?.labels)], ["Source", b.thanos?.source || "-"],
    ["Sources", (b.compaction?.sources || []).length], ["Marked for deletion", b.deletion_marked ? "yes" : "no"],
  ];
  return h("table", { class: "grid kv block-details" }, h("tbody", {}, rows.map(([k, v]) =>
    h("tr", {}, h("th", {}, k), h("td", {}, v ?? "-")))));
}

function groupCard(key, blocks, lo, hi, width, onPick) {
  const levels = Math.max(...blocks.map((b) => b.compaction?.level || 1));
  const H = levels * ROW + 4;
  const x = (t) => LEFT + ((t - lo) / Math.max(hi - lo, 1)) * (width - LEFT - RIGHT);
  const chart = svg("svg", { class: "timeline", width, height: H, viewBox: `0 0 ${width} ${H}` });
  for (let l = 1; l <= levels; l++) {
    const label = svg("text", { x: 4, y: (l - 1) * ROW + 15 });
    label.textContent = `level ${l}`;
    chart.append(label);
  }
  for (const b of blocks) {
    const level = b.compaction?.level || 1;
    const rect = svg("rect", { x: x(b.minTime).toFixed(1), y: (level - 1) * ROW + 2,
      width: Math.max(x(b.maxTime) - x(b.minTime) - 1, 2).toFixed(1), height: ROW - 4, rx: 2,
      fill: LEVEL_COLORS[(level - 1) % LEVEL_COLORS.length], class: b.deletion_marked ? "block marked" : "block",
      "data-ulid": b.ulid });
    const title = svg("title");
    title.textContent = `${b.ulid}\n${formatTime(b.minTime)} – ${formatTime(b.maxTime)}\nlevel ${level}, ` +
      `${b.stats?.numSeries ?? "?"} series, ${b.stats?.numSamples ?? "?"} samples, ${bytes(b.size_bytes)}` +
      (b.deletion_marked ? "\nmarked for deletion" : "");
    rect.append(title);
    rect.addEventListener("click", () => onPick(b));
    chart.append(rect);
  }
  return h("section", { class: "card block-group", "data-group": key },
    h("h2", { class: "plain" }, key, " ", h("small", { class: "muted" }, `${blocks.length} blocks`)), chart);
}

async function load(root, info) {
  let data;
  try { data = (await api("/api/v1/blocks")).data; } catch (e) {
    root.replaceChildren(h("div", { class: "alert error" }, `Error loading blocks: ${e.message}`));
    return;
  }
  const complete = data.blocks.filter((b) => !b.partial);
  const partial = data.blocks.filter((b) => b.partial);
  info.textContent = `${complete.length} blocks · refreshed ${data.refreshedAt.replace("T", " ").slice(0, 19)}Z`;
  const parts = [];
  if (data.err) parts.push(h("div", { class: "alert error" }, `Last listing failed: ${data.err}`));
  if (partial.length) parts.push(h("div", { class: "alert warning" },
    `Partial uploads (no meta.json): ${partial.map((b) => b.ulid).join(", ")}`));
  if (!complete.length) { root.replaceChildren(...parts, h("div", { class: "empty" }, "No blocks in the bucket.")); return; }
  const lo = Math.min(...complete.map((b) => b.minTime)), hi = Math.max(...complete.map((b) => b.maxTime));
  const groups = new Map();
  for (const b of complete) {
    const labels = b.thanos?.labels || {};
    const name = data.label && labels[data.label] !== undefined ? `${data.label}=${labels[data.label]}` : labelsText(labels);
    const key = `${name} · ${RESOLUTIONS[resolution(b)] || `${resolution(b)}ms`}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(b);
  }
  const width = Math.max(root.clientWidth - 26, 400);
  const pane = h("div", { class: "card block-pane" }, h("div", { class: "muted" }, "Click a block for its details."));
  const pick = (b) => pane.replaceChildren(h("h2", { class: "plain" }, "Block"), details(b));
  const axis = h("div", { class: "timeline-axis muted" }, h("span", {}, formatTime(lo)), h("span", {}, formatTime(hi)));
  root.replaceChildren(...parts, axis,
    ...[...groups.keys()].sort().map((k) => groupCard(k, groups.get(k), lo, hi, width, pick)), pane);
}

export function render(root) {
  const info = h("span", { class: "muted" });
  const body = h("div", {});
  root.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Blocks"), info,
    h("button", { type: "button", onclick: () => load(body, info) }, "Reload")), body);
  load(body, info);
}
