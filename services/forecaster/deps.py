"""Dependencies of the forecaster's endpoints, as `Annotated` aliases.

Usage: `async def route(forecaster: ForecasterDep) -> ...`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.forecaster.forecasting.read_cache import ReadCache
from services.forecaster.forecasting.service import Forecaster


async def forecaster(request: Request) -> Forecaster:
    # async on purpose: FastAPI runs a plain `def` dependency on its thread pool.
    service: Forecaster = request.app.state.forecaster
    return service


ForecasterDep = Annotated[Forecaster, Depends(forecaster)]


async def read_cache(request: Request) -> ReadCache:
    cache: ReadCache = request.app.state.read_cache
    return cache


ReadCacheDep = Annotated[ReadCache, Depends(read_cache)]
