"""Retention: rows older than ML_DATA_RETENTION_DAYS are deleted, by the repository and the job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.app import create_app
from services.collector.samples import repository
from services.collector.samples.window import SampleFilter
from shared.clock import utcnow
from shared.settings import Settings
from tests.collector.conftest import count_rows, wait_for
from tests.conftest import app_client


def aged(days: float, host: str) -> dict[str, Any]:
    return {"timestamp": utcnow() - timedelta(days=days), "host": host, "label": "normal"}


async def test_delete_older_than_removes_only_old_rows(engine: AsyncEngine):
    async with engine.begin() as conn:
        await repository.insert_samples(
            conn, [aged(120, "old"), aged(91, "old"), aged(89, "new"), aged(0.01, "new")]
        )
    async with engine.begin() as conn:
        assert await repository.delete_older_than(conn, 90) == 2
    stats = await repository.statistics(engine, SampleFilter())
    assert stats.total_samples == 2
    assert stats.hosts == ["new"]


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
    stats = await repository.statistics(engine, SampleFilter())
    assert stats.hosts == ["new"]
