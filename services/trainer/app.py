"""The trainer service: synthetic data, the model registry, anomaly detection and incidents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import AnomalyService
from services.trainer.anomaly_routes import router as anomaly_router
from services.trainer.incidents import endpoints as incidents
from services.trainer.routes import router
from services.trainer.synthetic import endpoints as synthetic
from shared.db import create_engine
from shared.incidents import Notifier
from shared.settings import Settings, get_settings
from shared.web import new_app


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = engine or create_engine(settings.database_url)
        app.state.engine = db
        app.state.settings = settings
        app.state.notifier = Notifier(settings, db)
        app.state.loops = [app.state.notifier.loop]
        app.state.notifier.start()
        app.state.anomaly = AnomalyService(settings, db, app.state.notifier)
        await app.state.anomaly.start()
        try:
            yield
        finally:
            await app.state.anomaly.stop()
            await app.state.notifier.stop()
            if engine is None:
                await db.dispose()

    app = new_app(
        title="autofix-ml trainer",
        description="Synthetic training data, model training and the model registry.",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.include_router(synthetic.router)
    app.include_router(incidents.router)
    app.include_router(anomaly_router)
    return app
