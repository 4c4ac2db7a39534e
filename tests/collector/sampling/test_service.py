"""The sampling runtime: samples buffered while the database is away, and the sampling loop."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.app import create_app
from services.collector.samples import repository
from services.collector.samples.window import SampleFilter
from services.collector.sampling.sampler import MetricsCollector
from services.collector.sampling.service import SamplingService
from shared.settings import Settings
from tests.collector.conftest import away_engine, count_rows, wait_for
from tests.conftest import app_client


@pytest.mark.usefixtures("settle_sqlite_workers")
async def test_samples_wait_in_the_buffer_until_the_database_returns(absent_database):
    url, restore = absent_database
    engine = away_engine(url)
    settings = Settings(
        database_url=url, hostname="buffered-host", scrape_url="http://127.0.0.1:9/metrics"
    )
    try:
        async with httpx.AsyncClient() as client:
            runtime = SamplingService(settings, engine, MetricsCollector(settings, client))
            taken = [await runtime.collect_once() for _ in range(3)]
            assert len(runtime.buffer) == 3
            assert runtime.samples_written == 0

            await restore()
            assert await runtime.flush() == 3

        assert len(runtime.buffer) == 0
        assert runtime.samples_written == 3
        stats = await repository.statistics(engine, SampleFilter())
        assert stats.total_samples == 3
        assert stats.hosts == ["buffered-host"]
        assert stats.start == min(s["timestamp"] for s in taken)
        assert stats.metrics["memory_usage_mb"].count == 3
    finally:
        await engine.dispose()


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
