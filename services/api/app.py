"""The gateway: /api/ml/* routed to the services, aggregated health, OpenAPI, /metrics.

Use: `uvicorn --factory services.api.app:create_app` (or `autofix-ml serve api`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from services.api.access.middleware import AccessMiddleware, Policies
from services.api.access.service import KeyStore
from services.api.dashboard.endpoints import STATIC_PREFIX, static_files
from services.api.dashboard.endpoints import router as dashboard_router
from services.api.deps import PROXY_DEPENDENCIES
from services.api.docs.endpoints import OPENAPI_URL
from services.api.docs.endpoints import router as docs_router
from services.api.health.endpoints import probes as probe_router
from services.api.health.endpoints import router as health_router
from services.api.health.service import HealthService
from services.api.metrics.endpoints import metrics_endpoint
from services.api.metrics.middleware import MetricsMiddleware
from services.api.proxy.client import ServiceClients
from services.api.proxy.endpoints import add_proxy_routes
from services.api.proxy.table import ADMIN_PATHS, ROUTES
from shared.observability import ServiceMetrics
from shared.schemas.common import nul_free_strings
from shared.settings import Settings, get_settings
from shared.web import install_error_handlers

DESCRIPTION = """
The ML layer of an infrastructure auto-remediation system: metrics collection,
synthetic training data, anomaly detection, forecasting and failure prediction.

Every route here is answered by one of the services behind the gateway; a service
that is down gives a 503 whose detail names it.

Access: send an API key as `Authorization: Bearer <key>` (or `X-API-Key: <key>`); each
route needs a role (reader, operator or admin), given in its description. Keys are made
with `autofix-ml keys create --role ...`. A gateway on loopback with no key made yet is
open.
"""
# Operations are grouped by feature in Swagger UI and ReDoc, in this order (proxy/table.py).
OPENAPI_TAGS = [
    {
        "name": "anomaly detection",
        "description": "Score samples, stored scores, feedback, thresholds, training the detector.",
    },
    {
        "name": "forecasting",
        "description": "Forecasts with bounds, predicted breaches, trends, "
        "training and refreshing the forecasters.",
    },
    {
        "name": "failure prediction",
        "description": "The probability that a host fails within 15, 30 or 60 minutes, and why.",
    },
    {"name": "incidents", "description": "Incidents opened by the detectors and forecasters."},
    {"name": "models", "description": "The model registry: versions, evaluations, activation."},
    {
        "name": "samples",
        "description": "Collected metric samples: ingest, statistics, series for charts, export.",
    },
    {"name": "synthetic data", "description": "Labelled synthetic samples for training."},
    {"name": "health", "description": "Health of the gateway and the services behind it."},
]
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    clients = ServiceClients(settings)
    keys = KeyStore(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await keys.start()
        app.state.observability.engine = keys.engine
        clients.open()
        app.state.health = HealthService(clients, ttl=settings.health_cache_seconds)
        try:
            yield
        finally:
            await clients.aclose()
            await keys.stop()

    app = FastAPI(
        title="autofix-ml",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from local files by services/api/docs
        redoc_url=None,
        openapi_url=OPENAPI_URL,
        openapi_tags=OPENAPI_TAGS,
    )
    app.state.observability = ServiceMetrics(
        "api",
        stall_intervals=settings.loop_stall_intervals,
        stall_min_seconds=settings.loop_stall_min_seconds,
    )
    app.state.request_metrics = app.state.observability.requests
    app.state.keys = keys
    install_error_handlers(app)
    add_proxy_routes(app, ROUTES, clients=clients, dependencies=PROXY_DEPENDENCIES)
    app.include_router(health_router)
    app.include_router(probe_router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.include_router(docs_router)
    app.include_router(dashboard_router)
    app.mount(STATIC_PREFIX, static_files(), name="static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            # Text inputs refuse NUL (422): the schema says so, for clients and fuzzers.
            nul_free_strings(schema["paths"])
            nul_free_strings(schema.get("components", {}).get("schemas", {}))
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Outermost last: CORS (preflights answered first), metrics (rejections counted), access.
    app.add_middleware(
        AccessMiddleware, policies=Policies.of(ROUTES, settings), keys=keys, settings=settings
    )
    app.add_middleware(
        MetricsMiddleware,
        metrics=app.state.request_metrics,
        exclude=frozenset({"/metrics"}),
        admin=ADMIN_PATHS,
        admin_prefixes=(STATIC_PREFIX + "/",),
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    return app
