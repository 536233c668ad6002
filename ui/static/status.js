// Status pages: build and runtime information, and the command-line flags.
import { api, h } from "./api.js";

function kvTable(obj, cls) {
  return h("table", { class: `grid kv ${cls}` }, h("tbody", {}, Object.entries(obj).map(([k, v]) =>
    h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v))))));
}

const BYTES = /Bytes$/;
function pretty(info) {
  const out = {};
  for (const [k, v] of Object.entries(info)) {
    out[k] = BYTES.test(k) && typeof v === "number" ? `${(v / 1048576).toFixed(1)} MiB` : v;
  }
  return out;
}

async function section(title, path, shape) {
  try {
    const { data } = await api(path);
    return h("section", { class: "card" }, h("h2", {}, title), shape(data));
  } catch (e) {
    return h("section", { class: "card" }, h("h2", {}, title), h("div", { class: "alert error" }, e.message));
  }
}

async function flags(root) {
  const filter = h("input", { type: "search", placeholder: "Filter flags", class: "filter" });
  const holder = h("div", {});
  root.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Command-Line Flags"), filter), holder);
  const card = await section("Flags", "/api/v1/status/flags", (d) => kvTable(
    Object.fromEntries(Object.entries(d).sort(([a], [b]) => a.localeCompare(b))), "flags"));
  holder.replaceChildren(card);
  filter.addEventListener("input", () => {
    const q = filter.value.toLowerCase();
    for (const tr of card.querySelectorAll("tr")) tr.hidden = q && !tr.textContent.toLowerCase().includes(q);
  });
}

// Head gauges of in-process ingestors (promring up), shown under TSDB rather than runtime.
const HEAD_KEYS = ["headSeries", "headChunkBytes", "samplesAppended"];
const TOP_METRICS = 'topk(10, count by (__name__) ({__name__=~".+"}))';

function split(info, keys, keep) {
  return Object.fromEntries(Object.entries(info).filter(([k]) => keys.includes(k) === keep));
}

// Series count per metric name is a query over every series: run only when asked.
function topMetrics() {
  const out = h("div", {});
  const button = h("button", { type: "button", "data-top-metrics": "", onclick: async () => {
    button.disabled = true;
    out.replaceChildren(h("div", { class: "loading" }, "Counting series…"));
    try {
      const { data } = await api("/api/v1/query", { query: TOP_METRICS });
      const rows = data.result.map((s) => [s.metric.__name__, s.value[1]]);
      out.replaceChildren(rows.length ? h("table", { class: "grid top-metrics" },
        h("thead", {}, h("tr", {}, h("th", {}, "Metric name"), h("th", {}, "Series"))),
        h("tbody", {}, rows.map(([n, c]) => h("tr", {}, h("td", {}, n), h("td", {}, c)))))
        : h("div", { class: "empty" }, "No series."));
    } catch (e) {
      out.replaceChildren(h("div", { class: "alert error" }, e.message));
    }
    button.disabled = false;
  } }, "Top 10 metrics by series count");
  return h("div", {}, h("p", { class: "muted" }, "Counts series over all endpoints with ",
    h("code", {}, TOP_METRICS), "."), button, out);
}

async function status(root) {
  root.replaceChildren(h("h1", {}, "Status"));
  let head = {};
  const parts = await Promise.all([
    section("Build information", "/api/v1/status/buildinfo", (d) => kvTable(d, "buildinfo")),
    section("Runtime information", "/api/v1/status/runtimeinfo", (d) => kvTable(pretty(d), "runtimeinfo")),
    section("Process", "/api/v1/status/process", (d) => {
      head = split(d, HEAD_KEYS, true);
      return kvTable(pretty(split(d, HEAD_KEYS, false)), "process");
    }),
    section("Endpoints", "/api/v1/stores", (d) => {
      const all = Object.values(d).flat();
      const up = all.filter((s) => !s.lastError && !s.lastCheck.startsWith("0001")).length;
      return h("p", {}, `${up} of ${all.length} endpoints healthy. `, h("a", { href: `${document.body.dataset.prefix}/stores` }, "Details"));
    }),
  ]);
  parts.splice(3, 0, h("section", { class: "card" }, h("h2", {}, "TSDB status"),
    Object.keys(head).length ? kvTable(pretty(head), "tsdb") : null, topMetrics()));
  root.append(...parts);
}

export function render(root, page) { return page === "flags" ? flags(root) : status(root); }
