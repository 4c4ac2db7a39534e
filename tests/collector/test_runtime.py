"""The collector's background work: the write buffer, an absent database, retention, the loop."""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector import repository
from services.collector.app import create_app
from services.collector.runtime import CollectorRuntime, SampleBuffer
from services.collector.sampler import MetricsCollector
from shared.db import create_engine, utcnow
from shared.migrate import upgrade
from shared.settings import Settings
from tests.conftest import _admin, app_client


def item(n: int) -> dict[str, Any]:
    return {"n": n}


def numbers(items: list[dict[str, Any]]) -> list[int]:
    return [i["n"] for i in items]


def test_buffer_keeps_the_newest_and_counts_drops():
    buffer = SampleBuffer(3)
    buffer.extend([item(1), item(2)])
    buffer.extend([item(3), item(4), item(5)])
    assert len(buffer) == 3
    assert buffer.dropped == 2
    assert numbers(buffer.drain()) == [3, 4, 5]
    assert len(buffer) == 0
    assert buffer.dropped == 2  # draining is not dropping


def test_requeued_samples_go_back_ahead_of_newer_ones():
    buffer = SampleBuffer(10)
    buffer.extend([item(1), item(2)])
    failed = buffer.drain()
    buffer.extend([item(3)])  # taken while the write was failing
    buffer.requeue(failed)
    assert numbers(buffer.drain()) == [1, 2, 3]
    assert buffer.dropped == 0


def test_requeue_into_a_full_buffer_drops_the_oldest():
    buffer = SampleBuffer(3)
    buffer.extend([item(1), item(2)])
    failed = buffer.drain()
    buffer.extend([item(3), item(4)])
    buffer.requeue(failed)
    assert numbers(buffer.drain()) == [2, 3, 4]
    assert buffer.dropped == 1


# ---------------------------------------------------------------- a database that is away


async def count_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count, _, _ = await repository.summary(conn)
    return count


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def absent_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """A database URL that cannot be opened yet, and a coroutine that brings it (migrated) back."""
    if request.param == "sqlite":
        folder = tmp_path / "db"
        url = f"sqlite+aiosqlite:///{folder / 'collector.db'}"

        async def restore() -> None:
            folder.mkdir()
            await asyncio.to_thread(upgrade, url)

        yield url, restore
        return

    admin_url: str = request.getfixturevalue("pg_admin_url")
    name = f"autofix_away_{uuid.uuid4().hex[:10]}"
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    async def restore() -> None:
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(upgrade, url)

    try:
        yield url, restore
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def away_engine(url: str) -> AsyncEngine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        # create_engine makes the SQLite file's folder; take it away again.
        shutil.rmtree(Path(str(make_url(url).database)).parent)
    return engine


@pytest.mark.usefixtures("settle_sqlite_workers")
async def test_samples_wait_in_the_buffer_until_the_database_returns(absent_database):
    url, restore = absent_database
    engine = away_engine(url)
    settings = Settings(
        database_url=url, hostname="buffered-host", scrape_url="http://127.0.0.1:9/metrics"
    )
    try:
        async with httpx.AsyncClient() as client:
            runtime = CollectorRuntime(settings, engine, MetricsCollector(settings, client))
            taken = [await runtime.collect_once() for _ in range(3)]
            assert len(runtime.buffer) == 3
            assert runtime.samples_written == 0

            await restore()
            assert await runtime.flush() == 3

        assert len(runtime.buffer) == 0
        assert runtime.samples_written == 3
        stats = await repository.statistics(engine, repository.SampleFilter())
        assert stats["total_samples"] == 3
        assert stats["hosts"] == ["buffered-host"]
        assert stats["start"] == min(s["timestamp"] for s in taken)
        assert stats["metrics"]["memory_usage_mb"]["count"] == 3
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("settle_sqlite_workers")
async def test_health_reports_buffered_dropped_and_database(absent_database):
    url, restore = absent_database
    engine = away_engine(url)
    settings = Settings(
        database_url=url,
        ml_enabled=False,
        hostname="test-host",
        scrape_url="http://127.0.0.1:9/metrics",
        buffer_size=2,
    )
    try:
        async with app_client(create_app(settings, engine=engine)) as client:
            for _ in range(3):
                assert (await client.post("/metrics/collect")).status_code == 200
            away = (await client.get("/health")).json()

            await restore()
            assert (await client.post("/metrics/collect")).status_code == 200
            back = (await client.get("/health")).json()
            rows = (await client.get("/metrics/export")).json()["count"]
    finally:
        await engine.dispose()

    assert away["status"] == "degraded"
    assert away["database"] is False
    assert away["buffered_samples"] == 2
    assert away["dropped_samples"] == 1
    assert away["data_collection_active"] is False  # ML_ENABLED=false: no loop
    assert back["status"] == "healthy"
    assert back["database"] is True
    assert back["buffered_samples"] == 0
    # The first sample after the return joins the full buffer before the write, pushing out
    # the oldest: the buffer is a hard bound.
    assert back["dropped_samples"] == 2
    assert back["metrics_collected"] == rows == 2
    assert back["newest_data_age_seconds"] is not None


