"""The forecaster service: Prophet models per metric, forecasts and breach alerts.

Usage: `uvicorn --factory services.forecaster.app:create_app` (or `autofix-ml serve forecaster`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.forecaster.forecasting import endpoints as forecasting
from services.forecaster.forecasting.prophet_model import stored_model
from services.forecaster.forecasting.read_cache import ReadCache
from services.forecaster.forecasting.repository import MODEL_NAME
from services.forecaster.forecasting.service import Forecaster, ForecasterModels
from services.forecaster.health import endpoints as health
from shared import workers
from shared.db import database
from shared.incidents.notifier import Notifier
from shared.loops import BackgroundLoop, stop_all
from shared.settings import Settings, get_settings
from shared.web import new_app

# Added to the fit workers' nice value (0 = normal, 19 = lowest priority).
FIT_WORKER_NICENESS = 10
REFRESH_RETRY_SECONDS = 10.0


def create_app(
    settings: Settings | None = None,
    *,
    engine: AsyncEngine | None = None,
    refresh_loop: bool = True,
    retrain_loop: bool | None = None,
    executor: Executor | None = None,
    fit_workers: int = 2,
) -> FastAPI:
    """The app. Prophet runs on `executor` (default: `fit_workers` processes made here, left
    running by the caller when one is handed in); `refresh_loop=False` leaves the scheduled
    refresh off (tests drive it through POST /forecast/refresh), and the scheduled training
    too unless `retrain_loop` says otherwise."""
    scheduled_training = refresh_loop if retrain_loop is None else retrain_loop
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with database(settings.database_url, engine) as db:
            # Fitting in threads of this process held the GIL long enough to slow /health.
            # ...and at normal priority they took the 2 cores from the loop: the fits (and
            # CmdStan, their child) run niced, so /health and the reads come first.
            pool = executor or workers.process_pool(
                fit_workers, initializer=os.nice, initargs=(FIT_WORKER_NICENESS,)
            )
            notifier = Notifier(settings, db)
            service = Forecaster(
                settings,
                db,
                notifier,
                executor=pool,
                models=ForecasterModels(MODEL_NAME, stored_model),
                warm_workers=fit_workers if executor is None else 0,
            )
            loops = []
            if refresh_loop:
                loops.append(
                    BackgroundLoop(
                        "forecast-refresh",
                        service.refresh_step,
                        interval=lambda: service.refresh_seconds,
                        # A refresh refused by the database (away) is recomputed and written
                        # soon after it answers again, not an interval later.
                        retry_after=REFRESH_RETRY_SECONDS,
                    )
                )
            if scheduled_training:
                # Every host with enough history is refitted every ML_FORECAST_RETRAIN_HOURS.
                loops.append(
                    BackgroundLoop(
                        "forecast-retrain",
                        service.retrain_step,
                        interval=lambda: service.retrain_seconds,
                    )
                )
            app.state.engine = db
            app.state.settings = settings
            app.state.notifier = notifier
            app.state.forecaster = service
            app.state.read_cache = ReadCache(service.thresholds)
            app.state.loops = [*notifier.loops, *loops]
            app.state.observability.sources = [notifier.samples]
            notifier.start()
            for loop in loops:
                loop.start()
            try:
                yield
            finally:
                await stop_all(loops)
                service.close()
                if executor is None:
                    workers.shutdown(pool)
                await notifier.stop()

    app = new_app(
        title="autofix-ml forecaster",
        description="Forecasts every metric hours ahead and alerts before a threshold is breached.",
        lifespan=lifespan,
        settings=settings,
    )
    app.include_router(health.router)
    app.include_router(forecasting.router)
    return app
