// One chart per metric with uPlot (vendored): observed avg with its min-max band, the detector's
// expected band, anomaly marks, the forecast with its 80 % band, the threshold and breaches;
// and the failure probability per horizon.
import uPlot from "./vendor/uplot/uPlot.esm.js";

const COLORS = {
  observed: "#2563eb",
  observedBand: "rgba(37, 99, 235, 0.12)",
  expected: "#16a34a",
  expectedBand: "rgba(22, 163, 74, 0.10)",
  forecast: "#ea580c",
  forecastBand: "rgba(234, 88, 12, 0.13)",
  anomaly: "#dc2626",
  breach: "#7c3aed",
  threshold: "#7c3aed",
};

const charts = new Set();
let resizeBound = false;

/** Align named series of [t, v] points onto one sorted x axis; undefined where a series has no
 *  point (uPlot joins across undefined but breaks lines at null, which marks a real gap). */
function align(sets) {
  const xs = new Set();
  for (const points of Object.values(sets)) for (const [t] of points) xs.add(t);
  const x = [...xs].sort((a, b) => a - b);
  const index = new Map(x.map((t, i) => [t, i]));
  const out = { x };
  for (const [name, points] of Object.entries(sets)) {
    const ys = new Array(x.length).fill(undefined);
    for (const [t, v] of points) ys[index.get(t)] = v;
    out[name] = ys;
  }
  return out;
}

/** Points of the bucketed series, with a null after each bucket that is followed by a gap. */
function withGaps(timestamps, values, step) {
  const out = [];
  for (let i = 0; i < timestamps.length; i++) {
    out.push([timestamps[i], values[i]]);
    if (i + 1 < timestamps.length && timestamps[i + 1] - timestamps[i] > 2 * step) {
      out.push([timestamps[i] + 1, null]);
    }
  }
  return out;
}

function thresholdHook(value) {
  return (u) => {
    if (value === null || value === undefined) return;
    const y = u.valToPos(value, "y", true);
    if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) return;
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = COLORS.threshold;
    ctx.setLineDash([4, 4]);
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(u.bbox.left, y);
    ctx.lineTo(u.bbox.left + u.bbox.width, y);
    ctx.stroke();
    ctx.restore();
  };
}

const markPoints = (color, size) => ({
  paths: () => null,
  points: { show: true, size, stroke: color, fill: color, width: 1 },
});

/**
 * metricChart(target, {metric, unit, step, observed: {timestamps, avg, min, max},
 *   expected: [[t, lower, upper]], anomalies: [[t, value, scoreId]],
 *   forecast: [[t, yhat, lower, upper]], threshold, breaches: [[t, value]], xMin, xMax})
 */
