// The dashboard's shell: sign-in, the hash router (#/fleet, #/host/NAME, #/models, #/incidents),
// the range picker and live refresh.
import { releaseCharts } from "./charts.js";
import { ApiError, auth, el, get } from "./core.js";
import { fleetPage, hostPage, incidentsPage, modelsPage } from "./pages.js";

const REFRESH_MS = 30000;
const $ = (id) => document.getElementById(id);
const view = $("view");
const state = { range: sessionStorage.getItem("autofix-ml.range") || "24h", timer: null, token: 0, first: true };

export function showMessage(text, kind = "error") {
  const box = $("message");
  box.hidden = !text;
  box.className = `message ${kind}`;
  box.textContent = text || "";
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  return { page: page || "fleet", arg: rest.length ? decodeURIComponent(rest.join("/")) : null };
}

async function render({ quiet = false } = {}) {
  if (quiet && !$("signin").hidden) return; // live refresh waits for a key
  const { page, arg } = route();
  const token = ++state.token;
  const began = state.first ? 0 : performance.now();
  state.first = false;
  document.querySelectorAll("nav a[data-page]").forEach((a) => {
    a.classList.toggle("active", a.dataset.page === page || (page === "host" && a.dataset.page === "fleet"));
  });
  const ctx = { range: state.range, arg, quiet, stale: () => token !== state.token };
  const pages = { fleet: fleetPage, host: hostPage, incidents: incidentsPage, models: modelsPage };
  const draw = pages[page] || fleetPage;
  try {
    const node = await draw(ctx);
    if (ctx.stale()) return;
    view.replaceChildren(node);
    releaseCharts();
    if (typeof node.afterMount === "function") node.afterMount();
    // When the page was drawn: ms since navigation on a first load, else since the render began.
    const n = (window.dashboard.rendered?.n || 0) + 1;
    window.dashboard.rendered = { page, n, took: performance.now() - began, at: performance.now() };
    showMessage("");
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (ctx.stale()) return;
    if (error instanceof ApiError && error.status === 401) return; // the sign-in form is shown
    console.warn(error);
    showMessage(error instanceof ApiError ? `${error.status}: ${error.message}` : String(error));
    if (!quiet) view.replaceChildren(el("p", { class: "muted" }, "Could not load this page."));
  }
}

function schedule() {
  clearInterval(state.timer);
  state.timer = null;
  if ($("live").checked) state.timer = setInterval(() => render({ quiet: true }), REFRESH_MS);
}

function showSignIn(error = "") {
  $("signin").hidden = false;
  $("signin-error").textContent = error;
  view.replaceChildren();
  $("key").focus();
}

async function signIn(event) {
  event.preventDefault();
  auth.key = $("key").value.trim();
  try {
    await get("/models", { limit: 1 });
  } catch (error) {
    auth.key = null;
    showSignIn(error instanceof ApiError && error.status === 403
      ? "This key cannot read (it needs the reader role or above)."
      : "Unknown or revoked key.");
    return;
  }
  $("key").value = "";
  $("signin").hidden = true;
  $("signout").hidden = false;
  render();
}

function start() {
  performance.mark("app:start");
  $("range").value = state.range;
  $("range").addEventListener("change", () => {
    state.range = $("range").value;
    sessionStorage.setItem("autofix-ml.range", state.range);
    render();
  });
  $("live").addEventListener("change", schedule);
  $("signin").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => { auth.key = null; location.reload(); });
  $("signout").hidden = !auth.key;
  auth.onMissing = () => {
    const had = Boolean(auth.key);
    auth.key = null;
    $("signout").hidden = true;
    showSignIn(had ? "The key was refused; sign in again." : "");
  };
  window.addEventListener("hashchange", () => render());
  window.dashboard = { render, state }; // for the browser tests and the curious
  render();
  schedule();
}

start();
