"""Incidents in the database: one open per cause, cooldown reopening, resolving, typed records."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import utcnow
from shared.errors import Conflict, NotFound
from shared.incidents import repository as incidents
from tests.shared.incidents.conftest import open_incident


async def test_one_open_incident_per_cause(engine: AsyncEngine) -> None:
    first, change1 = await open_incident(engine, details={"scores": [0.9]})
    second, change2 = await open_incident(engine, severity="critical", details={"top": ["cpu"]})
    assert (change1, change2) == ("opened", "updated")
    assert second.id == first.id
    assert second.severity == "critical"
    assert second.details == {"scores": [0.9], "top": ["cpu"]}
    lower, _ = await open_incident(engine, severity="low")
    assert lower.severity == "critical"  # never downgraded while open
    other, change3 = await open_incident(engine, host="h2", dedup_key="ML_ANOMALY:h2")
    assert change3 == "opened" and other.id != first.id
    async with engine.connect() as conn:
        assert len(await incidents.list_incidents(conn, status="open")) == 2
        assert [i.host for i in await incidents.list_incidents(conn, host="h2")] == ["h2"]


async def test_cooldown_reopens_instead_of_duplicating(engine: AsyncEngine) -> None:
    now = utcnow()
    opened, _ = await open_incident(engine, now=now)
    async with engine.begin() as conn:
        resolved = await incidents.resolve_incident(conn, dedup_key="ML_ANOMALY:h1", now=now)
    assert resolved is not None and resolved.status == "resolved"
    again, change = await open_incident(engine, now=now + timedelta(minutes=5), cooldown_minutes=15)
    assert change == "reopened" and again.id == opened.id and again.status == "open"
    async with engine.begin() as conn:
        await incidents.resolve_incident(conn, incident_id=again.id, now=now + timedelta(minutes=6))
    later, change = await open_incident(
        engine, now=now + timedelta(minutes=30), cooldown_minutes=15
    )
    assert change == "opened" and later.id != opened.id


async def test_resolve_errors(engine: AsyncEngine) -> None:
    opened, _ = await open_incident(engine)
    async with engine.begin() as conn:
        await incidents.resolve_incident(conn, incident_id=opened.id, reason="fixed")
    async with engine.begin() as conn:
        with pytest.raises(Conflict):
            await incidents.resolve_incident(conn, incident_id=opened.id)
        with pytest.raises(NotFound):
            await incidents.resolve_incident(conn, incident_id=999_999)
        assert await incidents.resolve_incident(conn, dedup_key="nothing-open") is None
        assert (await incidents.get_incident(conn, opened.id)).details["resolution"] == "fixed"
