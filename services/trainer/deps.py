"""The trainer's request dependencies: ``async def route(service: AnomalyServiceDep): ...``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.trainer.anomaly.service import AnomalyService
from shared.web import ConnDep, EngineDep

__all__ = ["AnomalyServiceDep", "ConnDep", "EngineDep"]


async def anomaly_service(request: Request) -> AnomalyService:
    # async: FastAPI would run a plain function in its thread pool, a hop on every predict.
    service: AnomalyService = request.app.state.anomaly
    return service


AnomalyServiceDep = Annotated[AnomalyService, Depends(anomaly_service)]
