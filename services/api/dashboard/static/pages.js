// The four pages, one module (a cold load fetches few files): Fleet, Host, Models, Incidents.
// Each is `async (ctx) => element`; ctx: {range, arg, quiet, stale()}.
import { ago, badge, el, get, num, optional, pct, post, rangeSeconds, SEVERITY_RANK, table, when } from "./core.js";
import { failureChart, metricChart } from "./charts.js";

// ---------------------------------------------------------------- fleet

// Fleet: every host with samples, its status, the age of its newest sample, open incidents, its
// highest anomaly score and failure probability in the range; sortable; a row opens the host.

// A host whose newest sample is older than this is shown as stale (10 collection intervals).
const STALE_SECONDS = 600;

export async function fleetPage(ctx) {
  const now = Date.now();
  const since = new Date(now - rangeSeconds(ctx.range) * 1000).toISOString();
  const [hosts, incidents, scores, failures] = await Promise.all([
    get("/metrics/hosts"),
    get("/incidents", { status: "open", limit: 1000 }),
    get("/anomaly-scores", { start: since, limit: 10000 }),
    optional("/failure-predictions", { start: since, limit: 10000 }),
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
  const failing = new Map(); // host -> its most probable prediction in the range
  for (const f of failures?.predictions || []) {
    const p = failing.get(f.host);
    if (!p || f.failure_probability > p.failure_probability) failing.set(f.host, f);
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
      failure: failing.get(h.host) ?? null,
    };
  });
  const columns = [
    { key: "host", label: "Host", render: (r) => el("a", { href: `#/host/${encodeURIComponent(r.host)}` }, r.host) },
    { key: "status", label: "Status", value: (r) => ["ok", "stale", "anomalous", "warning", "incident"].indexOf(r.status), render: (r) => badge(r.status) },
    { key: "age", label: "Newest sample", numeric: true, render: (r) => `${ago(r.newest, now)} ago` },
    { key: "incidents", label: "Open incidents", numeric: true, render: (r) => r.incidents ? el("span", {}, String(r.incidents), " ", badge(r.worst)) : "0" },
    { key: "score", label: "Highest anomaly score", numeric: true, render: (r) => num(r.score) },
    { key: "failure", label: "Highest failure probability", numeric: true,
      value: (r) => r.failure?.failure_probability ?? null,
      render: (r) => r.failure
        ? el("span", { class: "failure", title: r.failure.predicted_failure_type || "" },
          `${pct(r.failure.failure_probability)} in ${r.failure.horizon_minutes} min`,
          r.failure.will_fail ? [" ", badge("warning")] : null)
        : "–" },
  ];
  const total = rows.reduce((n, r) => n + r.incidents, 0);
  return el("section", { class: "page", id: "fleet" },
    el("h1", {}, "Fleet"),
    el("p", { class: "muted" }, `${rows.length} hosts, ${total} open incidents; highest anomaly score and failure probability over the range (newest 10,000 scores and predictions).`),
    table(columns, rows, {
      sortKey: "status", desc: true,
      onRow: (r) => { location.hash = `#/host/${encodeURIComponent(r.host)}`; },
      empty: "No samples stored yet: start a collector or generate synthetic data.",
    }));
}

// ---------------------------------------------------------------- host

// Host: each metric as a time series (bucketed in the database) with the detector's expected
// band and anomaly marks, the forecast with its 80 % band and predicted breaches, and the
// incident timeline with feedback buttons.

const POINTS = 400;
const BAND_SCORES = 1500; // the newest scores' expected bands (a day of 1-minute samples)
const MARKS = 2000;
const FAILURE_POINTS = 10000; // three horizons: over two days of 1-minute predictions

const sec = (iso) => Math.floor(Date.parse(iso) / 1000);

