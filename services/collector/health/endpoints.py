"""GET /health (liveness, with the details) and GET /ready (readiness) of the collector."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from services.collector.deps import SamplingDep, StoredDataDep
from services.collector.health.service import collector_health
from shared.schemas.health import CollectorHealth, Readiness
from shared.web import EngineDep, StorageDep, ready_answer

router = APIRouter()


@router.get("/health", response_model=CollectorHealth, summary="Collector health")
async def health(
    sampling: SamplingDep, stored: StoredDataDep, storage: StorageDep
) -> CollectorHealth:
    return collector_health(await stored.get(), sampling, storage)


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Collector readiness: 503 while the database does not answer",
    responses={503: {"model": Readiness, "description": "The database does not answer."}},
)
async def ready(engine: EngineDep, storage: StorageDep) -> Response:
    return await ready_answer("collector", engine, storage)
