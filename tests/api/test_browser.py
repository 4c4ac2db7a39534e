"""The dashboard and the API docs in a real headless Chromium (Debian's package, driven by
Playwright), against the real gateway and services on loopback with generated, scored data.

Every request the pages make is recorded; any that would leave the machine is refused and fails
the test. Screenshots go to var/test-artifacts/browser/. With CI=true a missing Chromium fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.failure import repository as failure_repo
from shared.apikeys import create_key
from shared.db import create_engine
from shared.settings import Settings
from tests.api.test_gateway import stack
from tests.conftest import IN_CI, truncate_all

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Generated samples under a host of its own: the "synthetic" host never opens incidents.
HOST = "lab-1"
OTHER = "web-1"
SPIKE = {"cpu_usage_percent": 99.0, "memory_usage_mb": 7800.0, "error_rate": 0.6}
QUIET = {"cpu_usage_percent": 20.0, "memory_usage_mb": 2000.0, "error_rate": 0.01}
FORECAST_METRICS = ["cpu_usage_percent", "memory_usage_mb"]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
HORIZONS = (15, 30, 60)
PREDICTION_MINUTES = 120  # stored failure predictions: the last two hours, one a minute

try:
    from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright
except ImportError:  # pragma: no cover - the test extras hold it
    async_playwright = None  # type: ignore[assignment]


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {what}: .ci/run installs chromium and the test extras")
    pytest.skip(what)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if async_playwright is None:
        _missing("playwright is not installed")
    if shutil.which(CHROMIUM) is None:
        _missing(f"no Chromium at {CHROMIUM}")
    async with async_playwright() as pw:
        # Debian's Chromium; Playwright never downloads a browser of its own here.
        launched = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Data:
    """The stack with its data: a gateway URL and a client of it."""

    url: str
    api: httpx.AsyncClient
    engine: AsyncEngine
    score_count: int = 0
    incidents: int = 0
    incident_list: list[dict[str, Any]] = field(default_factory=list)
    trained: dict[str, Any] = field(default_factory=dict)
    # Per host, the highest failure probability stored (and its horizon).
    failure_peak: dict[str, tuple[float, int]] = field(default_factory=dict)


def failure_predictions(now: datetime) -> list[dict[str, Any]]:
    """Two hours of the scoring loop's rows: on HOST the probability climbs toward the end
    (longer horizons higher), warning past 0.6; on OTHER it stays low."""
    rows: list[dict[str, Any]] = []
    for m in range(PREDICTION_MINUTES):
        at = now - timedelta(minutes=PREDICTION_MINUTES - 1 - m)
        ramp = m / (PREDICTION_MINUTES - 1)
        for i, horizon in enumerate(HORIZONS):
            for host, p in (
                (HOST, 0.05 + 0.8 * ramp**3 * (0.8 + 0.1 * i)),
                (OTHER, 0.02 + 0.01 * i),
            ):
                rows.append(
                    {
                        "model_id": None,
                        "timestamp": at,
                        "host": host,
                        "horizon_minutes": horizon,
                        "failure_probability": round(p, 4),
                        "predicted_failure_type": "memory_exhaustion" if p >= 0.6 else None,
                        "will_fail": p >= 0.6,
                        "top_features": [],
                    }
                )
    return rows


async def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
async def data(sqlite_url: str) -> AsyncIterator[Data]:
    """Three days of synthetic samples, scored by the trainer's loop; a forest and forecasters."""
    settings = Settings(
        database_url=sqlite_url,
        ml_enabled=False,
        hostname="test-host",
        scrape_url="http://127.0.0.1:9/metrics",
        http_timeout=10.0,
        health_cache_seconds=0.0,
        scoring_interval=0.1,
        anomaly_threshold=0.99,
        anomaly_consecutive=1,
        internal_token="browser-test-token",
        auth_cache_seconds=0.2,
    )
    engine: AsyncEngine = create_engine(sqlite_url)
    await truncate_all(engine)
    try:
        async with stack(settings, engine) as s:
            api = s.gateway
            made = await api.post(
                "/api/ml/train/generate-synthetic",
                json={"days": 3, "seed": 7, "host": HOST},
                timeout=120,
            )
            assert made.status_code == 200, made.text
            count = made.json()["count"]
            # Real (not generated) samples: a spike on the synthetic host just after its
            # generated window opens an incident; a second host with a few quiet minutes.
            now = datetime.now(UTC).replace(microsecond=0)
            spike = [
                {"host": HOST, "timestamp": (now + timedelta(minutes=m)).isoformat(), **SPIKE}
                for m in (1, 2, 3)
            ]
            quiet = [
                {"host": OTHER, "timestamp": (now - timedelta(minutes=m)).isoformat(), **QUIET}
                for m in range(10)
            ]
            pushed = await api.post("/api/ml/metrics/ingest", json={"samples": spike + quiet})
            assert pushed.status_code == 201, pushed.text
            count += len(spike)

            async def scored() -> int:
                r = await api.get("/api/ml/anomaly-scores", params={"host": HOST, "limit": 10000})
                n = int(r.json()["count"])
                return n if n >= count - 5 else 0

            n_scores = await _wait(scored, 120, "the scoring loop to score every sample")
            forest = await api.post(
                "/api/ml/train/anomaly-detector", json={"n_estimators": 30, "host": HOST}
            )
            assert forest.status_code == 200, forest.text
            forecaster = await api.post(
                "/api/ml/train/forecaster",
                json={"host": HOST, "metrics": FORECAST_METRICS, "days": 3},
                timeout=300,
            )
            assert forecaster.status_code == 200, forecaster.text

            async def opened() -> Any:
                listed = (await api.get("/api/ml/incidents", params={"limit": 1000})).json()
                return listed if listed["count"] else None

            incidents = await _wait(opened, 60, "the spike's incident")
            # Failure predictions as the failure-prediction loop stores them (training the
            # LightGBM predictor here would cost a minute for the same rows).
            predictions = failure_predictions(now)
            async with engine.begin() as conn:
                await failure_repo.insert_predictions(conn, predictions)
            peak: dict[str, tuple[float, int]] = {}
            for row in predictions:
                best = peak.get(row["host"])
                if best is None or row["failure_probability"] > best[0]:
                    peak[row["host"]] = (row["failure_probability"], row["horizon_minutes"])
            yield Data(
                url=str(api.base_url).rstrip("/"),
                api=api,
                engine=engine,
                score_count=n_scores,
                incidents=incidents["count"],
                incident_list=incidents["incidents"],
                trained={"forest": forest.json(), "forecaster": forecaster.json()},
                failure_peak=peak,
            )
    finally:
        await truncate_all(engine)
        await engine.dispose()


