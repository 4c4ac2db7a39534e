"""Readiness of a service: the database answers within a bound, and whether it is full.

Usage: `answer = await readiness("trainer", engine, app.state.storage)`; a 503 when
`answer.status == "not_ready"`.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import ping
from shared.schemas.health import Readiness
from shared.storage import StorageState

# A probe answers within a Kubernetes probe's timeout even when the database hangs.
PING_TIMEOUT = 2.0


async def database_answers(engine: AsyncEngine, *, timeout: float = PING_TIMEOUT) -> bool:
    try:
        return await asyncio.wait_for(ping(engine), timeout)
    except TimeoutError:
        return False


async def readiness(service: str, engine: AsyncEngine, storage: StorageState) -> Readiness:
    database = await database_answers(engine)
    problems = [] if database else ["database unreachable"]
    full = storage.problem()
    if full:
        problems.append(full)
    status = "not_ready" if not database else ("degraded" if problems else "ready")
    return Readiness(status=status, service=service, database=database, problems=problems)
