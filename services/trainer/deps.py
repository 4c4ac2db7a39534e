"""The trainer's request dependencies: ``async def route(service: AnomalyServiceDep): ...``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.trainer.analysis.service import AnalysisService
from services.trainer.anomaly.service import AnomalyService
from services.trainer.failure.service import FailureService
from shared.incidents.notifier import Notifier
from shared.web import ConnDep, EngineDep

__all__ = [
    "AnalysisServiceDep",
    "AnomalyServiceDep",
    "ConnDep",
    "EngineDep",
    "FailureServiceDep",
    "NotifierDep",
]


async def anomaly_service(request: Request) -> AnomalyService:
    # async: FastAPI would run a plain function in its thread pool, a hop on every predict.
    service: AnomalyService = request.app.state.anomaly
    return service


async def failure_service(request: Request) -> FailureService:
    service: FailureService = request.app.state.failure
    return service


async def notifier(request: Request) -> Notifier:
    value: Notifier = request.app.state.notifier
    return value


async def analysis_service(request: Request) -> AnalysisService:
    service: AnalysisService = request.app.state.analysis
    return service


AnalysisServiceDep = Annotated[AnalysisService, Depends(analysis_service)]
AnomalyServiceDep = Annotated[AnomalyService, Depends(anomaly_service)]
NotifierDep = Annotated[Notifier, Depends(notifier)]
FailureServiceDep = Annotated[FailureService, Depends(failure_service)]
