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

async function status(root) {
  root.replaceChildren(h("h1", {}, "Status"));
  const parts = await Promise.all([
    section("Build information", "/api/v1/status/buildinfo", (d) => kvTable(d, "buildinfo")),
    section("Runtime information", "/api/v1/status/runtimeinfo", (d) => kvTable(pretty(d), "runtimeinfo")),
    section("Endpoints", "/api/v1/stores", (d) => {
      const all = Object.values(d).flat();
      const up = all.filter((s) => !s.lastError && !s.lastCheck.startsWith("0001")).length;
      return h("p", {}, `${up} of ${all.length} endpoints healthy. `, h("a", { href: `${document.body.dataset.prefix}/stores` }, "Details"));
    }),
  ]);
  root.append(...parts);
}

export function render(root, page) { return page === "flags" ? flags(root) : status(root); }
