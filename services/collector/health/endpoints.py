"""GET /health of the collector."""

from __future__ import annotations

from fastapi import APIRouter

from services.collector.deps import SamplingDep, StoredDataDep
from services.collector.health.service import collector_health
from shared.schemas.health import CollectorHealth

router = APIRouter()


@router.get("/health", response_model=CollectorHealth, summary="Collector health")
async def health(sampling: SamplingDep, stored: StoredDataDep) -> CollectorHealth:
    return collector_health(await stored.get(), sampling)
