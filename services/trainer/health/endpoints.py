"""The trainer's health check: the database answers, and how many model versions are active."""

from __future__ import annotations

from fastapi import APIRouter

from services.trainer.deps import EngineDep
from shared import registry
from shared.schemas.health import ServiceHealth

router = APIRouter()


@router.get("/health", response_model=ServiceHealth, summary="Trainer health")
async def health(engine: EngineDep) -> ServiceHealth:
    try:
        async with engine.connect() as conn:
            active = await registry.count_active(conn)
        return ServiceHealth(
            status="healthy", service="trainer", database=True, active_models=active
        )
    except Exception:  # noqa: BLE001 - reported, not raised
        return ServiceHealth(status="degraded", service="trainer", database=False)
