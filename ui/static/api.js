// Calls to the querier's HTTP API under the prefix the page was served with.
export const PREFIX = document.body.dataset.prefix || "";

export class APIError extends Error {
  constructor(message, type) { super(message); this.type = type; }
}

// GET (or POST for long expressions) an API path; resolves to the whole JSON body
// ({status, data, warnings}) and rejects with APIError carrying Prometheus's errorType.
export async function api(path, params = {}, signal) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const x of Array.isArray(v) ? v : [v]) body.append(k, x);
  }
  const qs = body.toString();
  const url = PREFIX + path;
  const init = qs.length > 2000
    ? { method: "POST", body, signal, headers: { "Content-Type": "application/x-www-form-urlencoded" } }
    : { signal };
  let res;
  try {
    res = await fetch(qs.length > 2000 || !qs ? url : `${url}?${qs}`, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new APIError(`cannot reach the server: ${e.message}`, "network");
  }
  let json;
  try { json = await res.json(); } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new APIError(`unexpected response (HTTP ${res.status})`, "internal");
  }
  if (json.status !== "success") throw new APIError(json.error || `HTTP ${res.status}`, json.errorType || "error");
  return json;
}

// A tiny element builder: h("td", {class: "x"}, "text", child...).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// Prometheus's label set text: name{a="1", b="2"}.
export function seriesName(metric) {
  const { __name__: name = "", ...rest } = metric || {};
  const labels = Object.keys(rest).sort().map((k) => `${k}=${JSON.stringify(rest[k])}`);
  return labels.length || !name ? `${name}{${labels.join(", ")}}` : name;
}

export function formatTime(ms) {
  if (!Number.isFinite(ms)) return "-";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.000Z$/, "Z");
}
