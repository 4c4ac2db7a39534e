"""One sample per host and time: concurrent generations, retried pushes and the migration that
removes the duplicates stored before the unique index."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.app import create_app as collector_app
from services.trainer.app import create_app as trainer_app
from shared.clock import utc
from shared.db import create_engine
from shared.migrate import upgrade
from shared.settings import Settings
from shared.tables import metrics_history as mh
from tests.conftest import _admin, app_client


async def counts(engine: AsyncEngine, host: str) -> tuple[int, int]:
    """Rows of `host`, and distinct timestamps among them."""
    query = sa.select(sa.func.count(), sa.func.count(sa.distinct(mh.c.timestamp))).where(
        mh.c.host == host
    )
    async with engine.connect() as conn:
        total, distinct = (await conn.execute(query)).one()
    return int(total), int(distinct)


async def test_concurrent_generations_of_one_host_store_each_minute_once(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with app_client(trainer_app(settings, engine=engine)) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/train/generate-synthetic", json={"host": "dup", "days": 1, "seed": seed}
                )
                for seed in (1, 2, 3)
            )
        )
    assert [a.status_code for a in answers] == [200, 200, 200]
    total, distinct = await counts(engine, "dup")
    assert total == distinct
    assert 1440 <= total <= 1445  # a minute boundary between calls may leave a few older rows


def sample(minute: int, value: float, now: datetime) -> dict[str, object]:
    ts = now - timedelta(minutes=minute)
    return {"timestamp": ts.isoformat(), "host": "retry", "cpu_usage_percent": value}


async def test_a_retried_push_stores_each_sample_once_with_the_newest_values(
    settings: Settings, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)  # once: a minute may turn
    batch = [sample(m, 10.0 + m, now) for m in range(5)]
    async with app_client(collector_app(settings, engine=engine)) as client:
        for _ in range(3):
            answer = await client.post("/metrics/ingest", json={"samples": batch})
            assert answer.status_code == 201, answer.text
        # Twice in one batch: the later one wins.
        again = [sample(0, 50.0, now), sample(0, 60.0, now)]
        assert (await client.post("/metrics/ingest", json={"samples": again})).status_code == 201
    assert await counts(engine, "retry") == (5, 5)
    query = sa.select(mh.c.cpu_usage_percent).where(mh.c.host == "retry").order_by(mh.c.timestamp)
    async with engine.connect() as conn:
        values = [float(v) for v in (await conn.execute(query)).scalars()]
    assert values == [14.0, 13.0, 12.0, 11.0, 60.0]


@pytest.fixture
def before_unique_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own, on the engine of `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path}/dups.db"
        return
    name = f"autofix_dup_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(database_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_the_migration_keeps_one_row_per_host_and_time(before_unique_url: str) -> None:
    url = before_unique_url
    await asyncio.to_thread(upgrade, url, "0004_forecast")
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    later = stamp + timedelta(minutes=1)
    rows = [(stamp, "a", 1.0), (stamp, "a", 2.0), (stamp, "a", 3.0), (stamp, "b", 4.0)]
    rows.append((later, "a", 5.0))
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                mh.insert(),
                [{"timestamp": t, "host": h, "cpu_usage_percent": v} for t, h, v in rows],
            )
        await engine.dispose()
        await asyncio.to_thread(upgrade, url, "head")
        query = sa.select(mh.c.host, mh.c.timestamp, mh.c.cpu_usage_percent)
        async with engine.connect() as conn:
            kept = sorted((h, utc(t), float(v)) for h, t, v in (await conn.execute(query)).all())
            # The index refuses a second row for one host and time from now on.
            with pytest.raises(sa.exc.IntegrityError):
                await conn.execute(mh.insert(), {"timestamp": later, "host": "a"})
    finally:
        await engine.dispose()
    assert kept == [("a", stamp, 3.0), ("a", later, 5.0), ("b", stamp, 4.0)]
