"""Benchmark of the data pipeline (issue 2), through the gateway over real HTTP.

Run: `python -m bench.bench_pipeline [--big] [--cpu-seconds N]`.
Measures, on PostgreSQL and SQLite: generate-synthetic for 30 days end to end; metrics/stats;
export as CSV and JSON (rows/s and the collector's peak memory); /api/ml/health latency for one
client and with 50 connections (wrk); one collection; the collector's CPU at the default interval.
`--big` adds about 1,000,000 rows (stats, export, health again) on both engines.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import threading
import time
from datetime import UTC, datetime

import httpx
import psutil

from bench.harness import Services, database, percentile, services, wrk
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared.db import create_engine


def timed_get(client: httpx.Client, path: str, n: int, **params: str) -> list[float]:
    client.get(path, params=params)  # warm-up
    out = []
    for _ in range(n):
        began = time.perf_counter()
        response = client.get(path, params=params)
        out.append(time.perf_counter() - began)
        assert response.status_code == 200, response.text
    return out


class PeakRSS:
    """Samples a process's resident memory in a thread; `.peak` in MiB."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss / 2**20
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss / 2**20)
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_export(s: Services, kind: str, rows_expected: int) -> None:
    with httpx.Client(base_url=s.gateway, timeout=600) as client:
        for fmt in ("csv", "json"):
            with PeakRSS(s.pid("collector")) as rss, PeakRSS(s.pid("api")) as gw:
                began = time.perf_counter()
                size = 0
                with client.stream("GET", "/api/ml/metrics/export", params={"format": fmt}) as r:
                    for chunk in r.iter_raw():
                        size += len(chunk)
                elapsed = time.perf_counter() - began
            print(
                f"  export {fmt:<4} {kind:<10} {rows_expected:>9,} rows: {elapsed:.3f} s = "
                f"{rows_expected / elapsed:,.0f} rows/s ({size / 2**20:.1f} MiB); collector RSS "
                f"{rss.base:.0f} -> peak {rss.peak:.0f} MiB, gateway {gw.base:.0f} -> {gw.peak:.0f} MiB"
            )


def bench_stats(s: Services, kind: str, rows: int, n: int) -> None:
    with httpx.Client(base_url=s.gateway, timeout=60) as client:
        t = timed_get(client, "/api/ml/metrics/stats", n)
        total = client.get("/api/ml/metrics/stats").json()["total_samples"]
    assert total == rows, (total, rows)
    print(
        f"  metrics/stats {kind:<10} {rows:>9,} rows: median {statistics.median(t) * 1000:.1f} ms, "
        f"p99 {percentile(t, 0.99) * 1000:.1f} ms ({n} requests)"
    )


def bench_health(s: Services, kind: str, rows: int) -> None:
    with httpx.Client(base_url=s.gateway, timeout=10) as client:
        t = timed_get(client, "/api/ml/health", 500)
    print(
        f"  health one client {kind:<10} {rows:>9,} rows: median {statistics.median(t) * 1000:.2f} ms, "
        f"p99 {percentile(t, 0.99) * 1000:.2f} ms (500 requests, kept-alive)"
    )
    if not shutil.which("wrk"):
        print("  (wrk not installed: apt-get install wrk)")
        return
    result = wrk(f"{s.gateway}/api/ml/health")
    print(f"  health wrk -t2 -c50 -d10s {kind:<10} {rows:>9,} rows: {result.line()}")


def bench_transports() -> None:
    """The gateway's transport, chosen by measurement: /api/ml/health with the health cache off
    (three downstream calls per request) and /api/ml/models (one), 50 connections."""
    if not shutil.which("wrk"):
        return
    with database("sqlite") as url:
        for transport in ("httpx", "aiohttp"):
            with services(
                url, AUTOFIX_GATEWAY_TRANSPORT=transport, AUTOFIX_HEALTH_CACHE_SECONDS="0"
            ) as s:
                for path in ("/api/ml/health", "/api/ml/models"):
                    result = wrk(f"{s.gateway}{path}")
                    print(f"  transport {transport:<7} {path:<16} no cache: {result.line()}")


