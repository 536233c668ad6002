// The stores page: every StoreAPI endpoint of the querier, grouped by type, with its health.
import { api, h, formatTime } from "./api.js";

const ZERO = "0001-01-01T00:00:00Z";
const UNBOUNDED = 9e15; // beyond this a min/max time is "no bound" (±2^63 in the API)

function bound(ms) {
  return ms <= -UNBOUNDED ? "-∞" : ms >= UNBOUNDED ? "+∞" : formatTime(ms);
}

function ago(iso) {
  if (!iso || iso.startsWith("0001")) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : `${Math.floor(s / 3600)}h ago`;
}

export function health(st) {
  if (st.lastError) return "down";
  return !st.lastCheck || st.lastCheck === ZERO ? "unknown" : "up";
}

function labelSets(sets) {
  if (!sets?.length) return h("span", { class: "muted" }, "none");
  return h("div", {}, sets.map((ls) => h("div", { class: "labelset" },
    Object.entries(ls).map(([k, v]) => h("span", { class: "badge" }, `${k}="${v}"`)))));
}

async function load(root) {
  let data;
  try { data = (await api("/api/v1/stores")).data; } catch (e) {
    root.replaceChildren(h("div", { class: "alert error" }, `Error loading stores: ${e.message}`));
    return;
  }
  const types = Object.keys(data).sort();
  if (!types.length) { root.replaceChildren(h("div", { class: "empty" }, "No endpoints configured.")); return; }
  root.replaceChildren(...types.map((type) => h("section", { class: "card" },
    h("h2", {}, `${type} `, h("small", { class: "muted" }, `${data[type].length}`)),
    h("table", { class: "grid stores", "data-type": type },
      h("thead", {}, h("tr", {}, ["Endpoint", "Health", "Last check", "Last error", "Label sets", "Min time", "Max time"].map((c) => h("th", {}, c)))),
      h("tbody", {}, data[type].map((st) => h("tr", { "data-endpoint": st.name },
        h("td", {}, st.name),
        h("td", {}, h("span", { class: `health ${health(st)}` }, health(st).toUpperCase())),
        h("td", { title: st.lastCheck }, ago(st.lastCheck)),
        h("td", { class: "error-text" }, st.lastError || ""),
        h("td", {}, labelSets(st.labelSets)),
        ...(st.minTime === 0 && st.maxTime === 0 ? [h("td", {}, "-"), h("td", {}, "-")]
          : st.minTime > st.maxTime ? [h("td", { class: "muted" }, "no data"), h("td", { class: "muted" }, "no data")]
          : [h("td", {}, bound(st.minTime)), h("td", {}, bound(st.maxTime))]))))))));
}

export function render(root) {
  const body = h("div", {});
  root.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Stores"),
    h("button", { type: "button", onclick: () => load(body) }, "Refresh")), body);
  load(body);
  setInterval(() => { if (!document.hidden) load(body); }, 10000);
}
