"""ML_ANOMALY incidents kept in the database: open, refreshed while ongoing, resolved after
normal samples or by hand (silenced until the condition clears, then re-armed), and a restart
that continues where the last process left. The state machine alone, then through the
repository on SQLite and PostgreSQL with the trainer's resolve route."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly.alerting import IncidentKeeper, Observation
from services.trainer.anomaly.tracker import HostTracker, ScoringModel
from services.trainer.app import create_app
from shared.clock import utcnow
from shared.incidents import repository as incidents
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings
from shared.tables import anomaly_incident_states
from tests.conftest import app_client

MODEL = ScoringModel(model_id=None, version=None, threshold=0.999)
TOP = [{"metric": "cpu_usage_percent", "observed": 99.0, "expected": 30.0, "share": 1.0}]


class Clock:
    """Sample times one second apart, ending now (so every sample is live)."""

    def __init__(self) -> None:
        self.at = utcnow() - timedelta(minutes=30)

    def next(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


def obs(clock: Clock, score: float) -> Observation:
    flagged = score >= MODEL.threshold
    return Observation(clock.next(), score, flagged, "high" if flagged else "low", TOP)


# -- the state machine ----------------------------------------------------------------------


def observe(tracker: HostTracker, clock: Clock, scores: list[float]) -> list[str]:
    out = []
    for score in scores:
        o = obs(clock, score)
        action = tracker.observe(
            ts=o.ts, score=score, flag=o.flag, severity=o.severity, top=TOP, model=MODEL, live=True
        )
        out.append(action.kind if action else "-")
    return out


def test_open_refresh_resolve_and_a_silence_that_re_arms() -> None:
    clock, t = Clock(), HostTracker("h", consecutive=3, resolve_after=2)
    assert observe(t, clock, [0.9999] * 4) == ["-", "-", "raise", "refresh"]
    assert observe(t, clock, [0.1, 0.1]) == ["-", "resolve"]
    assert t.neutral
    assert observe(t, clock, [0.9999] * 3) == ["-", "-", "raise"]
    t.resolved_by_hand()
    # Silenced while the condition lasts, even through a single normal sample ...
    assert observe(t, clock, [0.9999, 0.9999, 0.1, 0.9999, 0.9999, 0.9999]) == ["-"] * 6
    assert t.silenced and not t.neutral
    # ... re-armed once it clears, and a new run opens again.
    assert observe(t, clock, [0.1, 0.1]) == ["-", "-"]
    assert not t.silenced and t.neutral
    assert observe(t, clock, [0.9999] * 3) == ["-", "-", "raise"]


def test_the_state_round_trips() -> None:
    clock, t = Clock(), HostTracker("h", consecutive=3, resolve_after=2)
    observe(t, clock, [0.9999, 0.99995])
    again = HostTracker.from_state("h", t.to_state(), consecutive=3, resolve_after=2)
    assert again == t
    assert observe(again, clock, [0.9999]) == ["raise"]  # the third in a row, across a restart


# -- in the database ------------------------------------------------------------------------


async def run_pass(
    settings: Settings, engine: AsyncEngine, clock: Clock, scores: list[float], host: str = "h"
) -> list[IncidentOut]:
    """One scoring pass's incident work, by a keeper made afresh (as after a restart)."""
    keeper = IncidentKeeper(settings)
    async with engine.begin() as conn:
        return await keeper.apply(
            conn, {host: [obs(clock, s) for s in scores]}, model=MODEL, live_after=0.0
        )


async def ml_incidents(engine: AsyncEngine) -> list[IncidentOut]:
    async with engine.connect() as conn:
        return await incidents.list_incidents(conn, type="ML_ANOMALY")


async def stored_states(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(anomaly_incident_states))
        return {r.dedup_key: dict(r.state) for r in rows}


async def test_a_restart_continues_the_count_and_refreshes_the_open_incident(
    settings: Settings, engine: AsyncEngine
) -> None:
    clock = Clock()
    assert await run_pass(settings, engine, clock, [0.9999, 0.9999]) == []
    assert (await stored_states(engine))["ML_ANOMALY:h"]["above"] == 2
    (opened,) = await run_pass(settings, engine, clock, [0.9999])  # third in a row: opens
    assert opened.status == "open" and opened.details["consecutive"] == 3
    first_seen, last_seen = opened.details["first_seen"], opened.details["last_seen"]
    # Ongoing: the details follow (peak, last seen, count), without a new notification.
    assert await run_pass(settings, engine, clock, [0.99999, 0.9995]) == []
    (current,) = await ml_incidents(engine)
    assert current.id == opened.id and current.status == "open"
    assert current.details["peak_score"] == 0.99999
    assert current.details["consecutive"] == 5
    assert current.details["first_seen"] == first_seen
    assert current.details["last_seen"] > last_seen
    assert current.details["score"] == 0.9995
    # Normal samples resolve it; the state is then forgotten.
    (resolved,) = await run_pass(settings, engine, clock, [0.1] * settings.anomaly_resolve_after)
    assert resolved.id == opened.id and resolved.status == "resolved"
    assert await stored_states(engine) == {}


async def test_a_manual_resolve_holds_while_the_condition_lasts_then_re_arms(
    settings: Settings, engine: AsyncEngine
) -> None:
    clock = Clock()
    (opened,) = await run_pass(settings, engine, clock, [0.9999] * 3)
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.post(f"/incidents/{opened.id}/resolve", json={"reason": "known"})
    assert response.status_code == 200
    # The condition goes on, over several passes (each a fresh keeper: restarts): no reopen.
    for _ in range(3):
        assert await run_pass(settings, engine, clock, [0.9999] * 4) == []
    (still,) = await ml_incidents(engine)
    assert still.status == "resolved" and still.details["resolution"] == "known"
    assert (await stored_states(engine))["ML_ANOMALY:h"]["silenced"] is True
    # It clears: re-armed, nothing stored; it comes back: an incident again.
    assert await run_pass(settings, engine, clock, [0.1] * settings.anomaly_resolve_after) == []
    assert await stored_states(engine) == {}
    (again,) = await run_pass(settings, engine, clock, [0.9999] * settings.anomaly_consecutive)
    assert again.status == "open"


async def test_hosts_are_kept_apart(settings: Settings, engine: AsyncEngine) -> None:
    clock = Clock()
    (opened,) = await run_pass(settings, engine, clock, [0.9999] * 3, host="a")
    assert await run_pass(settings, engine, clock, [0.9999] * 2, host="b") == []
    assert opened.host == "a" and opened.dedup_key == "ML_ANOMALY:a"
    states = await stored_states(engine)
    assert states["ML_ANOMALY:a"]["open"] and states["ML_ANOMALY:b"]["above"] == 2