def bench_generate_through_gateway(s: Services, kind: str) -> None:
    with httpx.Client(base_url=s.gateway, timeout=120) as client:
        client.post("/api/ml/train/generate-synthetic", json={"days": 1, "host": "warmup"})
        timings = []
        for _ in range(3):
            began = time.perf_counter()
            r = client.post("/api/ml/train/generate-synthetic", json={"days": 30, "seed": 42})
            timings.append(time.perf_counter() - began)
            assert r.status_code == 200 and r.json()["count"] == 43_200, r.text
        body = r.json()
    print(
        f"  generate-synthetic 30 days {kind:<10}: end to end median {statistics.median(timings):.3f} s "
        f"(runs {', '.join(f'{t:.3f}' for t in timings)}; last: generation "
        f"{body['generation_seconds'] * 1000:.0f} ms, storage {body['storage_seconds'] * 1000:.0f} ms)"
    )


async def _fill(url: str, hosts: int) -> int:
    """About 525,600 rows a host: a year of minutes per host, through store_frame (COPY)."""
    engine = create_engine(url)
    total = 0
    start = datetime(2025, 1, 1, tzinfo=UTC)
    frame = SyntheticDataGenerator(seed=1).generate_full_training_set(365, start=start)
    for i in range(hosts):
        async with engine.begin() as conn:
            total += await store_frame(conn, frame, host=f"big-{i}")
    await engine.dispose()
    return total


def bench_collection(cpu_seconds: float) -> None:
    """One collection in process (against a live gateway), and the collector's CPU over time."""
    from services.collector.sampling.sampler import MetricsCollector
    from shared.http import make_client
    from shared.settings import Settings

    with database("sqlite") as url, services(url) as s:
        settings = Settings(database_url=url, scrape_url=f"{s.gateway}/metrics")

        async def run() -> list[float]:
            async with make_client(timeout=settings.scrape_timeout) as client:
                collector = MetricsCollector(settings, client)
                await collector.prime()
                out = []
                for _ in range(50):
                    await asyncio.sleep(0.05)
                    began = time.perf_counter()
                    await collector.collect()
                    out.append(time.perf_counter() - began)
                return out

        t = asyncio.run(run())
        print(
            f"  one collection (psutil + scrape of the gateway): median {statistics.median(t) * 1000:.2f} ms, "
            f"max {max(t) * 1000:.2f} ms (50 collections)"
        )
    if cpu_seconds <= 0:
        return
    with database("sqlite") as url, services(url, ML_ENABLED="true") as s:
        proc = psutil.Process(s.pid("collector"))
        time.sleep(5)  # past start-up
        before = proc.cpu_times()
        began = time.monotonic()
        time.sleep(cpu_seconds)
        after = proc.cpu_times()
        wall = time.monotonic() - began
        cpu = (after.user - before.user) + (after.system - before.system)
        print(
            f"  collector CPU at the default 60 s interval: {cpu:.3f} s CPU over {wall:.0f} s = "
            f"{100 * cpu / wall:.3f} % of a core"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", action="store_true", help="also 1,000,000 rows on PostgreSQL")
    parser.add_argument("--cpu-seconds", type=float, default=120)
    parser.add_argument("--only", choices=["sqlite", "postgresql", "none"], default=None)
    args = parser.parse_args()
    print(f"machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    for kind in ("postgresql", "sqlite"):
        if args.only and kind != args.only:
            continue
        print(f"{kind}:")
        with database(kind) as url, services(url) as s:
            bench_generate_through_gateway(s, kind)
            bench_stats(s, kind, 43_200 + 1440, 200)
            bench_export(s, kind, 43_200 + 1440)
            bench_health(s, kind, 43_200 + 1440)
            if args.big:
                rows = asyncio.run(_fill(url, 2)) + 43_200 + 1440
                with httpx.Client(base_url=s.gateway, timeout=60) as client:
                    client.post("/api/ml/metrics/collect")  # nothing else; keeps caches honest
                bench_stats(s, kind, rows + 1, 20)
                bench_export(s, kind, rows + 1)
                bench_health(s, kind, rows + 1)
    print("gateway transport (wrk -t2 -c50 -d10s):")
    bench_transports()
    print("collector:")
    bench_collection(args.cpu_seconds)


if __name__ == "__main__":
    main()
