"""The gateway's dependencies as `Annotated` aliases, for its endpoints.

Use: `async def route(health: HealthServiceDep) -> ...`. The proxied routes have their clients
bound when they are built (services/api/proxy/endpoints.py), not injected per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, params

from services.api.health.service import HealthService

# Run before every proxied route (the registration loop). Access control is not here but in
# access/middleware.py: it must answer before FastAPI reads and parses the body.
PROXY_DEPENDENCIES: tuple[params.Depends, ...] = ()


async def health_service(request: Request) -> HealthService:
    health: HealthService = request.app.state.health
    return health


HealthServiceDep = Annotated[HealthService, Depends(health_service)]
