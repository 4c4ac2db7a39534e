"""GET /api/ml/health (the aggregate, 503 when the collector is down), and the probes: GET
/health (liveness: the gateway answers) and GET /ready (readiness: the services and the
database)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from services.api.deps import HealthServiceDep
from services.api.proxy.table import API_PREFIX
from shared.schemas.health import GatewayReadiness, HealthResponse, Liveness

router = APIRouter(prefix=API_PREFIX, tags=["health"])
probes = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="ML module status, metrics count, data freshness and each service's state",
    responses={503: {"model": HealthResponse, "description": "The collector is down."}},
)
async def health(service: HealthServiceDep) -> Response:
    answer = await service.get()
    code = 503 if answer.status == "unhealthy" else 200
    return JSONResponse(answer.model_dump(mode="json"), status_code=code)


@probes.get("/health", response_model=Liveness, summary="Liveness: the gateway answers")
async def live() -> Liveness:
    # Nothing downstream: a restart of the gateway cannot fix the database or a service.
    return Liveness(status="alive")


@probes.get(
    "/ready",
    response_model=GatewayReadiness,
    summary="Readiness: the collector and the database answer (the others are reported)",
    responses={503: {"model": GatewayReadiness, "description": "Collector or database away."}},
)
async def ready(service: HealthServiceDep) -> Response:
    answer = await service.ready()
    code = 503 if answer.status == "not_ready" else 200
    return JSONResponse(answer.model_dump(mode="json"), status_code=code)
