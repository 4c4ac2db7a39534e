"""The trainer's health check: database, background loops, scoring lag."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.trainer.deps import AnomalyServiceDep, EngineDep
from services.trainer.health.service import trainer_health
from shared.schemas.health import Readiness, TrainerHealth
from shared.web import StorageDep, ready_answer

router = APIRouter()


@router.get(
    "/health",
    response_model=TrainerHealth,
    summary="Trainer health: database, background loops, scoring lag",
)
async def health(
    request: Request, engine: EngineDep, anomaly: AnomalyServiceDep, storage: StorageDep
) -> TrainerHealth:
    state = request.app.state
    return await trainer_health(engine, state.settings, state.loops, anomaly, storage)


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Trainer readiness: 503 while the database does not answer",
    responses={503: {"model": Readiness, "description": "The database does not answer."}},
)
async def ready(engine: EngineDep, storage: StorageDep) -> Response:
    return await ready_answer("trainer", engine, storage)
