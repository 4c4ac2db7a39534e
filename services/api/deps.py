"""The gateway's dependencies as `Annotated` aliases, for its endpoints.

Use: `async def route(health: HealthServiceDep) -> ...`. The proxied routes have their clients
bound when they are built (services/api/proxy/endpoints.py), not injected per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, params

from services.api.health.service import HealthService

# Run before every proxied route (proxy_router's loop): authentication goes here when it comes.
PROXY_DEPENDENCIES: tuple[params.Depends, ...] = ()


async def health_service(request: Request) -> HealthService:
    health: HealthService = request.app.state.health
    return health


HealthServiceDep = Annotated[HealthService, Depends(health_service)]
