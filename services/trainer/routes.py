"""HTTP routes of the trainer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from shared import registry
from shared.schemas.common import RowId
from shared.schemas.health import ServiceHealth
from shared.schemas.models import ModelList, ModelListQuery, ModelSummary
from shared.web import ConnDep, EngineDep

router = APIRouter()


@router.get("/health", response_model=ServiceHealth, summary="Trainer health")
async def health(request: Request, engine: EngineDep) -> ServiceHealth:
    try:
        async with engine.connect() as conn:
            active = await registry.count_active(conn)
        return ServiceHealth(
            status="healthy", service="trainer", database=True, active_models=active
        )
    except Exception:  # noqa: BLE001 - reported, not raised
        return ServiceHealth(status="degraded", service="trainer", database=False)


@router.get("/models", response_model=ModelList, summary="The model registry")
async def list_models(conn: ConnDep, query: Annotated[ModelListQuery, Query()]) -> ModelList:
    rows = await registry.list_models(conn, name=query.name, status=query.status, limit=query.limit)
    return ModelList(models=rows, count=len(rows))


@router.get("/models/{model_id}", response_model=ModelSummary, summary="One model version")
async def get_model(conn: ConnDep, model_id: RowId) -> ModelSummary:
    return ModelSummary.model_validate(await registry.get_model(conn, model_id))
