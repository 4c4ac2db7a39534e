// Models: every version per family and host (and metric), its stored evaluation, activation.
import { get, post } from "../api.js";
import { badge, el, num, when } from "../util.js";

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
