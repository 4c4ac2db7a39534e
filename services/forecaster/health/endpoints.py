"""GET /health of the forecaster: training state, last refresh, database reachability."""

from __future__ import annotations

from fastapi import APIRouter

from services.forecaster.deps import ForecasterDep
from shared.schemas.forecast import ForecasterHealth

router = APIRouter()


@router.get("/health", response_model=ForecasterHealth, summary="Forecaster health")
async def health(forecaster: ForecasterDep) -> ForecasterHealth:
    return await forecaster.health()
