"""Storing generated frames: rows in the sample columns, replacing a host's window, the blocking API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared.clock import utc
from shared.db import SAMPLE_COLUMNS, create_engine, frame_records
from shared.migrate import upgrade
from shared.tables import metrics_history

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday


@pytest.fixture(scope="module")
def day() -> pd.DataFrame:
    return SyntheticDataGenerator(seed=42).generate_full_training_set(1, start=START)


def test_frame_records_follow_the_sample_columns(day: pd.DataFrame) -> None:
    rows = list(frame_records(day.head(3), host="h1", sqlite=False))
    assert len(rows) == 3
    first = dict(zip(SAMPLE_COLUMNS, rows[0], strict=True))
    assert first["timestamp"] == START
    assert first["host"] == "h1"
    assert first["cpu_usage_percent"] == day["cpu_usage_percent"].iloc[0]
    assert first["label"] == day["label"].iloc[0]


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/t.db"
    upgrade(url)
    return url


async def count_rows(engine, host: str) -> int:
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(metrics_history.c.host == host)
        return int((await conn.execute(query)).scalar_one())


async def test_store_frame_replaces_the_hosts_rows_in_the_window(sqlite_url: str) -> None:
    day = SyntheticDataGenerator(seed=5).generate_full_training_set(1, start=START)
    engine = create_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            assert await store_frame(conn, day, host="other") == 1440
            assert await store_frame(conn, day, host="synthetic") == 1440
        async with engine.begin() as conn:
            assert await store_frame(conn, day.iloc[:600], host="synthetic") == 600
        assert await count_rows(engine, "synthetic") == 1440
        assert await count_rows(engine, "other") == 1440
        async with engine.connect() as conn:
            query = sa.select(
                sa.func.min(metrics_history.c.timestamp),
                sa.func.max(metrics_history.c.timestamp),
                sa.func.sum(metrics_history.c.active_requests),
            ).where(metrics_history.c.host == "synthetic")
            first, last, requests = (await conn.execute(query)).one()
        assert utc(first) == START
        assert utc(last) == START + timedelta(minutes=1439)
        assert requests == day["active_requests"].sum()
    finally:
        await engine.dispose()


def test_save_to_database_stores_the_frame(sqlite_url: str) -> None:
    generator = SyntheticDataGenerator(seed=6)
    day = generator.generate_full_training_set(1, start=START)
    assert generator.save_to_database(day, database_url=sqlite_url) == 1440
    assert generator.save_to_database(day, database_url=sqlite_url) == 1440

    async def stored() -> int:
        engine = create_engine(sqlite_url)
        try:
            return await count_rows(engine, "synthetic")
        finally:
            await engine.dispose()

    assert asyncio.run(stored()) == 1440
