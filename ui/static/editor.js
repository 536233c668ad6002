// The expression editor: a textarea over a highlighted copy of its text, and a completion
// list fed by the API (metric names, label names, label values) and PromQL's vocabulary.
import { api, h } from "./api.js";

export const FUNCTIONS = ("abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil " +
  "changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year " +
  "days_in_month deg delta deriv exp floor histogram_avg histogram_count histogram_fraction " +
  "histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta " +
  "increase irate label_join label_replace last_over_time ln log10 log2 mad_over_time " +
  "max_over_time min_over_time minute month pi predict_linear present_over_time " +
  "quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label " +
  "sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh " +
  "time timestamp vector year").split(" ");
export const AGGREGATIONS = ("sum min max avg group stddev stdvar count count_values bottomk topk " +
  "quantile limitk limit_ratio").split(" ");
const KEYWORDS = "by without on ignoring group_left group_right offset bool and or unless".split(" ");
const KEYWORD_SET = new Set(KEYWORDS);
const AGG_SET = new Set(AGGREGATIONS);

const TOKEN = new RegExp([
  /(#[^\n]*)/,                                   // 1 comment
  /("(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|`[^`]*`?)/, // 2 string
  /(\b\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*\b)/, // 3 duration
  /(\b(?:0x[0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?|Inf|NaN)\b)/, // 4 number
  /([A-Za-z_:][A-Za-z0-9_:]*)/,                  // 5 identifier
  /(=~|!~|!=|==|<=|>=|[-+*/%^<>=@])/,            // 6 operator
].map((r) => r.source).join("|"), "g");

function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }

// Highlighted HTML of an expression; identifiers are classified by what follows them.
export function highlight(text) {
  let out = "", last = 0, depth = 0;
  for (const m of text.matchAll(TOKEN)) {
    const before = text.slice(last, m.index);
    for (const c of before) depth += c === "{" ? 1 : c === "}" ? -1 : 0;
    out += esc(before);
    let cls = m[1] ? "comment" : m[2] ? "string" : m[3] ? "duration" : m[4] ? "number" : m[6] ? "op" : "";
    if (m[5]) {
      const rest = text.slice(m.index + m[0].length).trimStart();
      if (depth > 0) cls = "label";
      else if (KEYWORD_SET.has(m[0])) cls = "keyword";
      else if (AGG_SET.has(m[0]) && /^(\(|by\b|without\b)/.test(rest)) cls = "agg";
      else if (rest.startsWith("(")) cls = "func";
      else cls = "metric";
    }
    out += `<span class="t-${cls}">${esc(m[0])}</span>`;
    last = m.index + m[0].length;
  }
  return out + esc(text.slice(last)) + "\n";
}

// What to complete at the caret: {kind, prefix, metric, label}.
export function completionContext(text, caret) {
  const upto = text.slice(0, caret);
  const brace = upto.lastIndexOf("{"), close = upto.lastIndexOf("}");
  if (brace > close) {
    const metric = (upto.slice(0, brace).match(/([A-Za-z_:][A-Za-z0-9_:]*)\s*$/) || [])[1] || "";
    const inner = upto.slice(brace + 1);
    const value = inner.match(/([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)$/);
    if (value) return { kind: "value", label: value[1], prefix: value[3], metric };
    const name = inner.match(/(?:^|[,{]\s*|\s)([A-Za-z_][A-Za-z0-9_]*)?$/);
    if (name && !/"[^"]*$/.test(inner.replace(/"(?:[^"\\]|\\.)*"/g, "")))
      return { kind: "label", prefix: name[1] || "", metric };
    return null;
  }
  const grouping = upto.match(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)$/);
  if (grouping) {
    const prefix = (grouping[2].match(/([A-Za-z_][A-Za-z0-9_]*)$/) || [])[1] || "";
    return { kind: "label", prefix, metric: "" };
  }
  if (/\[[^\]]*$/.test(upto)) return null;
  const ident = upto.match(/([A-Za-z_:][A-Za-z0-9_:]*)$/);
  if (!ident) return null;
  return { kind: "name", prefix: ident[1] };
}

// Cached look-ups against the API; failures yield nothing (completion is best effort).
const cache = new Map();
function cached(key, load) {
  if (!cache.has(key)) cache.set(key, load().catch(() => { cache.delete(key); return []; }));
  return cache.get(key);
}
export const metricNames = () => cached("__name__", () => api("/api/v1/label/__name__/values").then((r) => r.data));
const labelNames = (metric) => cached(`labels:${metric}`, () =>
  api("/api/v1/labels", metric ? { "match[]": metric } : {}).then((r) => r.data.filter((n) => n !== "__name__")));
const labelValues = (label, metric) => cached(`values:${label}:${metric}`, () =>
  api(`/api/v1/label/${encodeURIComponent(label)}/values`, metric ? { "match[]": metric } : {}).then((r) => r.data));

export async function candidates(ctx) {
  if (!ctx) return [];
  let items;
  if (ctx.kind === "value") items = (await labelValues(ctx.label, ctx.metric)).map((v) => ({ text: v, type: "value" }));
  else if (ctx.kind === "label") items = (await labelNames(ctx.metric)).map((v) => ({ text: v, type: "label" }));
  else {
    items = [
      ...FUNCTIONS.map((f) => ({ text: f, type: "function", suffix: "(" })),
      ...AGGREGATIONS.map((f) => ({ text: f, type: "aggregation", suffix: "(" })),
      ...KEYWORDS.map((f) => ({ text: f, type: "keyword" })),
      ...(await metricNames()).map((m) => ({ text: m, type: "metric" })),
    ];
  }
  const p = ctx.prefix.toLowerCase();
  const starts = items.filter((i) => i.text.toLowerCase().startsWith(p));
  const contains = p ? items.filter((i) => !i.text.toLowerCase().startsWith(p) && i.text.toLowerCase().includes(p)) : [];
  return [...starts, ...contains].filter((i) => i.text !== ctx.prefix).slice(0, 50);
}

// Builds the editor; onRun is called on Enter (Shift+Enter inserts a newline).
export function createEditor(value, onRun, onChange) {
  const pre = h("pre", { class: "hl", "aria-hidden": "true" });
  const ta = h("textarea", { class: "expr", rows: 1, spellcheck: "false", autocomplete: "off",
    placeholder: "Expression (press Shift+Enter for newlines)", "aria-label": "Expression" });
  const list = h("ul", { class: "completions", role: "listbox", hidden: true });
  const wrap = h("div", { class: "editor" }, pre, ta, list);
  let items = [], active = 0, ctx = null, seq = 0;

  const sync = () => {
    pre.innerHTML = highlight(ta.value);
    ta.style.height = "auto";
    ta.style.height = `${ta.scrollHeight}px`;
    pre.scrollLeft = ta.scrollLeft;
  };
  const close = () => { list.hidden = true; items = []; };
  const show = () => {
    list.replaceChildren(...items.map((it, i) => h("li", {
      class: i === active ? "active" : "", role: "option",
      onmousedown: (e) => { e.preventDefault(); accept(i); },
    }, h("span", { class: `t-${it.type === "function" || it.type === "aggregation" ? "func" : it.type === "value" ? "string" : it.type}` }, it.text),
      h("small", {}, it.type))));
    list.hidden = items.length === 0;
    list.children[active]?.scrollIntoView({ block: "nearest" });
  };
  const complete = async () => {
    const mine = ++seq;
    ctx = completionContext(ta.value, ta.selectionStart);
    const found = await candidates(ctx);
    if (mine !== seq) return;
    items = found; active = 0;
    if (ta === document.activeElement) show();
  };
  const accept = (i) => {
    const it = items[i];
    if (!it || !ctx) return;
    const caret = ta.selectionStart;
    const start = caret - ctx.prefix.length;
    const text = it.text + (it.suffix && ta.value[caret] !== "(" ? it.suffix : "");
    ta.setRangeText(text, start, caret, "end");
    close(); sync(); onChange?.(ta.value);
    ta.focus();
  };

  ta.value = value || "";
  ta.addEventListener("input", () => { sync(); onChange?.(ta.value); complete(); });
  ta.addEventListener("scroll", () => { pre.scrollTop = ta.scrollTop; pre.scrollLeft = ta.scrollLeft; });
  ta.addEventListener("blur", () => setTimeout(close, 100));
  ta.addEventListener("keydown", (e) => {
    if (!list.hidden && items.length) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
        show(); e.preventDefault(); return;
      }
      if (e.key === "Tab" || (e.key === "Enter" && !e.shiftKey)) { accept(active); e.preventDefault(); return; }
      if (e.key === "Escape") { close(); e.preventDefault(); return; }
    }
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); close(); onRun(); }
  });
  queueMicrotask(sync);
  const insert = (text) => {
    ta.setRangeText(text, ta.selectionStart, ta.selectionEnd, "end");
    sync(); onChange?.(ta.value); ta.focus();
  };
  return { element: wrap, textarea: ta, insert, get value() { return ta.value; }, refresh: sync };
}

// Prometheus's metrics explorer: a filterable list of every metric name; a click inserts it.
export function createExplorer(onPick) {
  const filter = h("input", { type: "search", placeholder: "Filter metric names", class: "explorer-filter" });
  const list = h("ul", { class: "explorer-list" });
  const box = h("div", { class: "explorer", hidden: true }, filter, list);
  let names = [];
  const show = () => {
    const q = filter.value.toLowerCase();
    const hits = names.filter((n) => n.toLowerCase().includes(q));
    list.replaceChildren(...hits.slice(0, 500).map((n) => h("li", { onclick: () => { box.hidden = true; onPick(n); } }, n)),
      hits.length > 500 ? h("li", { class: "muted" }, `… ${hits.length - 500} more, filter to narrow`) : "");
  };
  filter.addEventListener("input", show);
  filter.addEventListener("keydown", (e) => { if (e.key === "Escape") box.hidden = true; });
  return { element: box, async toggle() {
    box.hidden = !box.hidden;
    if (box.hidden) return;
    names = await metricNames();
    show(); filter.focus();
  } };
}
