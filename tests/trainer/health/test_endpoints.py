"""The trainer's health check, with and without its database."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app
from shared.db import create_engine
from shared.settings import Settings
from tests.conftest import app_client


async def test_health(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "service": "trainer",
        "database": True,
        "active_models": 0,
    }


@pytest.mark.usefixtures("settle_sqlite_workers")
async def test_health_without_a_database_is_degraded(tmp_path: Path):
    folder = tmp_path / "db"
    url = f"sqlite+aiosqlite:///{folder / 'trainer.db'}"
    engine = create_engine(url)
    shutil.rmtree(folder)  # create_engine made the folder; without it SQLite cannot open the file
    try:
        async with app_client(create_app(Settings(database_url=url), engine=engine)) as client:
            response = await client.get("/health")
    finally:
        await engine.dispose()
    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "service": "trainer",
        "database": False,
        "active_models": 0,
    }