async function feedback(scoreId, kind, out) {
  out.textContent = "…";
  try {
    const r = await post(`/anomaly-scores/${scoreId}/feedback`, { feedback: kind });
    out.textContent = `stored ${r.feedback.replace("_", " ")}: threshold ${num(r.threshold_before, 4)} → ${num(r.threshold_after, 4)}`;
    out.className = "stored";
  } catch (error) {
    out.textContent = `not stored: ${error.message}`;
    out.className = "error";
  }
}

function feedbackButtons(findScore) {
  const out = el("span", { class: "muted" });
  const click = (kind) => async () => {
    const id = await findScore();
    if (id === null) { out.textContent = "no stored score to judge"; return; }
    await feedback(id, kind, out);
  };
  return el("span", { class: "feedback" },
    el("button", { type: "button", class: "tp", onclick: click("true_positive") }, "True positive"),
    el("button", { type: "button", class: "fp", onclick: click("false_positive") }, "False positive"),
    out);
}

function incidentItem(inc, host) {
  const d = inc.details || {};
  const top = (d.top_metrics || []).map((m) => m.metric).join(", ");
  const scoreAt = async () => {
    const at = d.peak_at || d.last_seen || inc.started_at;
    const found = await get("/anomaly-scores", { host, start: at, end: at, limit: 1 });
    return found.scores.length ? found.scores[0].id : null;
  };
  return el("li", { class: `incident ${inc.status}`, dataset: { incidentId: inc.id } },
    el("div", { class: "when" }, when(inc.started_at)),
    el("div", {},
      badge(inc.severity), " ", badge(inc.status), " ", el("strong", {}, inc.title),
      el("div", { class: "muted" }, inc.type, inc.metric ? ` · ${inc.metric}` : "", top ? ` · top: ${top}` : "",
        inc.resolved_at ? ` · resolved ${when(inc.resolved_at)}` : ""),
      inc.description ? el("div", { class: "desc" }, inc.description) : null,
      el("div", { class: "analysis" }),
      inc.type === "ML_ANOMALY" ? feedbackButtons(scoreAt) : null));
}

/** Each incident's latest analysis (summary, cause, actions) written into its timeline item. */
async function showAnalyses(host, node) {
  const list = await optional("/analyses", { host, limit: 100 });
  const seen = new Set();
  for (const a of list?.analyses || []) { // newest first: the first per incident is its latest
    if (a.incident_id === null || seen.has(a.incident_id)) continue;
    seen.add(a.incident_id);
    const slot = node.querySelector(`[data-incident-id="${a.incident_id}"] .analysis`);
    if (!slot) continue;
    const actions = (a.recommendations || []).slice(0, 3)
      .map((r) => (r.action ? `${r.action}${r.reason ? `: ${r.reason}` : ""}` : JSON.stringify(r)));
    slot.replaceChildren(
      el("div", {}, el("strong", {}, "Analysis"), ` (${a.provider}${a.category ? `, ${a.category}` : ""}`,
        a.confidence !== null && a.confidence !== undefined ? `, confidence ${pct(a.confidence)}` : "", "): ", a.summary),
      a.root_cause ? el("div", { class: "muted" }, `Cause: ${a.root_cause}`) : null,
      actions.length ? el("ul", { class: "actions" }, actions.map((t) => el("li", {}, t))) : null);
  }
}

/** Per metric, [t, lower, upper] of the detector's expected band, from the newest scores. */
async function bands(win) {
  const scores = await get("/anomaly-scores", { ...win, limit: BAND_SCORES });
  const expected = {};
  for (const s of scores.scores) {
    for (const c of s.contributions) {
      if (c.lower === null || c.upper === null || c.lower === undefined) continue;
      (expected[c.metric] ||= []).push([sec(s.timestamp), c.lower, c.upper]);
    }
  }
  for (const points of Object.values(expected)) points.sort((a, b) => a[0] - b[0]);
  return expected;
}

/** The failure probability per horizon (newest first in ``predictions``): a chart over the range
 *  and, per horizon, the latest and the highest probability. */
function failureCard(predictions, { xMin, xMax }) {
  const byHorizon = {};
  for (const p of predictions) (byHorizon[p.horizon_minutes] ||= []).push(p);
  const horizons = Object.keys(byHorizon).map(Number).sort((a, b) => a - b);
  if (!horizons.length) {
    return { node: el("div", { class: "card failure-card" }, el("h3", {}, "Failure probability"),
      el("p", { class: "muted" }, "No failure predictions in the range (train the failure predictor).")) };
  }
  const target = el("div", { class: "chart", dataset: { chart: "failure" } });
  const rows = horizons.map((h) => {
    const list = byHorizon[h];
    const latest = list[0];
    const top = list.reduce((a, b) => (b.failure_probability > a.failure_probability ? b : a));
    const kind = latest.predicted_failure_type;
    return el("tr", { dataset: { horizon: h } },
      el("td", {}, `${h} min`),
      el("td", { class: "num" }, pct(latest.failure_probability)),
      el("td", { class: "num" }, pct(top.failure_probability)),
      el("td", { class: "num", title: when(top.timestamp) }, when(top.timestamp).slice(5, 16)),
      el("td", { title: kind ? `pointing at ${kind}` : "" },
        latest.will_fail ? badge(kind ? kind.replace(/_/g, " ") : "warning", "warning") : badge("none", "ok")));
  });
  const oldest = predictions[predictions.length - 1];
  const node = el("div", { class: "card failure-card" },
    el("div", { class: "card-head" },
      el("h3", {}, "Failure probability"),
      el("span", { class: "muted" }, `per horizon, ${predictions.length.toLocaleString("en-US")} predictions since ${when(oldest.timestamp)}`)),
    el("div", { class: "failure-body" },
      target,
      el("div", { class: "table-wrap" }, el("table", { class: "failure-table" },
        el("thead", {}, el("tr", {}, ["Horizon", "Latest", "Highest", "Highest at (UTC)", "Warning now"].map((t) => el("th", {}, t)))),
        el("tbody", {}, rows)))));
  const points = {};
  for (const h of horizons) {
    points[h] = byHorizon[h].map((p) => [sec(p.timestamp), p.failure_probability]).reverse();
  }
  return { node, draw: () => failureChart(target, { horizons: points, xMin, xMax }) };
}

