"""GET /health of the forecaster (training state, last refresh, database) and GET /ready."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from services.forecaster.deps import ForecasterDep
from shared.schemas.forecast import ForecasterHealth
from shared.schemas.health import Readiness
from shared.web import EngineDep, StorageDep, ready_answer

router = APIRouter()


@router.get("/health", response_model=ForecasterHealth, summary="Forecaster health")
async def health(forecaster: ForecasterDep, storage: StorageDep) -> ForecasterHealth:
    answer = await forecaster.health()
    full = storage.problem()
    if full:
        answer = answer.model_copy(
            update={"status": "degraded", "problems": [*answer.problems, full]}
        )
    return answer


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Forecaster readiness: 503 while the database does not answer",
    responses={503: {"model": Readiness, "description": "The database does not answer."}},
)
async def ready(engine: EngineDep, storage: StorageDep) -> Response:
    return await ready_answer("forecaster", engine, storage)
