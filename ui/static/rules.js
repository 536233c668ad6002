// The alerts and rules pages: the rule groups of the rulers among the querier's endpoints
// (/api/v1/rules, fanned out over Thanos's Rules API), as Prometheus's and Thanos's UIs list them.
import { api, h } from "./api.js";

const STATES = ["firing", "pending", "inactive"];

function labels(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return entries.map(([k, v]) => h("span", { class: "badge" }, `${k}="${v}"`));
}

function ago(iso) {
  if (!iso || iso.startsWith("0001")) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : `${Math.floor(s / 3600)}h ago`;
}

function health(rule) {
  const ok = rule.health === "ok";
  return h("span", { class: `health ${ok ? "up" : rule.health === "err" ? "down" : "unknown"}` },
    (rule.health || "unknown").toUpperCase());
}

function alertsTable(alerts) {
  return h("table", { class: "grid alert-instances" },
    h("thead", {}, h("tr", {}, ["Labels", "State", "Active since", "Value", "Annotations"].map((c) => h("th", {}, c)))),
    h("tbody", {}, alerts.map((a) => h("tr", { "data-state": a.state },
      h("td", {}, labels(a.labels)),
      h("td", {}, h("span", { class: `alert-state ${a.state}` }, a.state.toUpperCase())),
      h("td", { title: a.activeAt || "" }, ago(a.activeAt)),
      h("td", {}, a.value),
      h("td", {}, Object.entries(a.annotations || {}).map(([k, v]) => h("div", {}, h("b", {}, `${k}: `), v)))))));
}

function renderAlerts(groups) {
  const rules = groups.flatMap((g) => g.rules.filter((r) => r.type === "alerting").map((r) => ({ ...r, group: g.name })));
  if (!rules.length) return [h("div", { class: "empty" }, "No alerting rules.")];
  return STATES.map((state) => {
    const of = rules.filter((r) => r.state === state);
    return h("section", { class: "card", "data-state": state },
      h("h2", {}, `${state[0].toUpperCase()}${state.slice(1)} `, h("small", { class: "muted" }, `${of.length}`)),
      of.map((r) => h("details", { class: "alert-rule", "data-rule": r.name, open: state !== "inactive" },
        h("summary", {}, h("b", {}, r.name), " ", h("small", { class: "muted" }, `${r.group} · ${r.alerts.length} active`)),
        h("pre", { class: "rule-query" }, r.query),
        h("div", {}, "for ", `${r.duration}s`, r.keepFiringFor ? ` · keep firing for ${r.keepFiringFor}s` : "", " · labels: ", labels(r.labels)),
        r.alerts.length ? alertsTable(r.alerts) : null)));
  });
}

function renderRules(groups) {
  if (!groups.length) return [h("div", { class: "empty" }, "No rule groups (no ruler among the endpoints).")];
  return groups.map((g) => h("section", { class: "card rule-group", "data-group": g.name },
    h("h2", {}, g.name, " ", h("small", { class: "muted" }, `${g.file} · every ${g.interval}s · evaluated ${ago(g.lastEvaluation)}`)),
    h("table", { class: "grid rules" },
      h("thead", {}, h("tr", {}, ["Rule", "Health", "Last evaluation", "Evaluation time", "Error"].map((c) => h("th", {}, c)))),
      h("tbody", {}, g.rules.map((r) => h("tr", { "data-rule": r.name, "data-type": r.type },
        h("td", {}, h("div", {}, h("b", {}, r.type === "alerting" ? "alert: " : "record: "), r.name),
          h("pre", { class: "rule-query" }, r.query), labels(r.labels)),
        h("td", {}, health(r)),
        h("td", { title: r.lastEvaluation }, ago(r.lastEvaluation)),
        h("td", {}, `${(r.evaluationTime * 1000).toFixed(1)}ms`),
        h("td", { class: "error-text" }, r.lastError || "")))))));
}

async function load(body, page) {
  let data;
  try { data = (await api("/api/v1/rules")).data; } catch (e) {
    body.replaceChildren(h("div", { class: "alert error" }, `Error loading rules: ${e.message}`));
    return;
  }
  body.replaceChildren(...(page === "alerts" ? renderAlerts(data.groups) : renderRules(data.groups)));
}

export function render(root, page) {
  const body = h("div", {});
  root.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, page === "alerts" ? "Alerts" : "Rules"),
    h("button", { type: "button", onclick: () => load(body, page) }, "Refresh")), body);
  load(body, page);
  setInterval(() => { if (!document.hidden) load(body, page); }, 10000);
}
