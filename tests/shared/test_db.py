"""The engine a service runs on: a test's is left open, one made for the service is disposed."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine, database


async def test_an_engine_handed_in_is_used_and_left_open(sqlite_url: str) -> None:
    mine = create_engine(sqlite_url)
    try:
        async with database("sqlite+aiosqlite:///unused.db", mine) as db:
            assert db is mine
        async with mine.connect() as conn:  # still usable after the lifespan
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
    finally:
        await mine.dispose()


async def test_an_engine_made_for_the_service_is_disposed(sqlite_url: str) -> None:
    made: AsyncEngine | None = None
    async with database(sqlite_url) as db:
        made = db
        async with db.connect() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
        assert db.pool.checkedin() == 1
    assert made is not None and made.pool.checkedin() == 0
