"""The gateway: /api/ml/* routed to the services, aggregated health, OpenAPI, /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from services.api import routes_anomaly, routes_forecast
from services.api.metrics import MetricsMiddleware, RequestMetrics, metrics_endpoint
from services.api.proxy import ServiceClients
from services.api.routes import compose_health, router, service_states
from shared.schemas.health import HealthResponse
from shared.settings import Settings, get_settings
from shared.web import TTLCache, install_error_handlers

DESCRIPTION = """
The ML layer of an infrastructure auto-remediation system: metrics collection,
synthetic training data, anomaly detection, forecasting and failure prediction.

Every route here is answered by one of the services behind the gateway; a service
that is down gives a 503 whose detail names it.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    request_metrics = RequestMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service_clients = ServiceClients(settings)
        app.state.clients = service_clients
        app.state.settings = settings

        async def compute() -> HealthResponse:
            return compose_health(await service_states(service_clients))

        app.state.health_cache = TTLCache(settings.health_cache_seconds, compute)
        try:
            yield
        finally:
            await service_clients.aclose()

    app = FastAPI(
        title="autofix-ml",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url="/api/redoc",
        openapi_url="/api/openapi.json",
    )
    app.state.request_metrics = request_metrics
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(routes_anomaly.router)
    app.include_router(routes_forecast.router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/api/docs")

    app.add_middleware(MetricsMiddleware, metrics=request_metrics, exclude=frozenset({"/metrics"}))
    return app
