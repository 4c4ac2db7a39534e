// The dashboard's plumbing in one module (a cold load fetches few files): the API client,
// element and formatting helpers, the sortable table.

// The gateway's API as seen from the dashboard: the key from sessionStorage, JSON in and out.
const KEY = "autofix-ml.key";
const PREFIX = "/api/ml";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

export const auth = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
  onMissing: () => {},
};

function query(params) {
  const out = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") out.set(name, String(value));
  }
  const text = out.toString();
  return text ? `?${text}` : "";
}

async function call(method, path, { params, body } = {}) {
  const headers = { Accept: "application/json" };
  const key = auth.key;
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(PREFIX + path + query(params), init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    if (response.status === 401) auth.onMissing();
    throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : data);
  }
  return data;
}

export const get = (path, params) => call("GET", path, { params });
export const post = (path, body) => call("POST", path, { body });

/** A read that may be absent (no model yet: 409, unknown host: 404): null instead of an error. */
export async function optional(path, params) {
  try {
    return await get(path, params);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 409)) return null;
    throw error;
  }
}

// Small helpers: building elements, formatting numbers and times, the selected range.

/** el("td", {class: "x", onclick: f}, "text", child) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const RANGES = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

export function rangeSeconds(name) {
  return RANGES[name] || RANGES["24h"];
}

export function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toLocaleString("en-US");
}

export function pct(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "–";
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 48 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

export function badge(text, kind = text) {
  return el("span", { class: `badge ${kind}` }, text);
}

export const SEVERITY_RANK = { low: 0, medium: 1, high: 2, critical: 3 };

/** A sortable table: columns [{key, label, value(row), render(row), numeric}]. */
export function table(columns, rows, { sortKey, desc = false, onRow, empty = "Nothing yet." } = {}) {
  const state = { key: sortKey || columns[0].key, desc };
  const wrap = el("div", { class: "table-wrap" });
  const draw = () => {
    const col = columns.find((c) => c.key === state.key) || columns[0];
    const value = col.value || ((r) => r[col.key]);
    const sorted = [...rows].sort((a, b) => {
      const x = value(a), y = value(b);
      const cmp = x === y ? 0 : x === null || x === undefined ? 1 : y === null || y === undefined
        ? -1 : x < y ? -1 : 1;
      return state.desc ? -cmp : cmp;
    });
    const head = el("tr", {}, columns.map((c) => el("th", {
      class: c.sortable === false ? "" : "sortable",
      "aria-sort": c.key === state.key ? (state.desc ? "descending" : "ascending") : null,
      onclick: c.sortable === false ? null : () => {
        state.desc = state.key === c.key ? !state.desc : false;
        state.key = c.key;
        draw();
      },
    }, c.label, c.key === state.key ? (state.desc ? " ▾" : " ▴") : "")));
    const body = sorted.length
      ? sorted.map((r) => el("tr", { class: onRow ? "clickable" : "", onclick: onRow ? () => onRow(r) : null },
        columns.map((c) => el("td", { class: c.numeric ? "num" : "" },
          c.render ? c.render(r) : (c.value ? c.value(r) : r[c.key]))))) 
      : [el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, empty))];
    wrap.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
  };
  draw();
  return wrap;
}