@dataclass
class Watch:
    """What a page did: console errors, uncaught exceptions, every request and any refused."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.refused == [], f"requests leaving the machine: {self.refused}"
        assert self.errors == [], f"console errors: {self.errors}"


@contextlib.asynccontextmanager
async def page_of(browser: Browser, **context: Any) -> AsyncIterator[tuple[Page, Watch]]:
    """A page whose requests may reach loopback only (others are aborted and recorded)."""
    watch = Watch()
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900}, **context)

    async def guard(route: Route) -> None:
        url = route.request.url
        host = urlsplit(url).hostname or ""
        watch.requests.append(url)
        if url.startswith(("data:", "blob:")) or host in LOOPBACK:
            await route.continue_()
        else:
            watch.refused.append(url)
            await route.abort("internetdisconnected")

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watch.errors.append(f"{message.text} @ {message.location.get('url', '')}")

    await ctx.route("**/*", guard)
    page = await ctx.new_page()
    page.on("console", console)
    page.on("pageerror", lambda exc: watch.errors.append(f"uncaught: {exc}"))
    try:
        yield page, watch
    finally:
        await ctx.close()


async def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # not a blank page
    return path


async def rendered(page: Page, page_id: str) -> dict[str, Any]:
    """Wait for the dashboard to draw `page_id`; the time it took (window.dashboard.rendered)."""
    await page.wait_for_function(
        "id => window.dashboard && window.dashboard.rendered && "
        "window.dashboard.rendered.page === id",
        arg=page_id,
        timeout=20_000,
    )
    info: dict[str, Any] = await page.evaluate("window.dashboard.rendered")
    return info


async def test_fleet_lists_the_host_and_opens_it(browser: Browser, data: Data) -> None:
    async with page_of(browser) as (page, watch):
        await page.goto(data.url + "/")
        await rendered(page, "fleet")
        rows = page.locator("#fleet tbody tr")
        assert await rows.count() == 2
        # Sorted by status, worst first: the host with the open incident.
        assert HOST in await rows.first.inner_text()
        assert "incident" in await rows.first.inner_text()
        # Each host's highest stored failure probability and its horizon, in its own column.
        for host, (p, horizon) in data.failure_peak.items():
            row = rows.filter(has_text=host)
            assert f"{p * 100:.1f} % in {horizon} min" in await row.inner_text()
        await shot(page, "fleet")
        await page.locator("#fleet th", has_text="Host").click()
        assert OTHER in await rows.last.inner_text()
        # Sortable like the others: highest failure probability first on a second click.
        failure_header = page.locator("#fleet th", has_text="failure probability")
        await failure_header.click()
        assert OTHER in await rows.first.inner_text()
        await failure_header.click()
        assert HOST in await rows.first.inner_text()
        assert await failure_header.get_attribute("aria-sort") == "descending"
        await rows.first.click()
        await rendered(page, "host")
        assert page.url.endswith(f"#/host/{HOST}")
        watch.assert_clean()


async def test_host_charts_every_metric_with_bands_marks_and_forecast(
    browser: Browser, data: Data
) -> None:
    async with page_of(browser) as (page, watch):
        await page.goto(f"{data.url}/#/host/{HOST}")
        info = await rendered(page, "host")
        # The expected bands are read after the first paint, then the charts are redrawn.
        await page.wait_for_function("window.dashboard.bands", timeout=20_000)
        charts = page.locator(".chart[data-metric][data-rendered=true]")
        assert await charts.count() == 14
        series: dict[str, dict[str, int]] = {}
        for i in range(14):
            chart = charts.nth(i)
            metric = await chart.get_attribute("data-metric")
            series[str(metric)] = json.loads(await chart.get_attribute("data-series"))
        # 24 hours of 1-minute samples in 400 buckets at most: every chart has its line.
        assert all(200 <= s["observed"] <= 400 for s in series.values()), series
        for metric in FORECAST_METRICS:
            assert series[metric]["forecast"] > 0 and series[metric]["forecast high"] > 0
        assert sum(s["expected low"] for s in series.values()) > 0
        assert sum(s["anomaly"] for s in series.values()) > 0
        # The failure probability per horizon: a chart over the range and a table.
        failure = page.locator(".chart[data-chart=failure][data-rendered=true]")
        assert await failure.count() == 1
        per_horizon = json.loads(str(await failure.get_attribute("data-series")))
        assert per_horizon == {f"{h} min": PREDICTION_MINUTES for h in HORIZONS}
        table = page.locator(".failure-table tbody tr")
        assert await table.count() == len(HORIZONS)
        top, horizon = data.failure_peak[HOST]
        assert f"{top * 100:.1f} %" in await table.nth(HORIZONS.index(horizon)).inner_text()
        assert "memory exhaustion" in await table.last.inner_text()
        assert await page.locator(".chart canvas").count() == 14 + 1
        # Each incident's latest analysis (the rules answer when no LLM is set) in the timeline.
        await page.locator(".incident .analysis strong").first.wait_for(timeout=20_000)
        await shot(page, "host")
        # The range picker: the last hour is read again, in buckets of a few seconds.
        drawn = await page.evaluate("window.dashboard.rendered.n")
        await page.select_option("#range", "1h")
        await page.wait_for_function(f"window.dashboard.rendered.n > {drawn}")
        hour = json.loads(str(await charts.first.get_attribute("data-series")))
        assert 50 <= hour["observed"] <= 61, hour
        assert await page.evaluate("sessionStorage.getItem('autofix-ml.range')") == "1h"
        # Live refresh is on: a timer re-reads the page's data.
        assert await page.evaluate("window.dashboard.state.timer !== null")
        watch.assert_clean()
        print(f"host page, 24 h of 14 metrics: {info['took']:.0f} ms after navigation")


async def test_a_feedback_click_is_stored(browser: Browser, data: Data) -> None:
    async with page_of(browser) as (page, watch):
        await page.goto(f"{data.url}/#/host/{HOST}")
        await rendered(page, "host")
        item = page.locator(".scores li").first
        score_id = int(str(await item.get_attribute("data-score-id")))
        await item.locator("button.fp").click()
        await item.locator(".stored").wait_for(timeout=10_000)
        watch.assert_clean()
    found = await data.api.get(
        "/api/ml/anomaly-scores", params={"host": HOST, "anomalies_only": True, "limit": 10000}
    )
    judged = {s["id"]: s["feedback"] for s in found.json()["scores"]}
    assert judged[score_id] == "false_positive"


async def test_models_and_incidents_pages(browser: Browser, data: Data) -> None:
    async with page_of(browser) as (page, watch):
        await page.goto(f"{data.url}/#/models")
        await rendered(page, "models")
        groups = page.locator(".model-group")
        # The forest, and one forecaster per metric.
        assert await groups.count() == 1 + len(FORECAST_METRICS)
        assert "active" in await page.locator("#models").inner_text()
        await shot(page, "models")
        await page.goto(f"{data.url}/#/incidents")
        await rendered(page, "incidents")
        rows = page.locator("#incidents tbody tr")
        assert data.incidents > 0
        assert await rows.count() == data.incidents
        open_before = await page.locator("#incidents button.resolve").count()
        assert open_before > 0
        await shot(page, "incidents")
        drawn = await page.evaluate("window.dashboard.rendered.n")
        await page.select_option("select[name=type]", "ML_ANOMALY")
        await page.wait_for_function(f"window.dashboard.rendered.n > {drawn}")
        assert await rows.count() == len(
            [i for i in data.incident_list if i["type"] == "ML_ANOMALY"]
        )
        await page.locator("#incidents button.resolve").first.click()
        await page.wait_for_function(
            f"document.querySelectorAll('#incidents button.resolve').length < {open_before}"
        )
        opened = await data.api.get("/api/ml/incidents", params={"status": "open"})
        assert opened.json()["count"] == open_before - 1
        watch.assert_clean()


async def test_swagger_ui_and_redoc_render_with_the_network_cut_off(
    browser: Browser, data: Data
) -> None:
    spec = (await data.api.get("/api/openapi.json")).json()
    operations = sum(len(ops) for ops in spec["paths"].values())
    async with page_of(browser) as (page, watch):
        await page.goto(data.url + "/api/docs")
        await page.wait_for_function(
            f"document.querySelectorAll('.opblock').length >= {operations}", timeout=20_000
        )
        tags = await page.locator(".opblock-tag").all_inner_texts()
        assert any("anomaly detection" in t for t in tags)
        await shot(page, "swagger-ui")
        await page.goto(data.url + "/api/redoc")
        await page.wait_for_selector("[data-section-id^='tag/']", timeout=20_000)
        await shot(page, "redoc")
        watch.assert_clean()
        assert any(u.endswith("swagger-ui-bundle.js") for u in watch.requests)


# Last in the file: once a key exists the gateway asks for keys for good.
async def test_signing_in_with_a_key_when_keys_are_required(browser: Browser, data: Data) -> None:
    """With a key made, the page asks for one, keeps it in sessionStorage and sends it."""
    async with data.engine.begin() as conn:
        key, _ = await create_key(conn, role="reader", name="browser test")
    await asyncio.sleep(0.6)  # the gateway reloads its keys
    assert (await data.api.get("/api/ml/models")).status_code == 401
    async with page_of(browser) as (page, watch):
        sent: list[str | None] = []
        page.on(
            "request",
            lambda r: sent.append(r.headers.get("authorization")) if "/api/ml/" in r.url else None,
        )
        await page.goto(data.url + "/")
        await page.locator("#signin").wait_for(state="visible")
        await shot(page, "sign-in")
        await page.fill("#key", "not-a-key")
        await page.click("#signin button[type=submit]")
        await page.locator("#signin-error", has_text="Unknown").wait_for()
        await page.fill("#key", key)
        await page.click("#signin button[type=submit]")
        await rendered(page, "fleet")
        assert await page.evaluate("sessionStorage.getItem('autofix-ml.key')") == key
        assert f"Bearer {key}" in sent
        assert await page.locator("#fleet tbody tr").count() == 2
        # The 401 of the wrong key is a console error of the browser's own; nothing else.
        watch.errors = [e for e in watch.errors if "401" not in e]
        watch.assert_clean()
