"""Issue 14: first load of the dashboard's host page in a real browser, 24 hours and 30 days.

Run: ``python -m bench.bench_dashboard [--db sqlite|postgresql] [--loads 5]``.

The four services as ``autofix-ml serve`` processes on a throwaway database; 30 days of
1-minute samples generated for one host (43,200), scored by the trainer's loop, a forest and
the forecasters of all 14 metrics trained. Then Debian's headless Chromium (Playwright) opens
``/#/host/<host>`` in a fresh context each time (cold cache) with the range set to 24 h or
30 days, and the page reports when its 14 charts are drawn: milliseconds since navigation
start (HTML, modules, five API reads, the charts), then when the detector's expected bands
(read after the first paint: up to 1,500 scores, a megabyte of JSON) are drawn in. Targets: 24 h <= 1 s, 30 days <= 2 s.
Also the series read alone (``GET /api/ml/metrics/series``, 14 metrics, 400 points).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
from playwright.async_api import async_playwright

from bench.harness import database, services

HOST = "lab-1"
# Where the time of a load goes: requests (start, duration, bytes) and the page's marks.
BREAKDOWN = """[
  ...performance.getEntriesByType('navigation').map(e => ['page', 0, Math.round(e.duration)]),
  ...performance.getEntriesByType('resource').map(e => [e.name.replace(location.origin, '').slice(0, 60), Math.round(e.startTime), Math.round(e.duration), e.encodedBodySize]),
  ...performance.getEntriesByType('mark').map(e => [e.name, Math.round(e.startTime)]),
]"""
RANGES = {"24h": timedelta(hours=24), "30d": timedelta(days=30)}


def prepare(gateway: str) -> dict[str, float]:
    """Generate, wait for scoring, train; seconds each step took."""
    took: dict[str, float] = {}
    with httpx.Client(base_url=gateway, timeout=1800) as api:
        t = time.perf_counter()
        made = api.post(
            "/api/ml/train/generate-synthetic", json={"days": 30, "seed": 3, "host": HOST}
        )
        made.raise_for_status()
        count = made.json()["count"]
        took["generate"] = time.perf_counter() - t
        t = time.perf_counter()
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        while True:  # the scoring loop catches up with the month, newest scores last
            recent = api.get("/api/ml/anomaly-scores", params={"host": HOST, "start": since})
            if recent.json()["count"] >= 55:
                break
            if time.perf_counter() - t > 1800:
                raise RuntimeError("scoring did not catch up")
            time.sleep(2)
        took["scoring"] = time.perf_counter() - t
        t = time.perf_counter()
        api.post(
            "/api/ml/train/anomaly-detector", json={"host": HOST, "n_estimators": 100}
        ).raise_for_status()
        took["forest"] = time.perf_counter() - t
        t = time.perf_counter()
        api.post("/api/ml/train/forecaster", json={"host": HOST}).raise_for_status()
        took["forecasters"] = time.perf_counter() - t
        took["samples"] = count
    return took


def reads_alone(gateway: str, span: timedelta, rounds: int = 7) -> dict[str, float]:
    """Median milliseconds of each of the host page's reads, one at a time."""
    end = datetime.now(UTC)
    win = {"host": HOST, "start": (end - span).isoformat(), "end": end.isoformat()}
    hours = min(24, max(1, round(span.total_seconds() / 3600 / 4)))
    reads = {
        "series": ("/api/ml/metrics/series", {**win, "points": 400}),
        "marks": ("/api/ml/anomaly-scores", {**win, "anomalies_only": "true", "limit": 2000}),
        "forecast": ("/api/ml/forecast", {"host": HOST, "hours_ahead": hours}),
        "alerts": ("/api/ml/forecast/alerts", {"host": HOST, "hours_ahead": hours}),
        "incidents": ("/api/ml/incidents", {"host": HOST, "limit": 50}),
        "bands": ("/api/ml/anomaly-scores", {**win, "limit": 1500}),
    }
    out = {}
    with httpx.Client(base_url=gateway, timeout=60) as api:
        for name, (path, params) in reads.items():
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                api.get(path, params=params).raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
            out[name] = round(statistics.median(times), 1)
    return out


async def page_loads(gateway: str, loads: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {n: [] for name in RANGES for n in (name, name + " with bands")}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            for _ in range(loads):
                for name in RANGES:
                    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
                    await ctx.add_init_script(
                        f"sessionStorage.setItem('autofix-ml.range', '{name}')"
                    )
                    page = await ctx.new_page()
                    await page.goto(f"{gateway}/#/host/{HOST}")
                    await page.wait_for_function(
                        "window.dashboard && window.dashboard.rendered && "
                        "document.querySelectorAll('.chart[data-rendered=true]').length === 14",
                        timeout=60_000,
                    )
                    took = await page.evaluate("window.dashboard.rendered.took")
                    out[name].append(float(took))
                    await page.wait_for_function("window.dashboard.bands", timeout=60_000)
                    out[name + " with bands"].append(
                        float(await page.evaluate("window.dashboard.bands.at"))
                    )
                    if len(out[name]) == loads:  # the last load's breakdown
                        print(f"  breakdown of the last {name} load ({took:.0f} ms):")
                        for entry in await page.evaluate(BREAKDOWN):
                            print(f"    {entry}")
                    await ctx.close()
        finally:
            await browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    with database(args.db) as url, services(url, ML_SCORING_INTERVAL="1") as svc:
        prep = prepare(svc.gateway)
        print(f"{args.db}: prepared {prep}")
        for name, span in RANGES.items():
            print(f"  reads alone, {name}, median ms: {reads_alone(svc.gateway, span)}")
        loads = asyncio.run(page_loads(svc.gateway, args.loads))
        for name, values in loads.items():
            print(
                f"  host page first load, {name}: median {statistics.median(values):.0f} ms, "
                f"max {max(values):.0f} ms over {len(values)} cold loads"
            )


if __name__ == "__main__":
    main()
