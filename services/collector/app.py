"""The collector service: sampling loop, ingest, statistics, export, retention.

Usage: `uvicorn --factory services.collector.app:create_app`; tests pass `engine=`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.health import endpoints as health
from services.collector.health.service import stored_data_cache
from services.collector.samples import endpoints as samples
from services.collector.samples.service import retention_loop
from services.collector.sampling import endpoints as sampling
from services.collector.sampling.sampler import MetricsCollector
from services.collector.sampling.service import SamplingService, sampling_loop
from shared.db import database
from shared.http import make_client
from shared.loops import BackgroundLoop, stop_all
from shared.settings import Settings, get_settings
from shared.web import new_app

log = logging.getLogger("autofix_ml.collector")


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    """The collector app; `engine` lets a test hand in its own database."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with database(settings.database_url, engine) as db:
            client = make_client(timeout=settings.scrape_timeout)
            service = SamplingService(settings, db, MetricsCollector(settings, client))
            loops: list[BackgroundLoop] = []
            if settings.ml_enabled:
                loops.append(sampling_loop(service))
            else:
                log.info("MetricsCollector disabled (ML_ENABLED=false)")
            loops.append(retention_loop(db, settings))

            app.state.settings = settings
            app.state.engine = db
            app.state.sampling = service
            service.storage = app.state.storage
            app.state.stored_data = stored_data_cache(db, service)
            app.state.loops = loops
            app.state.observability.sources = [service.samples]
            for loop in loops:
                loop.start()
            try:
                yield
            finally:
                await stop_all(loops)
                await service.flush()
                await client.aclose()

    app = new_app(
        title="autofix-ml collector",
        description="Samples host and application metrics into metrics_history.",
        lifespan=lifespan,
        settings=settings,
    )
    app.include_router(health.router)
    app.include_router(samples.router)
    app.include_router(sampling.router)
    return app
