"""Benchmark plumbing: throwaway databases and the four services as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from shared.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    """A migrated throwaway database: 'postgresql' (created and dropped) or 'sqlite' (temp file)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="autofix-bench-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            yield url
        return
    name = f"autofix_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Services:
    gateway: str
    urls: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]

    def pid(self, name: str) -> int:
        return self.procs[name].pid


@contextlib.contextmanager
def services(database_url: str, **env_extra: str) -> Iterator[Services]:
    """The four services as `autofix-ml serve` processes on free loopback ports."""
    ports = {name: free_port() for name in ("api", "collector", "trainer", "forecaster")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFIX_", "ML_"))}
    env.update({f"AUTOFIX_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env.update(DATABASE_URL=database_url, AUTOFIX_LOG_LEVEL="warning", ML_ENABLED="false")
    # No scheduled forecaster training unless a bench asks for it (it would fit stored hosts).
    env.update(ML_FORECAST_RETRAIN_HOURS="0")
    # Benchmarks measure throughput from one address: no rate limit unless a bench sets one.
    env.update(AUTOFIX_RATE_PREDICT="0", AUTOFIX_RATE_INGEST="0")
    env.update(env_extra)
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name], env=env)
        for name in ports
    }
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{urls['api']}/api/ml/health", timeout=2)
                if health.status_code == 200 and health.json()["status"] == "healthy":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("services did not start")
            time.sleep(0.2)
        yield Services(urls["api"], urls, procs)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class WrkResult:
    requests_per_second: float
    p99: str
    socket_errors: str
    non_2xx: int

    def line(self) -> str:
        return (
            f"{self.requests_per_second:,.0f} req/s, p99 {self.p99}, {self.socket_errors}, "
            f"non-2xx {self.non_2xx}"
        )


def wrk(
    url: str,
    *,
    connections: int = 50,
    seconds: int = 10,
    script: str | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """Load `url` from a second process with wrk (Debian's package) and parse its summary."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency"]
    if script:
        command += ["-s", script]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors:.*", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return WrkResult(
        requests_per_second=float(rps.group(1)) if rps else 0.0,
        p99=p99.group(1) if p99 else "?",
        socket_errors=errors.group(0) if errors else "no socket errors",
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )
