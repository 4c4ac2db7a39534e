"""Fixtures of the collector tests: a database that is away until restored, row counts, polling."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.samples import repository
from shared.db import create_engine
from shared.migrate import upgrade
from tests.conftest import _admin


async def count_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await repository.summary(conn)).count


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


async def wait_for(condition: Callable[[], Awaitable[bool]], *, seconds: float = 15.0) -> None:
    """Poll until `condition` holds; fail the test after `seconds` (a deadline, not a measurement)."""
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail("condition not reached in time")
