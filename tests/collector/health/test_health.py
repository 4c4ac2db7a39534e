"""GET /health of the collector: database state, buffered and dropped samples."""

from __future__ import annotations

import pytest

from services.collector.app import create_app
from shared.settings import Settings
from tests.collector.conftest import away_engine
from tests.conftest import app_client


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