export function metricChart(target, spec) {
  const obs = spec.observed;
  const sets = {
    avg: withGaps(obs.timestamps, obs.avg, spec.step),
    min: withGaps(obs.timestamps, obs.min, spec.step),
    max: withGaps(obs.timestamps, obs.max, spec.step),
    lower: withGaps(spec.expected.map(([t]) => t), spec.expected.map(([, lo]) => lo), spec.bandGap),
    upper: withGaps(spec.expected.map(([t]) => t), spec.expected.map(([, , hi]) => hi), spec.bandGap),
    yhat: spec.forecast.map(([t, y]) => [t, y]),
    flower: spec.forecast.map(([t, , lo]) => [t, lo]),
    fupper: spec.forecast.map(([t, , , hi]) => [t, hi]),
    anomalies: spec.anomalies.map(([t, v]) => [t, v]),
    breaches: spec.breaches.map(([t, v]) => [t, v]),
  };
  const d = align(sets);
  const data = [d.x, d.avg, d.min, d.max, d.lower, d.upper, d.yhat, d.flower, d.fupper,
    d.anomalies, d.breaches];
  const hidden = { stroke: "transparent", width: 0, points: { show: false } };
  const series = [
    {},
    { label: "observed", stroke: COLORS.observed, width: 1.5, points: { show: false } },
    { label: "min", ...hidden },
    { label: "max", ...hidden },
    { label: "expected low", stroke: COLORS.expected, width: 1, dash: [3, 3], spanGaps: true, points: { show: false } },
    { label: "expected high", stroke: COLORS.expected, width: 1, dash: [3, 3], spanGaps: true, points: { show: false } },
    { label: "forecast", stroke: COLORS.forecast, width: 1.5, dash: [6, 3], points: { show: false } },
    { label: "forecast low", ...hidden },
    { label: "forecast high", ...hidden },
    { label: "anomaly", stroke: COLORS.anomaly, ...markPoints(COLORS.anomaly, 7) },
    { label: "breach", stroke: COLORS.breach, ...markPoints(COLORS.breach, 9) },
  ];
  const bands = [
    { series: [3, 2], fill: COLORS.observedBand },
    { series: [5, 4], fill: COLORS.expectedBand },
    { series: [8, 7], fill: COLORS.forecastBand },
  ];
  const width = Math.max(280, target.clientWidth || 600);
  const opts = {
    width,
    height: spec.height || 170,
    legend: { show: false },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true, range: () => [spec.xMin, spec.xMax] } },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"), // times in UTC, as elsewhere
    axes: [
      { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" } },
      { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" }, size: 58 },
    ],
    series,
    bands,
    hooks: { draw: [thresholdHook(spec.threshold)] },
  };
  for (const c of charts) {
    if (c._target === target) { c.destroy(); charts.delete(c); } // a redraw (the bands came in)
  }
  target.replaceChildren();
  const plot = new uPlot(opts, data, target);
  plot._target = target;
  charts.add(plot);
  // What is drawn, for people (title) and for the browser tests (data attributes).
  const counts = {};
  series.slice(1).forEach((s, i) => {
    counts[s.label] = data[i + 1].filter((v) => v !== undefined && v !== null).length;
  });
  target.dataset.series = JSON.stringify(counts);
  target.dataset.rendered = "true";
  bindResize();
  return plot;
}

function bindResize() {
  if (resizeBound) return;
  resizeBound = true;
  window.addEventListener("resize", () => {
    for (const c of charts) {
      if (!document.body.contains(c._target)) { c.destroy(); charts.delete(c); continue; }
      c.setSize({ width: Math.max(280, c._target.clientWidth), height: c.height });
    }
  });
}

const HORIZON_COLORS = ["#dc2626", "#ea580c", "#ca8a04", "#2563eb"];

/**
 * failureChart(target, {horizons: {15: [[t, p]], 30: [...], 60: [...]}, xMin, xMax}):
 * the failure probability per horizon over time, 0..1.
 */
export function failureChart(target, spec) {
  const names = Object.keys(spec.horizons).sort((a, b) => Number(a) - Number(b));
  const sets = {};
  for (const h of names) sets[h] = spec.horizons[h];
  const d = align(sets);
  const data = [d.x, ...names.map((h) => d[h])];
  const series = [{}, ...names.map((h, i) => ({
    label: `${h} min`,
    stroke: HORIZON_COLORS[i % HORIZON_COLORS.length],
    width: 1.5,
    spanGaps: true,
    points: { show: false },
    value: (u, v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`),
  }))];
  const opts = {
    width: Math.max(280, target.clientWidth || 600),
    height: spec.height || 170,
    legend: { show: true },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true, range: () => [spec.xMin, spec.xMax] }, y: { range: [0, 1] } },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    axes: [
      { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" } },
      { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" }, size: 58,
        values: (u, ticks) => ticks.map((v) => `${Math.round(v * 100)} %`) },
    ],
    series,
  };
  for (const c of charts) {
    if (c._target === target) { c.destroy(); charts.delete(c); }
  }
  target.replaceChildren();
  const plot = new uPlot(opts, data, target);
  plot._target = target;
  charts.add(plot);
  const counts = {};
  series.slice(1).forEach((s, i) => {
    counts[s.label] = data[i + 1].filter((v) => v !== undefined && v !== null).length;
  });
  target.dataset.series = JSON.stringify(counts);
  target.dataset.rendered = "true";
  bindResize();
  return plot;
}

/** Drop charts whose element left the page (a new view, a refresh). */
export function releaseCharts() {
  for (const c of charts) {
    if (!document.body.contains(c._target)) { c.destroy(); charts.delete(c); }
  }
}

export { COLORS };
