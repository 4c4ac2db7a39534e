// Incidents: open and recent, filtered by type, severity and host; resolve.
import { get, post } from "../api.js";
import { badge, el, SEVERITY_RANK, table, when } from "../util.js";

const filters = { status: "", type: "", severity: "", host: "" };

export async function incidentsPage(ctx) {
  const list = await get("/incidents", { status: filters.status, type: filters.type, host: filters.host, limit: 500 });
  const all = await get("/incidents", { limit: 1000 });
  const types = [...new Set(all.incidents.map((i) => i.type))].sort();
  const hosts = [...new Set(all.incidents.map((i) => i.host))].sort();
  const rows = list.incidents.filter((i) => !filters.severity || i.severity === filters.severity);
  const rerender = () => window.dashboard?.render();
  const select = (name, label, options) => el("label", {}, label,
    el("select", { name, onchange: (e) => { filters[name] = e.target.value; rerender(); } },
      el("option", { value: "" }, "all"),
      options.map((o) => el("option", { value: o, selected: filters[name] === o }, o))));
  const resolve = (inc) => async (event) => {
    event.stopPropagation();
    const button = event.target;
    button.disabled = true;
    try {
      await post(`/incidents/${inc.id}/resolve`, { reason: "Resolved from the dashboard." });
      rerender();
    } catch (error) {
      button.disabled = false;
      button.title = error.message;
      button.textContent = `Failed: ${error.status}`;
    }
  };
  const columns = [
    { key: "started_at", label: "Opened", render: (r) => when(r.started_at) },
    { key: "severity", label: "Severity", value: (r) => SEVERITY_RANK[r.severity], render: (r) => badge(r.severity) },
    { key: "status", label: "Status", render: (r) => badge(r.status) },
    { key: "type", label: "Type" },
    { key: "host", label: "Host", render: (r) => el("a", { href: `#/host/${encodeURIComponent(r.host)}`, onclick: (e) => e.stopPropagation() }, r.host) },
    { key: "title", label: "Title", render: (r) => el("span", { title: r.description || "" }, r.title) },
    { key: "resolved_at", label: "Resolved", render: (r) => r.resolved_at ? when(r.resolved_at) : "" },
    { key: "action", label: "", sortable: false, render: (r) => r.status === "open" ? el("button", { type: "button", class: "resolve", onclick: resolve(r) }, "Resolve") : "" },
  ];
  return el("section", { class: "page", id: "incidents" },
    el("h1", {}, "Incidents"),
    el("div", { class: "filters" },
      select("status", "Status", ["open", "resolved"]),
      select("type", "Type", types),
      select("severity", "Severity", ["critical", "high", "medium", "low"]),
      select("host", "Host", hosts),
      el("span", { class: "muted" }, `${rows.length} shown`)),
    table(columns, rows, { sortKey: "started_at", desc: true, empty: "No incidents match." }));
}
