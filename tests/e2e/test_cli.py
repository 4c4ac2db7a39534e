"""End to end: the services started through the `autofix-ml` command, talked to over HTTP."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from shared.db import create_engine
from shared.tables import metrics_history
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "services.cli"]


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    ports = {name: free_port() for name in ("API", "COLLECTOR", "TRAINER", "FORECASTER")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFIX_", "ML_"))}
    env.update({f"AUTOFIX_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(
        DATABASE_URL=database_url,
        ML_COLLECTION_INTERVAL="1",
        AUTOFIX_HOST="e2e-host",
        AUTOFIX_LOG_LEVEL="warning",
        AUTOFIX_HEALTH_CACHE_SECONDS="0",
    )
    env.update(extra)
    return env


def wait_for(url: str, *, timeout: float = 60, expect: int = 200) -> httpx.Response:
    """Wait until the gateway's health says every service is up."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == expect and response.json().get("status") == "healthy":
                return response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} not healthy within {timeout}s ({last})")


@pytest.fixture
def system(database_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`autofix-ml up` on free ports; yields the gateway URL and the process."""
    env = service_env(database_url)
    proc = subprocess.Popen([*CLI, "up"], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    gateway = f"http://127.0.0.1:{env['AUTOFIX_API_PORT']}"
    try:
        wait_for(f"{gateway}/api/ml/health")
        yield gateway, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_up_generates_reports_exports_and_stops(
    system: tuple[str, subprocess.Popen[bytes]], engine: object
) -> None:
    gateway, proc = system
    with httpx.Client(base_url=gateway, timeout=60) as client:
        generated = client.post("/api/ml/train/generate-synthetic", json={"days": 2, "seed": 7})
        assert generated.status_code == 200, generated.text
        body = generated.json()
        assert body["count"] == 2880

        stats = client.get("/api/ml/metrics/stats", params={"host": "synthetic"}).json()
        assert stats["total_samples"] == 2880
        assert stats["label_distribution"] == body["label_distribution"]
        assert stats["data_duration_hours"] == pytest.approx(48 - 1 / 60)

        as_json = client.get("/api/ml/metrics/export", params={"host": "synthetic"}).json()
        assert as_json["count"] == len(as_json["samples"]) == 2880
        as_csv = client.get("/api/ml/metrics/export", params={"host": "synthetic", "format": "csv"})
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert len(rows) == 2880
        assert [r["timestamp"] for r in rows] == [s["timestamp"] for s in as_json["samples"]]
        assert float(rows[100]["cpu_usage_percent"]) == pytest.approx(
            as_json["samples"][100]["cpu_usage_percent"]
        )

        # The collector samples its own host every second and records the gateway's traffic.
        deadline = time.monotonic() + 30
        own: dict[str, object] = {}
        while time.monotonic() < deadline:
            own = client.get("/api/ml/metrics/stats", params={"host": "e2e-host"}).json()
            if own["total_samples"] >= 3 and own["metrics"]["response_time_p50"]["count"] >= 1:
                break
            time.sleep(0.5)
        assert own["total_samples"] >= 3
        assert own["metrics"]["response_time_p50"]["count"] >= 1  # type: ignore[index]
        health = client.get("/api/ml/health").json()
        assert health["data_collection_active"] is True
        assert health["status"] == "healthy"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert proc.stderr is not None
    assert "all services stopped" in proc.stderr.read().decode()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway}/api/ml/health", timeout=2)


def test_a_stopped_service_is_a_503_naming_it(
    database_url: str, tmp_path: Path, engine: object
) -> None:
    env = service_env(database_url, ML_ENABLED="false")
    procs = {
        name: subprocess.Popen([*CLI, "serve", name], env=env, cwd=tmp_path)
        for name in ("collector", "trainer", "forecaster", "api")
    }
    gateway = f"http://127.0.0.1:{env['AUTOFIX_API_PORT']}"
    try:
        wait_for(f"{gateway}/api/ml/health")
        assert httpx.get(f"{gateway}/api/ml/models", timeout=10).status_code == 200
        procs["trainer"].send_signal(signal.SIGTERM)
        procs["trainer"].wait(timeout=30)
        started = time.monotonic()
        models = httpx.get(f"{gateway}/api/ml/models", timeout=30)
        assert time.monotonic() - started < 15
        assert models.status_code == 503
        assert "trainer" in models.json()["detail"]
        health = httpx.get(f"{gateway}/api/ml/health", timeout=30).json()
        assert health["services"]["trainer"]["status"] == "down"
        assert health["status"] == "degraded"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_db_sql_prints_the_postgresql_schema() -> None:
    out = subprocess.run([*CLI, "db", "sql"], capture_output=True, text=True, check=True).stdout
    for table in (
        "metrics_history",
        "anomaly_scores",
        "ml_models",
        "failure_predictions",
        "metric_forecasts",
        "llm_analyses",
        "incidents",
    ):
        assert f"CREATE TABLE {table}" in out
    assert "CREATE VIEW recent_metrics" in out
    assert "INTERVAL '24 hours'" in out
    assert "CREATE INDEX idx_metrics_timestamp ON metrics_history" in out


def test_synthetic_command_writes_csv_and_database(
    database_url: str, tmp_path: Path, engine: object
) -> None:
    out = tmp_path / "data" / "synthetic.csv"
    env = service_env(database_url)
    done = subprocess.run(
        [
            *CLI,
            "synthetic",
            "--days",
            "1",
            "--seed",
            "3",
            "--output",
            str(out),
            "--database",
            "--host",
            "cli-host",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1440 samples" in done.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1440
    assert {r["host"] for r in rows} == {"cli-host"}
    assert set(rows[0]) >= {"timestamp", "cpu_usage_percent", "error_rate_trend", "label"}
    refused = subprocess.run(
        [*CLI, "synthetic", "--days", "1"], env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "--output" in refused.stderr

    async def count() -> int:
        eng = create_engine(database_url)
        async with eng.connect() as conn:
            query = sa.select(sa.func.count()).where(metrics_history.c.host == "cli-host")
            n = int((await conn.execute(query)).scalar_one())
        await eng.dispose()
        return n

    assert asyncio.run(count()) == 1440