export async function hostPage(ctx) {
  performance.mark("host:start");
  const host = ctx.arg;
  const span = rangeSeconds(ctx.range);
  const end = new Date();
  const start = new Date(end.getTime() - span * 1000);
  const hoursAhead = Math.min(24, Math.max(1, Math.ceil(span / 3600 / 4)));
  const win = { host, start: start.toISOString(), end: end.toISOString() };
  // The expected bands come from up to 1,500 stored scores (a megabyte of JSON): read after the
  // charts are drawn (afterMount), so they do not hold up the first paint.
  const [series, marks, forecast, alerts, incidents, failures] = await Promise.all([
    get("/metrics/series", { ...win, points: POINTS }),
    get("/anomaly-scores", { ...win, anomalies_only: true, limit: MARKS }),
    optional("/forecast", { host, hours_ahead: hoursAhead }),
    optional("/forecast/alerts", { host, hours_ahead: hoursAhead }),
    get("/incidents", { host, limit: 50 }),
    optional("/failure-predictions", { ...win, limit: FAILURE_POINTS }),
  ]);
  performance.mark("host:data"); // the reads are in (the benchmark's breakdown)
  const anomalies = {};
  for (const s of marks.scores) {
    for (const c of s.contributions.slice(0, 1)) { // the metric most to blame
      (anomalies[c.metric] ||= []).push([sec(s.timestamp), c.value, s.id]);
    }
  }
  const forecasts = {};
  let xMax = sec(win.end);
  for (const f of forecast?.forecasts || []) {
    forecasts[f.metric] = f.points.map((p) => [sec(p.timestamp), p.yhat, p.yhat_lower, p.yhat_upper]);
    if (f.points.length) xMax = Math.max(xMax, sec(f.points[f.points.length - 1].timestamp));
  }
  const breaches = {};
  for (const a of alerts?.alerts || []) (breaches[a.metric] ||= []).push(a);
  const thresholds = alerts?.thresholds || {};
  const xMin = sec(win.start);

  const cards = [];
  const pending = []; // (expected bands) => chart
  for (const [metric, values] of Object.entries(series.series)) {
    const target = el("div", { class: "chart", dataset: { metric } });
    const last = [...values.avg].reverse().find((v) => v !== null);
    const b = breaches[metric] || [];
    cards.push(el("div", { class: "card" },
      el("div", { class: "card-head" },
        el("h3", {}, metric),
        el("span", { class: "muted" }, `latest ${num(last ?? null)}`),
        (anomalies[metric] || []).length ? badge(`${anomalies[metric].length} anomalous`, "anomalous") : null,
        b.length ? badge(`breach ${when(b[0].at).slice(5, 16)} (p ${pct(b[0].probability)})`, "breach") : null),
      target));
    pending.push((expected) => metricChart(target, {
      metric,
      step: series.step_seconds,
      observed: { timestamps: series.timestamps, ...values },
      expected: expected[metric] || [],
      anomalies: (anomalies[metric] || []).filter(([t]) => t >= xMin),
      forecast: forecasts[metric] || [],
      breaches: b.map((a) => [sec(a.at), a.predicted_value]),
      threshold: b.length ? thresholds[metric] : null,
      // The expected band is known only where the metric was among a score's top metrics:
      // points further apart than this are not joined.
      bandGap: Math.max(series.step_seconds, 300),
      xMin,
      xMax: forecasts[metric] ? xMax : sec(win.end),
    }));
  }

  const failure = failureCard(failures?.predictions || [], { xMin, xMax: sec(win.end) });
  if (failure.draw) pending.push(failure.draw);

  const recent = marks.scores.slice(0, 10);
  const node = el("section", { class: "page", id: "host" },
    el("h1", {}, el("a", { href: "#/fleet" }, "Fleet"), " / ", host),
    el("p", { class: "muted" },
      `${series.counts.reduce((a, b) => a + b, 0).toLocaleString("en-US")} samples in ${series.timestamps.length} buckets of ${series.step_seconds} s`,
      forecast ? ` · forecast ${hoursAhead} h ahead (80 % band)` : " · no forecast yet (train the forecaster)",
      ` · ${marks.scores.length} anomalous scores`),
    el("div", { class: "legend" },
      el("span", { class: "key observed" }, "observed (avg, min–max)"),
      el("span", { class: "key expected" }, "expected band"),
      el("span", { class: "key anomaly" }, "anomaly"),
      el("span", { class: "key forecast" }, "forecast, 80 % band"),
      el("span", { class: "key breach" }, "predicted breach")),
    failure.node,
    el("div", { class: "grid" }, cards),
    el("div", { class: "columns" },
      el("div", {},
        el("h2", {}, "Incidents"),
        incidents.incidents.length
          ? el("ul", { class: "timeline" }, incidents.incidents.map((i) => incidentItem(i, host)))
          : el("p", { class: "muted" }, "No incidents for this host.")),
      el("div", {},
        el("h2", {}, "Latest anomalous scores"),
        recent.length ? el("ul", { class: "timeline scores" }, recent.map((s) => el("li", { dataset: { scoreId: s.id } },
          el("div", { class: "when" }, when(s.timestamp)),
          el("div", {}, badge(s.severity), ` score ${num(s.score, 4)} ≥ ${num(s.threshold, 4)} · `,
            s.contributions.map((c) => c.metric).join(", "),
            s.feedback ? el("span", { class: "muted" }, ` · judged ${s.feedback.replace("_", " ")}`) : null,
            el("div", {}, feedbackButtons(async () => s.id)))))) : el("p", { class: "muted" }, "None in the range."))));
  node.afterMount = () => {
    for (const draw of pending) draw({});
    bands(win).then((expected) => {
      if (ctx.stale() || !document.body.contains(node)) return;
      for (const draw of pending) draw(expected);
      const n = (window.dashboard.bands?.n || 0) + 1;
      window.dashboard.bands = { n, at: performance.now() };
    }).catch((error) => console.warn("expected bands not loaded", error));
    showAnalyses(host, node).catch((error) => console.warn("analyses not loaded", error));
  };
  return node;
}

