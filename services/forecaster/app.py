"""The forecaster service: Prophet models per metric, forecasts and breach alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine, ping
from shared.schemas import ServiceHealth
from shared.service import new_app
from shared.settings import Settings, get_settings

router = APIRouter()


@router.get("/health", response_model=ServiceHealth, summary="Forecaster health")
async def health(request: Request) -> ServiceHealth:
    database = await ping(request.app.state.engine)
    return ServiceHealth(
        status="healthy" if database else "degraded", service="forecaster", database=database
    )


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = engine or create_engine(settings.database_url)
        app.state.engine = db
        app.state.settings = settings
        try:
            yield
        finally:
            if engine is None:
                await db.dispose()

    app = new_app(
        title="autofix-ml forecaster",
        description="Forecasts every metric hours ahead and alerts before a threshold is breached.",
        lifespan=lifespan,
    )
    app.include_router(router)
    return app
