// Host: each metric as a time series (bucketed in the database) with the detector's expected
// band and anomaly marks, the forecast with its 80 % band and predicted breaches, and the
// incident timeline with feedback buttons.
import { get, optional, post } from "../api.js";
import { metricChart } from "../charts.js";
import { badge, el, num, pct, rangeSeconds, when } from "../util.js";

const POINTS = 400;
const BAND_SCORES = 1500; // the newest scores' expected bands (a day of 1-minute samples)
const MARKS = 2000;

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
  return el("li", { class: `incident ${inc.status}` },
    el("div", { class: "when" }, when(inc.started_at)),
    el("div", {},
      badge(inc.severity), " ", badge(inc.status), " ", el("strong", {}, inc.title),
      el("div", { class: "muted" }, inc.type, inc.metric ? ` · ${inc.metric}` : "", top ? ` · top: ${top}` : "",
        inc.resolved_at ? ` · resolved ${when(inc.resolved_at)}` : ""),
      inc.description ? el("div", { class: "desc" }, inc.description) : null,
      inc.type === "ML_ANOMALY" ? feedbackButtons(scoreAt) : null));
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

export async function hostPage(ctx) {
  const host = ctx.arg;
  const span = rangeSeconds(ctx.range);
  const end = new Date();
  const start = new Date(end.getTime() - span * 1000);
  const hoursAhead = Math.min(24, Math.max(1, Math.ceil(span / 3600 / 4)));
  const win = { host, start: start.toISOString(), end: end.toISOString() };
  // The expected bands come from up to 1,500 stored scores (a megabyte of JSON): read after the
  // charts are drawn (afterMount), so they do not hold up the first paint.
  const [series, marks, forecast, alerts, incidents] = await Promise.all([
    get("/metrics/series", { ...win, points: POINTS }),
    get("/anomaly-scores", { ...win, anomalies_only: true, limit: MARKS }),
    optional("/forecast", { host, hours_ahead: hoursAhead }),
    optional("/forecast/alerts", { host, hours_ahead: hoursAhead }),
    get("/incidents", { host, limit: 50 }),
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
  };
  return node;
}
