"""The gateway's dependencies as `Annotated` aliases, for its endpoints.

Use: `async def route(clients: ServiceClientsDep) -> ...`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, params

from services.api.health.service import HealthService
from services.api.proxy.client import ServiceClients

# Run before every proxied route (proxy_router's loop): authentication goes here when it comes.
PROXY_DEPENDENCIES: tuple[params.Depends, ...] = ()


async def service_clients(request: Request) -> ServiceClients:
    clients: ServiceClients = request.app.state.clients
    return clients


async def health_service(request: Request) -> HealthService:
    health: HealthService = request.app.state.health
    return health


ServiceClientsDep = Annotated[ServiceClients, Depends(service_clients)]
HealthServiceDep = Annotated[HealthService, Depends(health_service)]
