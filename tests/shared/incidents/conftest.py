"""Helpers of the incident tests: a test incident raised through the repository, a webhook receiver."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.incidents import repository as incidents
from shared.incidents.repository import Change
from shared.schemas.incidents import IncidentOut


async def open_incident(engine: AsyncEngine, **kw: Any) -> tuple[IncidentOut, Change]:
    """An ML_ANOMALY incident on h1 (medium), with `kw` overriding any argument."""
    args: dict[str, Any] = dict(
        type="ML_ANOMALY",
        host="h1",
        dedup_key="ML_ANOMALY:h1",
        severity="medium",
        title="anomaly on h1",
    )
    args.update(kw)
    async with engine.begin() as conn:
        return await incidents.raise_incident(conn, **args)


class Receiver:
    """A webhook receiver on loopback that fails the first `failures` posts with a 503."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> JSONResponse:
            self.attempts += 1
            if self.attempts <= self.failures:
                return JSONResponse({"detail": "busy"}, status_code=503)
            self.bodies.append(await request.json())
            return JSONResponse({"ok": True})

    async def wait(self, n: int) -> None:
        for _ in range(500):
            if len(self.bodies) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"receiver got {len(self.bodies)} of {n}")