// ---------------------------------------------------------------- models

// Models: every version per family and host (and metric), its stored evaluation, activation.

// The figures worth a glance, when a model's stored evaluation has them.
const FIGURES = ["event_precision", "event_recall", "mae", "mase", "coverage", "beats_naive",
  "threshold", "contamination"];

function figures(metrics) {
  const flat = {};
  const walk = (obj, prefix) => {
    for (const [k, v] of Object.entries(obj || {})) {
      if (v && typeof v === "object" && !Array.isArray(v)) walk(v, `${prefix}${k}.`);
      else flat[`${prefix}${k}`] = v;
    }
  };
  walk(metrics, "");
  const shown = Object.entries(flat).filter(([k, v]) => v !== null && FIGURES.some((f) => k === f || k.endsWith(`.${f}`)));
  // "evaluation.synthetic.scenarios.cpu_spike.event_recall" reads as "cpu_spike event_recall".
  const short = (k) => k.split(".").slice(-2).join(" ").replace(/^overall /, "");
  return shown.slice(0, 6).map(([k, v]) => el("span", { class: "figure", title: k }, `${short(k)} ${typeof v === "number" ? num(v) : String(v)}`));
}

function row(model, refresh) {
  const out = el("span", { class: "muted" });
  const canActivate = model.name === "anomaly_detector" && model.status !== "active";
  const activate = async () => {
    out.textContent = "…";
    try {
      const r = await post(`/models/${model.id}/activate`);
      out.textContent = `active (was ${r.previous_model_id ?? "none"})`;
      out.className = "stored";
      setTimeout(refresh, 600);
    } catch (error) {
      out.textContent = error.message;
      out.className = "error";
    }
  };
  return el("tr", {},
    el("td", { class: "num" }, `v${model.version}`),
    el("td", {}, badge(model.status)),
    el("td", {}, model.model_type),
    el("td", {}, when(model.created_at)),
    el("td", { class: "num" }, model.sample_count?.toLocaleString("en-US") ?? "–"),
    el("td", {}, figures(model.metrics)),
    el("td", {},
      canActivate ? el("button", { type: "button", onclick: activate }, model.activated_at ? "Roll back to this" : "Activate") : null,
      el("details", {}, el("summary", {}, "evaluation"), el("pre", {}, JSON.stringify(model.metrics, null, 1))),
      out));
}

export async function modelsPage(ctx) {
  const list = await get("/models", { limit: 1000 });
  const groups = new Map();
  for (const m of list.models) {
    const key = [m.name, m.host || "(any host)", m.metric || ""].join(" · ").replace(/ · $/, "");
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(m);
  }
  const refresh = () => window.dashboard?.render();
  const sections = [...groups.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([key, models]) =>
    el("div", { class: "card model-group" },
      el("h3", {}, key, " ", el("span", { class: "muted" }, `${models.length} version${models.length > 1 ? "s" : ""}`)),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Version", "Status", "Type", "Trained", "Samples", "Evaluation", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, models.sort((a, b) => b.version - a.version).map((m) => row(m, refresh)))))));
  return el("section", { class: "page", id: "models" },
    el("h1", {}, "Models"),
    el("p", { class: "muted" }, `${list.count} versions in ${groups.size} families. Activating an older anomaly detector rolls back to it (admin key).`),
    sections.length ? sections : el("p", { class: "muted" }, "No model trained yet."));
}

// ---------------------------------------------------------------- incidents

// Incidents: open and recent, filtered by type, severity and host; resolve.

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
