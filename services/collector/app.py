"""The collector service: sampling loop, ingest, statistics, export, retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector import repository
from services.collector.routes import router
from services.collector.runtime import CollectorRuntime
from services.collector.sampler import MetricsCollector
from shared.db import create_engine
from shared.settings import Settings, get_settings
from shared.web import TTLCache, new_app


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    """The collector app; `engine` lets a test hand in its own database."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = engine or create_engine(settings.database_url)
        client = httpx.AsyncClient(timeout=settings.scrape_timeout)
        rt = CollectorRuntime(settings, db, MetricsCollector(settings, client))

        async def db_summary() -> tuple[bool, int, datetime | None, datetime | None]:
            try:
                async with db.connect() as conn:
                    count, oldest, newest = await repository.summary(conn)
                return True, count, oldest, newest
            except Exception:  # noqa: BLE001 - health reports the database as down
                return False, rt.samples_written, None, None

        app.state.engine = db
        app.state.runtime = rt
        app.state.summary_cache = TTLCache(1.0, db_summary)
        rt.start()
        try:
            yield
        finally:
            await rt.stop()
            await client.aclose()
            if engine is None:
                await db.dispose()

    app = new_app(
        title="autofix-ml collector",
        description="Samples host and application metrics into metrics_history.",
        lifespan=lifespan,
    )
    app.include_router(router)
    return app
