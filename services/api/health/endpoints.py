"""GET /api/ml/health: the aggregate, 503 when the collector is down."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from services.api.deps import HealthServiceDep
from services.api.proxy.table import API_PREFIX
from shared.schemas.health import HealthResponse

router = APIRouter(prefix=API_PREFIX)


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
