"""Forecasting for a fleet: scheduled training of many hosts, then fleet-wide read latency.

    python -m bench.bench_forecast_fleet                    # PostgreSQL, 100 hosts
    python -m bench.bench_forecast_fleet --db sqlite --hosts 20 --requests 100

Data: SyntheticDataGenerator(seed=42), the newest `--days` (1.5) of one-minute samples,
stored under `--hosts` host names (host-000...), CPU shifted by 3 points per host modulo 10
so that hosts differ. this process is the HTTP client, one kept-alive connection per target. Only the forecaster
and the gateway run (as `autofix-ml serve` processes), as in bench_forecast_service.

1. Baseline, same data: the forecaster's /health with the schedule off (ML_FORECAST_RETRAIN_HOURS=0).
2. The schedule on (ML_FORECAST_RETRAIN_HOURS=24): at start-up every host is due, and the
   forecaster refits them one at a time on its two worker processes, all 14 metrics each,
   while /health is polled back to back until every host has its models or `--limit`
   seconds have passed.
3. Hosts the schedule did not reach within `--limit` get SQL copies of the trained hosts'
   active versions, stored forecasts and newest generations (round robin), so that every
   host has models and forecasts: the reads cost the same whichever fit made them.
4. The services restarted with the schedule off; each read n times, fleet-wide and for one
   host (the baseline: what a read cost before reads were fleet-wide).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import sqlalchemy as sa

from bench.harness import database, free_port
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared.catalogue import METRIC_NAMES
from shared.db import create_engine
from shared.tables import forecast_generations, metric_forecasts, ml_models

CPU = "cpu_usage_percent"


@dataclass
class Served:
    forecaster: str
    gateway: str


@contextlib.contextmanager
def serve(database_url: str, retrain_hours: str, code: str | None = None) -> Iterator[Served]:
    """The forecaster and the gateway as `autofix-ml serve` processes on free loopback ports;
    `code`: another checkout to run them from (a baseline)."""
    ports = {"forecaster": free_port(), "api": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFIX_", "ML_"))}
    env.update(
        DATABASE_URL=database_url,
        AUTOFIX_LOG_LEVEL="warning",
        AUTOFIX_FORECASTER_PORT=str(ports["forecaster"]),
        AUTOFIX_API_PORT=str(ports["api"]),
        FORECASTER_URL=f"http://127.0.0.1:{ports['forecaster']}",
        ML_FORECAST_RETRAIN_HOURS=retrain_hours,
        PYTHONWARNINGS="ignore",
    )
    if code is not None:
        env["PYTHONPATH"] = code
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", name],
            env=env,
            cwd=code,
            stdout=subprocess.DEVNULL,
        )
        for name in ports
    ]
    served = Served(f"http://127.0.0.1:{ports['forecaster']}", f"http://127.0.0.1:{ports['api']}")
    try:
        deadline = time.monotonic() + 180
        for url in (f"{served.forecaster}/health", f"{served.gateway}/api/openapi.json"):
            while True:
                try:
                    if httpx.get(url, timeout=2).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not come up")
                time.sleep(0.2)
        yield served
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def row(name: str, ms: list[float]) -> str:
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {pct(ms, 99):.2f} | {max(ms):.2f} |"
    )


async def store(url: str, hosts: int, days: float) -> int:
    frame = SyntheticDataGenerator(seed=42).generate_full_training_set(int(np.ceil(days)))
    frame = frame.iloc[-int(days * 1440) :].reset_index(drop=True)
    engine = create_engine(url)
    stored = 0
    try:
        for i in range(hosts):
            copy = frame.copy()
            copy[CPU] = np.clip(copy[CPU] + 3.0 * (i % 10), 0.0, 100.0)
            async with engine.begin() as conn:
                stored += await store_frame(conn, copy, host=f"host-{i:03d}")
    finally:
        await engine.dispose()
    return stored


async def fill(url: str, hosts: int) -> tuple[int, int]:
    """Copy trained hosts' active versions, forecasts and generations to the untrained hosts;
    (hosts trained, hosts filled)."""
    engine = create_engine(url)
    m, f, g = ml_models.c, metric_forecasts.c, forecast_generations.c
    copied = [c for c in ml_models.c if c.name not in ("id", "host")]
    try:
        async with engine.begin() as conn:
            active = (m.name == "forecaster", m.status == "active")
            trained = [
                str(r[0])
                for r in await conn.execute(
                    sa.select(m.host).where(*active).distinct().order_by(m.host)
                )
            ]
            missing = [h for i in range(hosts) if (h := f"host-{i:03d}") not in trained]
            if not trained:
                raise RuntimeError("no host was trained within --limit: nothing to copy")
            for i, host in enumerate(missing):
                source = trained[i % len(trained)]
                await conn.execute(
                    sa.insert(ml_models).from_select(
                        [*(c.name for c in copied), "host"],
                        sa.select(*copied, sa.literal(host)).where(*active, m.host == source),
                    )
                )
                new = (
                    sa.select(m.id)
                    .where(*active, m.host == host, m.metric == f.metric)
                    .scalar_subquery()
                )
                await conn.execute(
                    sa.insert(metric_forecasts).from_select(
                        ["model_id", "host", "metric", "generated_at", "target_timestamp",
                         "yhat", "yhat_lower", "yhat_upper"],
                        sa.select(new, sa.literal(host), f.metric, f.generated_at,
                                  f.target_timestamp, f.yhat, f.yhat_lower, f.yhat_upper)
                        .where(f.host == source),
                    )
                )  # fmt: skip
                await conn.execute(
                    sa.insert(forecast_generations).from_select(
                        ["host", "metric", "generated_at"],
                        sa.select(sa.literal(host), g.metric, g.generated_at).where(
                            g.host == source
                        ),
                    )
                )
        if conn.dialect.name == "postgresql":
            async with engine.connect() as conn:
                await conn.execute(sa.text("COMMIT"))
                await conn.execute(sa.text("ANALYZE"))
    finally:
        await engine.dispose()
    return len(trained), len(missing)


async def timed(client: httpx.AsyncClient, path: str, n: int, **params: object) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        response = await client.get(path, params=params or None)
        out.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return out


async def idle_health(url: str, n: int) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client:
        await timed(client, "/health", 20)
        return await timed(client, "/health", n)


async def scheduled(
    url: str, hosts: int, limit: float
) -> tuple[list[float], float, int, dict[str, object]]:
    """/health back to back until every host has 14 active models; (ms, seconds, models, health)."""
    expected = hosts * len(METRIC_NAMES)
    busy: list[float] = []
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client:
        while True:
            t = time.perf_counter()
            response = await client.get("/health")
            busy.append((time.perf_counter() - t) * 1000)
            body = response.json()
            if body.get("active_models", 0) >= expected or time.perf_counter() - started > limit:
                return busy, time.perf_counter() - started, body.get("active_models", 0), body


async def reads(
    forecaster: str, gateway: str, n: int, *, heavy: bool = False, only: list[str] | None = None
) -> None:
    async with (
        httpx.AsyncClient(base_url=forecaster, timeout=30, trust_env=False) as direct,
        httpx.AsyncClient(base_url=gateway, timeout=30, trust_env=False) as api,
    ):
        spec = await direct.get("/forecast", params={"hours_ahead": 6, "metric": CPU})
        alerts = (await direct.get("/forecast/alerts")).json()
        print(
            f"\nhosts answered by GET /forecast?hours_ahead=6&metric={CPU}: "
            f"{len(spec.json()['hosts'])}; predicted breaches: {alerts['count']}\n"
        )
        cases: list[tuple[str, httpx.AsyncClient, str, dict[str, object]]] = [
            ("/health (baseline)", direct, "/health", {}),
            ("/forecast?host=host-000&hours_ahead=6&metric=cpu (one host, baseline)", direct,
             "/forecast", {"host": "host-000", "hours_ahead": 6, "metric": CPU}),
            ("/forecast?hours_ahead=6&metric=cpu (every host)", direct, "/forecast",
             {"hours_ahead": 6, "metric": CPU}),
            ("gateway /api/ml/forecast?hours_ahead=6&metric=cpu (every host)", api,
             "/api/ml/forecast", {"hours_ahead": 6, "metric": CPU}),
            ("/forecast?host=host-000&hours_ahead=6 (one host, 14 metrics, baseline)", direct,
             "/forecast", {"host": "host-000", "hours_ahead": 6}),
            ("/forecast?hours_ahead=1 (every host, 14 metrics)", direct, "/forecast",
             {"hours_ahead": 1}),
            ("/forecast/next-hour?host=host-000 (one host, baseline)", direct,
             "/forecast/next-hour", {"host": "host-000"}),
            ("/forecast/next-hour (every host)", direct, "/forecast/next-hour", {}),
            ("/forecast/alerts?host=host-000 (one host, baseline)", direct, "/forecast/alerts",
             {"host": "host-000"}),
            ("/forecast/alerts (every host)", direct, "/forecast/alerts", {}),
            ("gateway /api/ml/forecast/next-hour (every host)", api,
             "/api/ml/forecast/next-hour", {}),
            ("gateway /api/ml/forecast/alerts (every host)", api, "/api/ml/forecast/alerts", {}),
        ]  # fmt: skip
        if heavy:  # 33,600 points per answer with 100 hosts: seconds each on a loaded machine
            cases.append(
                ("/forecast?hours_ahead=6 (every host, 14 metrics)", direct, "/forecast",
                 {"hours_ahead": 6})
            )  # fmt: skip
        cases = [c for c in cases if not only or any(word in c[0] for word in only)]
        print("| request (ms) | n | p50 | p99 | max |\n|---|---|---|---|---|")
        for name, client, path, params in cases:
            await timed(client, path, 10, **params)  # warm the connection and the caches
            print(row(name, await timed(client, path, n, **params)), flush=True)


def scheduled_phase(url: str, args: argparse.Namespace, code: str | None = None) -> None:
    """/health idle, then during `--limit` seconds of scheduled training (the services run
    from `code`, default this checkout); hosts trained before are not due again."""
    with serve(url, "0", code=code) as off:
        idle = asyncio.run(idle_health(off.forecaster, args.requests))
    with serve(url, "24", code=code) as on:
        busy, seconds, models, _health = asyncio.run(
            scheduled(on.forecaster, args.hosts, args.limit)
        )
    label = code or "this checkout"
    print(f"\n{label}: {models // len(METRIC_NAMES)} hosts with models after {seconds:.1f} s\n")
    print("| request (ms) | n | p50 | p99 | max |\n|---|---|---|---|---|")
    print(row(f"forecaster /health, schedule off ({label})", idle))
    print(row(f"forecaster /health, during the scheduled training ({label})", busy), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--days", type=float, default=1.5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--limit", type=float, default=600.0, help="seconds of scheduled training at most"
    )
    parser.add_argument(
        "--reads-only",
        action="store_true",
        help="no schedule: train host-000 through the gateway, copy it to every host, read",
    )
    parser.add_argument(
        "--baseline-code", help="another checkout (e.g. /work/main): its reads first, same data"
    )
    parser.add_argument("--skip-reads", action="store_true", help="the schedule only")
    parser.add_argument("--heavy", action="store_true", help="also every host x 14 metrics x 6 h")
    parser.add_argument("--only", nargs="*", help="only the reads whose name has one of these")
    args = parser.parse_args()
    print("## Issue 10: forecasting (serving)\n")
    print(
        f"`python -m bench.bench_forecast_fleet --db {args.db} --hosts {args.hosts} "
        f"--days {args.days} --requests {args.requests}`, {os.cpu_count()} cores\n"
    )
    with database(args.db) as url:
        started = time.perf_counter()
        rows = asyncio.run(store(url, args.hosts, args.days))
        print(
            f"stored {rows} samples: {args.hosts} hosts x {args.days} days "
            f"({time.perf_counter() - started:.1f} s)\n"
        )
        if args.reads_only:
            with serve(url, "0") as once:
                started = time.perf_counter()
                trained = httpx.post(
                    f"{once.gateway}/api/ml/train/forecaster",
                    json={"host": "host-000"},
                    timeout=1800,
                )
                assert trained.status_code == 200, trained.text
            print(f"host-000 trained (14 metrics): {time.perf_counter() - started:.1f} s")
            trained_hosts, copied = asyncio.run(fill(url, args.hosts))
            print(f"hosts trained: {trained_hosts}; given copies: {copied}\n")
        else:
            if args.baseline_code:
                scheduled_phase(url, args, args.baseline_code)
            scheduled_phase(url, args)
            trained_hosts, copied = asyncio.run(fill(url, args.hosts))
            print(f"\nhosts trained: {trained_hosts}; given copies: {copied}\n")
            if args.skip_reads:
                return
        if args.baseline_code:
            print(f"\nBaseline: the services run from {args.baseline_code}")
            with serve(url, "0", code=args.baseline_code) as base:
                asyncio.run(
                    reads(base.forecaster, base.gateway, args.requests, heavy=args.heavy,
                          only=args.only)
                )  # fmt: skip
            print("\nThis checkout:")
        with serve(url, "0") as reading:
            asyncio.run(
                reads(
                    reading.forecaster,
                    reading.gateway,
                    args.requests,
                    heavy=args.heavy,
                    only=args.only,
                )
            )


if __name__ == "__main__":
    main()
