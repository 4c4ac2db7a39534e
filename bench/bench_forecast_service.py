"""Forecaster service benchmark: training through the gateway, read latency, health while fitting.

    python -m bench.bench_forecast_service                 # PostgreSQL and SQLite
    python -m bench.bench_forecast_service --only sqlite   # one engine
    python -m bench.bench_forecast_service --requests 1000
    python -m bench.bench_forecast_service --start 2025-06-01T00:00Z   # the same data every run

The forecaster and the gateway run as their own processes (`autofix-ml serve`, uvicorn) on
loopback ports, as `autofix-ml up` runs them; this process is the HTTP client, one
kept-alive connection per target. Data: SyntheticDataGenerator(seed=42), 30 days ending
now (or from --start), stored under host "synthetic" through store_frame. PostgreSQL: a throwaway database
on postgresql+asyncpg://postgres@127.0.0.1:5432, created and dropped here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import psutil
from sqlalchemy.engine import make_url

from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared.db import create_engine
from shared.migrate import upgrade
from tests.conftest import free_port

PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(name: str, ms: list[float]) -> str:
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {pct(ms, 99):.2f} | {max(ms):.2f} |"
    )


async def store(url: str, days: int, start: datetime | None) -> int:
    engine = create_engine(url)
    try:
        frame = SyntheticDataGenerator(seed=42).generate_full_training_set(days, start=start)
        async with engine.begin() as conn:
            return await store_frame(conn, frame, host="synthetic")
    finally:
        await engine.dispose()


def start(service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", service],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children so far, including reaped grandchildren
    (CmdStan, which the worker processes wait for)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


async def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{url} exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def timed_gets(client: httpx.AsyncClient, path: str, n: int, **params: object) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        response = await client.get(path, params=params or None)
        out.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
    return out


async def run(engine_name: str, url: str, *, requests: int, data_start: datetime | None) -> None:
    print(f"\n### {engine_name}\n")
    rows = await store(url, 30, data_start)
    print(f"stored {rows} samples (30 days, seed 42)\n")
    ports = {"forecaster": free_port(), "api": free_port()}
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AUTOFIX_FORECASTER_PORT": str(ports["forecaster"]),
        "AUTOFIX_API_PORT": str(ports["api"]),
        "FORECASTER_URL": f"http://127.0.0.1:{ports['forecaster']}",
        "AUTOFIX_LOG_LEVEL": "warning",
        "PYTHONWARNINGS": "ignore",
        # Trained on request only: the schedule would fit the stored host at start-up.
        "ML_FORECAST_RETRAIN_HOURS": "0",
    }
    procs = [start("forecaster", env), start("api", env)]
    forecaster_url = f"http://127.0.0.1:{ports['forecaster']}"
    gateway_url = f"http://127.0.0.1:{ports['api']}"
    try:
        await wait_up(f"{forecaster_url}/health", procs[0])
        await wait_up(f"{gateway_url}/api/ml/forecast/alerts", procs[1])
        async with (
            httpx.AsyncClient(base_url=gateway_url, timeout=600, trust_env=False) as gateway,
            httpx.AsyncClient(base_url=forecaster_url, timeout=10, trust_env=False) as direct,
        ):
            idle = await timed_gets(direct, "/health", requests)

            # 1. Cold: the first fit also starts the worker processes (Prophet import).
            started = time.perf_counter()
            cold = await gateway.post("/api/ml/train/forecaster", json={})
            cold_wall = time.perf_counter() - started
            assert cold.status_code == 200, cold.text[:500]
            # 2. Warm, nothing else running: the fit time a user sees from then on.
            started = time.perf_counter()
            cpu_before = tree_cpu(procs[0].pid)
            response = await gateway.post("/api/ml/train/forecaster", json={})
            wall = time.perf_counter() - started
            cpu = tree_cpu(procs[0].pid) - cpu_before
            assert response.status_code == 200, response.text[:500]
            body = response.json()
            # 3. Warm again, with /health of the forecaster polled back to back throughout.
            started = time.perf_counter()
            fit = asyncio.create_task(gateway.post("/api/ml/train/forecaster", json={}))
            busy: list[float] = []
            while not fit.done():
                t = time.perf_counter()
                health = await direct.get("/health")
                if health.json().get("fit_running"):
                    busy.append((time.perf_counter() - t) * 1000)
            polled = await fit
            polled_wall = time.perf_counter() - started
            assert polled.status_code == 200, polled.text[:500]

            print("| what | value |\n|---|---|")
            print(
                f"| POST /api/ml/train/forecaster, 14 metrics x 30 days, first (workers start) | {cold_wall:.2f} s |"
            )
            print(f"| POST /api/ml/train/forecaster, 14 metrics x 30 days, warm | {wall:.2f} s |")
            print(
                f"| CPU of the forecaster, its workers and CmdStan during that request | {cpu:.2f} s |"
            )
            print(f"| the same while /health is polled back to back | {polled_wall:.2f} s |")
            print(
                f"| of which fitting + holdout evaluation (2 worker processes) | {body['fit_seconds']:.2f} s |"
            )
            print(f"| models / failures | {len(body['models'])} / {len(body['failures'])} |")
            print(f"| forecast points stored | {body['forecasts_written']} |")
            beats = [
                m["metric"] for m in body["models"] if (m["evaluation"] or {}).get("beats_naive")
            ]
            print(
                f"| metrics beating the better seasonal naive | {len(beats)} of {len(body['models'])} |"
            )
            for m in body["models"]:
                if m["metric"] in (
                    "cpu_usage_percent",
                    "memory_usage_percent",
                    "response_time_p95",
                ):
                    e = m["evaluation"]
                    print(
                        f"| {m['metric']}: MAE / best naive MAE / coverage | "
                        f"{e['mae']:.3f} / {min(e['naive_day_mae'], e['naive_week_mae']):.3f} / "
                        f"{e['coverage']:.2f} |"
                    )
            print()

            # Warm the gateway's pooled connection, then measure.
            await timed_gets(
                gateway, "/api/ml/forecast", 20, hours_ahead=6, metric="cpu_usage_percent"
            )
            forecast = await timed_gets(
                gateway, "/api/ml/forecast", requests, hours_ahead=6, metric="cpu_usage_percent"
            )
            forecast_all = await timed_gets(gateway, "/api/ml/forecast", requests, hours_ahead=24)
            alerts = await timed_gets(gateway, "/api/ml/forecast/alerts", requests)
            next_hour = await timed_gets(gateway, "/api/ml/forecast/next-hour", requests)

            print("| request (ms) | n | p50 | p99 | max |\n|---|---|---|---|---|")
            print(summary("forecaster /health, idle (baseline)", idle))
            print(summary("forecaster /health, during the fit", busy))
            print(
                summary("gateway /api/ml/forecast?hours_ahead=6&metric=cpu_usage_percent", forecast)
            )
            print(
                summary(
                    "gateway /api/ml/forecast?hours_ahead=24 (14 metrics, 1,344 points)",
                    forecast_all,
                )
            )
            print(summary("gateway /api/ml/forecast/alerts", alerts))
            print(summary("gateway /api/ml/forecast/next-hour", next_hour))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN.replace("+asyncpg", ""))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("postgresql", "sqlite"))
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        help="first sample (ISO time); default: 30 days before now",
    )
    args = parser.parse_args()
    print("## Forecasting service (issue 4)\n")
    print(
        f"`python -m bench.bench_forecast_service`, {os.cpu_count()} cores, {args.requests} requests each"
    )
    if args.only in (None, "postgresql"):
        name = f"bench_forecast_{uuid.uuid4().hex[:8]}"
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
        try:
            upgrade(url)
            asyncio.run(run("PostgreSQL", url, requests=args.requests, data_start=args.start))
        finally:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="bench-forecast-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            asyncio.run(run("SQLite", url, requests=args.requests, data_start=args.start))


if __name__ == "__main__":
    main()
