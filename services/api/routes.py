"""The public API, /api/ml/*: each route documented with the shared models, answered by a service."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from services.api.proxy import SERVICES, ServiceClients
from shared.errors import AppError
from shared.schemas.common import ErrorResponse, RowId
from shared.schemas.health import HealthResponse, ServiceState
from shared.schemas.incidents import IncidentList, IncidentOut, ResolveRequest
from shared.schemas.models import ModelList, ModelSummary
from shared.schemas.samples import (
    EndDateQuery,
    ExportResponse,
    HostQuery,
    IngestRequest,
    IngestResponse,
    StartDateQuery,
    StatsResponse,
)
from shared.schemas.synthetic import GenerateSyntheticRequest, GenerateSyntheticResponse

router = APIRouter(prefix="/api/ml")

ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid input: each field and the reason."},
    503: {"model": ErrorResponse, "description": "A service is down; the detail names it."},
}


def clients(request: Request) -> ServiceClients:
    c: ServiceClients = request.app.state.clients
    return c


async def service_states(svc: ServiceClients) -> dict[str, tuple[ServiceState, dict[str, Any]]]:
    """Each service's /health, concurrently; a failure is that service being down."""

    async def one(name: str) -> tuple[ServiceState, dict[str, Any]]:
        url = svc.settings.service_url(name)
        started = time.perf_counter()
        try:
            response = await svc.request(
                name, "GET", "/health", timeout=min(svc.settings.http_timeout, 2.0)
            )
            body: dict[str, Any] = orjson.loads(response.content)
            latency = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                return ServiceState(
                    status="down",
                    url=url,
                    latency_ms=latency,
                    detail=f"health answered {response.status_code}",
                ), {}
            status: Literal["up", "degraded"] = "up" if body.get("database", True) else "degraded"
            detail = None if status == "up" else "database unreachable"
            return ServiceState(status=status, url=url, latency_ms=latency, detail=detail), body
        except AppError as exc:
            return ServiceState(status="down", url=url, detail=str(exc.detail)), {}
        except ValueError:
            return ServiceState(status="down", url=url, detail="invalid health answer"), {}

    results = await asyncio.gather(*(one(name) for name in SERVICES))
    return dict(zip(SERVICES, results, strict=True))


def compose_health(states: dict[str, tuple[ServiceState, dict[str, Any]]]) -> HealthResponse:
    collector = states["collector"][1]
    trainer = states["trainer"][1]
    down = [name for name, (state, _) in states.items() if state.status != "up"]
    if states["collector"][0].status == "down":
        status: Literal["healthy", "degraded", "unhealthy"] = "unhealthy"
    else:
        status = "degraded" if down else "healthy"
    if not down:
        message = "ML module operational"
    else:
        message = "; ".join(
            f"{name} service {states[name][0].status}"
            + (f": {states[name][0].detail}" if states[name][0].detail else "")
            for name in down
        )
    return HealthResponse(
        status=status,
        metrics_collected=int(collector.get("metrics_collected", 0)),
        data_collection_active=bool(collector.get("data_collection_active", False)),
        oldest_data_age_hours=collector.get("oldest_data_age_hours"),
        active_models=int(trainer.get("active_models", 0)),
        message=message,
        services={name: state for name, (state, _) in states.items()},
    )


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="ML module status, metrics count, data freshness and each service's state",
    responses={503: {"model": HealthResponse, "description": "The collector is down."}},
)
async def health(request: Request) -> Response:
    health_answer: HealthResponse = await request.app.state.health_cache.get()
    code = 503 if health_answer.status == "unhealthy" else 200
    return JSONResponse(health_answer.model_dump(mode="json"), status_code=code)


@router.get(
    "/metrics/stats",
    response_model=StatsResponse,
    responses=ERRORS,
    summary="Statistical summary of collected metrics",
)
async def metrics_stats(
    request: Request,
    host: HostQuery = None,
    start_date: StartDateQuery = None,
    end_date: EndDateQuery = None,
) -> Response:
    return await clients(request).forward("collector", "/metrics/stats", request)


@router.get(
    "/metrics/export",
    response_model=ExportResponse,
    responses={
        **ERRORS,
        200: {"content": {"text/csv": {}}, "description": "JSON or CSV"},
        400: {"model": ErrorResponse, "description": "start_date after end_date"},
    },
    summary="Export training data as JSON or CSV, streamed",
)
async def metrics_export(
    request: Request,
    format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
    host: HostQuery = None,
    start_date: StartDateQuery = None,
    end_date: EndDateQuery = None,
) -> Response:
    return await clients(request).stream("collector", "/metrics/export", request)


@router.post(
    "/metrics/ingest",
    response_model=IngestResponse,
    status_code=201,
    responses=ERRORS,
    summary="Push a batch of samples from another host",
)
async def metrics_ingest(request: Request, body: IngestRequest) -> Response:
    return await clients(request).forward("collector", "/metrics/ingest", request)


@router.post(
    "/metrics/collect", responses=ERRORS, summary="Take one sample of the collector's host now"
)
async def metrics_collect(request: Request) -> Response:
    return await clients(request).forward("collector", "/metrics/collect", request)


@router.get(
    "/models",
    response_model=ModelList,
    responses=ERRORS,
    summary="All trained models with versions and evaluation figures",
)
async def models(
    request: Request,
    name: Annotated[str | None, Query(description="Only this model family.")] = None,
    status: Annotated[str | None, Query(description="Only this status, e.g. active.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> Response:
    return await clients(request).forward("trainer", "/models", request)


@router.get(
    "/models/{model_id}", response_model=ModelSummary, responses=ERRORS, summary="One model version"
)
async def model(request: Request, model_id: RowId) -> Response:
    return await clients(request).forward("trainer", f"/models/{model_id}", request)


@router.post(
    "/train/generate-synthetic",
    response_model=GenerateSyntheticResponse,
    responses=ERRORS,
    summary="Generate labelled synthetic training data and store it",
)
async def generate_synthetic(request: Request, body: GenerateSyntheticRequest) -> Response:
    return await clients(request).forward(
        "trainer",
        "/train/generate-synthetic",
        request,
        timeout=max(clients(request).settings.http_timeout, 120),
    )


@router.get(
    "/incidents",
    response_model=IncidentList,
    responses=ERRORS,
    summary="Incidents (ML_ANOMALY, predicted_breach, ...), newest first",
)
async def incident_list(
    request: Request,
    status: Annotated[
        Literal["open", "resolved"] | None, Query(description="open or resolved")
    ] = None,
    type: Annotated[str | None, Query(description="ML_ANOMALY, predicted_breach, ...")] = None,
    host: HostQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> Response:
    return await clients(request).forward("trainer", "/incidents", request)


@router.get(
    "/incidents/{incident_id}", response_model=IncidentOut, responses=ERRORS, summary="One incident"
)
async def incident(request: Request, incident_id: RowId) -> Response:
    return await clients(request).forward("trainer", f"/incidents/{incident_id}", request)


@router.post(
    "/incidents/{incident_id}/resolve",
    response_model=IncidentOut,
    responses={**ERRORS, 409: {"model": ErrorResponse, "description": "Already resolved"}},
    summary="Resolve an incident",
)
async def incident_resolve(
    request: Request, incident_id: RowId, body: ResolveRequest | None = None
) -> Response:
    return await clients(request).forward("trainer", f"/incidents/{incident_id}/resolve", request)
