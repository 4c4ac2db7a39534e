// Fleet: every host with samples, its status, the age of its newest sample, open incidents and
// its highest anomaly score in the range; sortable; a row opens the host.
import { get } from "../api.js";
import { ago, badge, el, num, rangeSeconds, SEVERITY_RANK, table } from "../util.js";

// A host whose newest sample is older than this is shown as stale (10 collection intervals).
const STALE_SECONDS = 600;

export async function fleetPage(ctx) {
  const now = Date.now();
  const since = new Date(now - rangeSeconds(ctx.range) * 1000).toISOString();
  const [hosts, incidents, scores] = await Promise.all([
    get("/metrics/hosts"),
    get("/incidents", { status: "open", limit: 1000 }),
    get("/anomaly-scores", { start: since, limit: 10000 }),
  ]);
  const open = new Map();
  for (const inc of incidents.incidents) {
    const entry = open.get(inc.host) || { count: 0, worst: null };
    entry.count += 1;
    if (entry.worst === null || SEVERITY_RANK[inc.severity] > SEVERITY_RANK[entry.worst]) entry.worst = inc.severity;
    open.set(inc.host, entry);
  }
  const peak = new Map();
  const latest = new Map();
  for (const s of scores.scores) {
    const p = peak.get(s.host);
    if (!p || s.score > p.score) peak.set(s.host, s);
    if (!latest.has(s.host)) latest.set(s.host, s); // newest first
  }
  const rows = hosts.hosts.map((h) => {
    const age = (now - Date.parse(h.newest)) / 1000;
    const inc = open.get(h.host);
    let status = "ok";
    if (age > STALE_SECONDS) status = "stale";
    if (latest.get(h.host)?.is_anomaly) status = "anomalous";
    if (inc) status = inc.worst === "critical" || inc.worst === "high" ? "incident" : "warning";
    return {
      host: h.host,
      status,
      age,
      newest: h.newest,
      incidents: inc ? inc.count : 0,
      worst: inc ? inc.worst : null,
      score: peak.get(h.host)?.score ?? null,
    };
  });
  const columns = [
    { key: "host", label: "Host", render: (r) => el("a", { href: `#/host/${encodeURIComponent(r.host)}` }, r.host) },
    { key: "status", label: "Status", value: (r) => ["ok", "stale", "anomalous", "warning", "incident"].indexOf(r.status), render: (r) => badge(r.status) },
    { key: "age", label: "Newest sample", numeric: true, render: (r) => `${ago(r.newest, now)} ago` },
    { key: "incidents", label: "Open incidents", numeric: true, render: (r) => r.incidents ? el("span", {}, String(r.incidents), " ", badge(r.worst)) : "0" },
    { key: "score", label: "Highest anomaly score", numeric: true, render: (r) => num(r.score) },
  ];
  const total = rows.reduce((n, r) => n + r.incidents, 0);
  return el("section", { class: "page", id: "fleet" },
    el("h1", {}, "Fleet"),
    el("p", { class: "muted" }, `${rows.length} hosts, ${total} open incidents; highest score over the range (newest 10,000 scores).`),
    table(columns, rows, {
      sortKey: "status", desc: true,
      onRow: (r) => { location.hash = `#/host/${encodeURIComponent(r.host)}`; },
      empty: "No samples stored yet: start a collector or generate synthetic data.",
    }));
}
