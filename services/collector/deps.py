"""The collector's request dependencies, as `Annotated` aliases for endpoint parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.collector.health.service import StoredData
from services.collector.sampling.service import SamplingService
from shared.settings import Settings
from shared.web import TTLCache


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def sampling_service(request: Request) -> SamplingService:
    value: SamplingService = request.app.state.sampling
    return value


def stored_data(request: Request) -> TTLCache[StoredData]:
    value: TTLCache[StoredData] = request.app.state.stored_data
    return value


SettingsDep = Annotated[Settings, Depends(settings)]
SamplingDep = Annotated[SamplingService, Depends(sampling_service)]
StoredDataDep = Annotated[TTLCache[StoredData], Depends(stored_data)]
