"""Helpers of the incident tests: raising a test incident through the repository."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from shared import incidents
from shared.incidents import Change
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
