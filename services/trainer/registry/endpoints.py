"""HTTP routes of the model registry: list and read versions, activate one (rollback)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.trainer.deps import AnomalyServiceDep, ConnDep
from shared import registry
from shared.schemas.anomaly import ActivateResponse
from shared.schemas.models import ModelList, ModelListQuery, ModelSummary
from shared.web import RowId

router = APIRouter()


@router.get("/models", response_model=ModelList, summary="The model registry")
async def list_models(conn: ConnDep, query: Annotated[ModelListQuery, Query()]) -> ModelList:
    rows = await registry.list_models(conn, name=query.name, status=query.status, limit=query.limit)
    return ModelList(models=rows, count=len(rows))


@router.get("/models/{model_id}", response_model=ModelSummary, summary="One model version")
async def get_model(conn: ConnDep, model_id: RowId) -> ModelSummary:
    return await registry.get_model(conn, model_id)


@router.post(
    "/models/{model_id}/activate",
    response_model=ActivateResponse,
    summary="Make a stored version the active one (rollback)",
)
async def activate(service: AnomalyServiceDep, model_id: RowId) -> ActivateResponse:
    # The anomaly detector is the family that is activated by hand; its service swaps it in.
    return await service.activate(model_id)
