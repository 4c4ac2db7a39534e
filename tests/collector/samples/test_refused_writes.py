"""Writes the database cannot keep are refused clearly: a full database is a 507 naming it (and
health says so), a sample older than the retention window a 422 naming its field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.app import create_app as create_collector
from services.trainer.app import create_app as create_trainer
from shared.db import create_engine
from shared.migrate import upgrade
from shared.settings import Settings
from shared.tables import metrics_history
from tests.conftest import app_client


@pytest.fixture
async def full_sqlite(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite file that cannot grow: every connection caps it at its current size
    (PRAGMA max_page_count; SQLite then answers "database or disk is full", as on a full disk)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/full.db"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _cap(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA max_page_count = 1")  # clamped to the pages it has now
        cursor.close()

    try:
        yield engine
    finally:
        await engine.dispose()


def samples(n: int, *, start: datetime | None = None) -> list[dict[str, Any]]:
    start = start or datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    return [
        {
            "timestamp": (start + timedelta(seconds=i)).isoformat(),
            "host": "full",
            "cpu_usage_percent": 50.0,
            "memory_usage_mb": 1000.0 + i,
        }
        for i in range(n)
    ]


async def test_a_full_database_is_a_507_naming_it_and_health_says_degraded(
    settings: Settings, full_sqlite: AsyncEngine
) -> None:
    async with app_client(create_collector(settings, engine=full_sqlite)) as client:
        refused = await client.post("/metrics/ingest", json={"samples": samples(2000)})
        health = (await client.get("/health")).json()
        ready = await client.get("/ready")
    assert refused.status_code == 507, refused.text
    detail = refused.json()["detail"]
    assert "database storage full" in detail and "database or disk is full" in detail
    assert health["status"] == "degraded" and health["database"] is True
    assert any("database storage full" in p for p in health["problems"])
    # Still ready: reads are served; the problem is reported, not hidden.
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    async with full_sqlite.connect() as conn:
        count = await conn.execute(sa.select(sa.func.count()).select_from(metrics_history))
        assert count.scalar_one() == 0


async def test_generating_into_a_full_database_is_a_507(
    settings: Settings, full_sqlite: AsyncEngine
) -> None:
    async with app_client(create_trainer(settings, engine=full_sqlite)) as client:
        refused = await client.post("/train/generate-synthetic", json={"days": 2, "host": "g"})
        health = (await client.get("/health")).json()
    assert refused.status_code == 507, refused.text
    assert "database or disk is full" in refused.json()["detail"]
    assert any("database storage full" in p for p in health["problems"])


async def test_a_sample_older_than_the_retention_window_is_a_422_naming_it(
    settings: Settings, engine: AsyncEngine
) -> None:
    settings = settings.model_copy(update={"retention_days": 30.0})
    batch = samples(2)
    batch[1]["timestamp"] = "2024-01-15T10:30:00Z"  # the README's old example
    async with app_client(create_collector(settings, engine=engine)) as client:
        refused = await client.post("/metrics/ingest", json={"samples": batch})
        inside = await client.post(
            "/metrics/ingest",
            json={"samples": samples(1, start=datetime.now(UTC) - timedelta(days=29))},
        )
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["detail"]
    assert error["field"] == "body.samples.1.timestamp"
    assert "retention window" in error["msg"] and "ML_DATA_RETENTION_DAYS=30" in error["msg"]
    assert inside.status_code == 201
    async with engine.connect() as conn:
        count = await conn.execute(sa.select(sa.func.count()).select_from(metrics_history))
        assert count.scalar_one() == 1  # the refused batch stored nothing
