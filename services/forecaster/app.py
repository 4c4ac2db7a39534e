"""The forecaster service: Prophet models per metric, forecasts and breach alerts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.forecaster.routes import router
from services.forecaster.service import Forecaster
from shared.db import create_engine
from shared.incidents import Notifier
from shared.settings import Settings, get_settings
from shared.web import new_app


def create_app(
    settings: Settings | None = None,
    *,
    engine: AsyncEngine | None = None,
    refresh_loop: bool = True,
    executor: Executor | None = None,
    fit_workers: int = 2,
) -> FastAPI:
    """The app. Prophet runs on `executor` (default: `fit_workers` processes of its own,
    left running by the caller when one is handed in); `refresh_loop=False` leaves the
    scheduled refresh off (tests drive it through POST /forecast/refresh)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = engine or create_engine(settings.database_url)
        notifier = Notifier(settings, db)
        service = Forecaster(settings, db, notifier, executor=executor, workers=fit_workers)
        app.state.engine = db
        app.state.settings = settings
        app.state.notifier = notifier
        app.state.forecaster = service
        notifier.start()
        loop_task = (
            asyncio.create_task(service.refresh_loop(), name="forecast-refresh")
            if refresh_loop
            else None
        )
        try:
            yield
        finally:
            if loop_task is not None:
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
            service.close()
            await notifier.stop()
            if engine is None:
                await db.dispose()

    app = new_app(
        title="autofix-ml forecaster",
        description="Forecasts every metric hours ahead and alerts before a threshold is breached.",
        lifespan=lifespan,
    )
    app.include_router(router)
    return app