# ---------------------------------------------------------------- retention


def aged(days: float, host: str) -> dict[str, Any]:
    return {"timestamp": utcnow() - timedelta(days=days), "host": host, "label": "normal"}


async def test_delete_older_than_removes_only_old_rows(engine: AsyncEngine):
    async with engine.begin() as conn:
        await repository.insert_samples(
            conn, [aged(120, "old"), aged(91, "old"), aged(89, "new"), aged(0.01, "new")]
        )
    async with engine.begin() as conn:
        assert await repository.delete_older_than(conn, 90) == 2
    stats = await repository.statistics(engine, repository.SampleFilter())
    assert stats["total_samples"] == 2
    assert stats["hosts"] == ["new"]


async def wait_for(condition: Callable[[], Awaitable[bool]], *, seconds: float = 15.0) -> None:
    """Poll until `condition` holds; fail the test after `seconds` (a deadline, not a measurement)."""
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail("condition not reached in time")


async def test_retention_job_applies_the_configured_days(settings: Settings, engine: AsyncEngine):
    old = [aged(days, "old") for days in (11, 30, 400)]
    new = [aged(days, "new") for days in (0.5, 9)]
    samples = [{**s, "timestamp": s["timestamp"].isoformat()} for s in old + new]
    # The ingest path takes old timestamps; retention is off (huge) while they go in.
    loader = settings.model_copy(update={"retention_days": 10_000})
    async with app_client(create_app(loader, engine=engine)) as client:
        assert (await client.post("/metrics/ingest", json={"samples": samples})).is_success
    assert await count_rows(engine) == 5

    ten_days = settings.model_copy(update={"retention_days": 10})
    async with app_client(create_app(ten_days, engine=engine)):

        async def old_rows_gone() -> bool:
            return await count_rows(engine) == 2

        await wait_for(old_rows_gone)
    stats = await repository.statistics(engine, repository.SampleFilter())
    assert stats["hosts"] == ["new"]


# ---------------------------------------------------------------- the sampling loop


async def test_enabled_loop_samples_and_logs_start(
    settings: Settings, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="autofix_ml.collector")
    enabled = settings.model_copy(update={"ml_enabled": True, "collection_interval": 0.2})
    async with app_client(create_app(enabled, engine=engine)) as client:

        async def two_rows() -> bool:
            return await count_rows(engine) >= 2

        await wait_for(two_rows)
        health = (await client.get("/health")).json()
        rows = (await client.get("/metrics/export")).json()["samples"]

    assert any("MetricsCollector started" in r.getMessage() for r in caplog.records)
    assert health["data_collection_active"] is True
    assert health["last_collection_at"] is not None
    assert health["collection_interval_seconds"] == 0.2
    assert {row["host"] for row in rows} == {"test-host"}
    assert all(0 <= row["cpu_usage_percent"] <= 100 for row in rows)
    assert all(row["active_requests"] is None for row in rows)  # nothing to scrape here


async def test_disabled_loop_writes_nothing(
    settings: Settings, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="autofix_ml.collector")
    disabled = settings.model_copy(update={"ml_enabled": False, "collection_interval": 0.1})
    async with app_client(create_app(disabled, engine=engine)) as client:
        await asyncio.sleep(0.6)  # several intervals: an enabled loop would have written rows
        health = (await client.get("/health")).json()
    assert await count_rows(engine) == 0
    assert health["data_collection_active"] is False
    assert health["last_collection_at"] is None
    assert not any("MetricsCollector started" in r.getMessage() for r in caplog.records)
