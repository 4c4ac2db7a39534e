"""SQL of incidents: raise (deduplicated per cause, reopened within a cooldown), resolve, read.

Usage: `incident, change = await raise_incident(conn, type="ML_ANOMALY", host=h, dedup_key=k,
severity="high", title=...)`; every function runs inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import events as observe
from shared.clock import utcnow
from shared.db import row_dict
from shared.errors import Conflict, NotFound
from shared.schemas.incidents import IncidentOut
from shared.severity import Severity, worst
from shared.tables import incidents

Change = Literal["opened", "reopened", "updated"]


def _incident(mapping: Any) -> IncidentOut:
    return IncidentOut.model_validate(row_dict(mapping))


async def _open_incident(conn: AsyncConnection, dedup_key: str) -> IncidentOut | None:
    query = sa.select(incidents).where(
        incidents.c.dedup_key == dedup_key, incidents.c.status == "open"
    )
    found = (await conn.execute(query)).first()
    return _incident(found._mapping) if found else None


async def raise_incident(
    conn: AsyncConnection,
    *,
    type: str,
    host: str,
    dedup_key: str,
    severity: Severity,
    title: str,
    description: str | None = None,
    metric: str | None = None,
    details: dict[str, Any] | None = None,
    cooldown_minutes: float = 15.0,
    now: datetime | None = None,
) -> tuple[IncidentOut, Change]:
    """Open an incident for a cause, or update the one already open for it.

    One open incident per `dedup_key`; a cause that recurs within `cooldown_minutes` of its
    incident being resolved reopens that incident instead of opening another.
    """
    now = now or utcnow()
    details = details or {}
    current = await _open_incident(conn, dedup_key)
    if current is not None:
        await conn.execute(
            sa.update(incidents)
            .where(incidents.c.id == current.id)
            .values(
                severity=worst(current.severity, severity),
                updated_at=now,
                details={**current.details, **details},
                description=description or current.description,
            )
        )
        return await get_incident(conn, current.id), "updated"

    cutoff = now - timedelta(minutes=cooldown_minutes)
    recent = (
        await conn.execute(
            sa.select(incidents.c.id)
            .where(
                incidents.c.dedup_key == dedup_key,
                incidents.c.status == "resolved",
                incidents.c.resolved_at >= cutoff,
            )
            .order_by(incidents.c.resolved_at.desc())
            .limit(1)
        )
    ).first()
    if recent is not None:
        await conn.execute(
            sa.update(incidents)
            .where(incidents.c.id == recent[0])
            .values(
                status="open",
                resolved_at=None,
                updated_at=now,
                severity=severity,
                title=title,
                description=description,
                details=details,
                notification_status=None,
            )
        )
        reopened = await get_incident(conn, recent[0])
        _opened(reopened)
        return reopened, "reopened"

    cause: dict[str, Any] = dict(
        type=type,
        host=host,
        dedup_key=dedup_key,
        severity=severity,
        title=title,
        description=description,
        metric=metric,
        details=details,
    )
    values = {**cause, "status": "open", "started_at": now, "updated_at": now}
    try:
        async with conn.begin_nested():
            result = await conn.execute(
                sa.insert(incidents).values(**values).returning(incidents.c.id)
            )
            new_id = int(result.scalar_one())
    except IntegrityError:
        # Another writer opened it between our read and insert: update theirs.
        return await raise_incident(conn, **cause, cooldown_minutes=cooldown_minutes, now=now)
    opened = await get_incident(conn, new_id)
    _opened(opened)
    return opened, "opened"


def _opened(incident: IncidentOut) -> None:
    # Counted and logged as written: a transaction rolled back later (rare) overcounts one.
    observe.incident_opened(
        incident_type=incident.type,
        incident_id=incident.id,
        host=incident.host,
        severity=str(incident.severity),
    )


async def resolve_incident(
    conn: AsyncConnection,
    *,
    incident_id: int | None = None,
    dedup_key: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> IncidentOut | None:
    """Resolve by id (NotFound / Conflict if absent / already resolved) or by open dedup key."""
    now = now or utcnow()
    if incident_id is not None:
        current = await get_incident(conn, incident_id)
        if current.status == "resolved":
            raise Conflict(f"incident {incident_id} is already resolved")
    else:
        assert dedup_key is not None
        found = await _open_incident(conn, dedup_key)
        if found is None:
            return None
        current = found
    details = dict(current.details)
    if reason:
        details["resolution"] = reason
    await conn.execute(
        sa.update(incidents)
        .where(incidents.c.id == current.id)
        .values(status="resolved", resolved_at=now, updated_at=now, details=details)
    )
    resolved = await get_incident(conn, current.id)
    observe.incident_resolved(
        incident_type=resolved.type, incident_id=resolved.id, host=resolved.host
    )
    return resolved


async def refresh_incidents(
    conn: AsyncConnection, updates: list[dict[str, Any]], *, now: datetime | None = None
) -> None:
    """Refresh open incidents in one executemany: each of ``updates`` holds ``id``,
    ``severity``, ``description`` and ``details`` (replacing them); resolved ones are left."""
    if not updates:
        return
    stmt = (
        sa.update(incidents)
        .where(incidents.c.id == sa.bindparam("b_id"), incidents.c.status == "open")
        .values(
            severity=sa.bindparam("b_severity"),
            description=sa.bindparam("b_description"),
            details=sa.bindparam("b_details", type_=incidents.c.details.type),
            updated_at=sa.bindparam("b_now", type_=incidents.c.updated_at.type),
        )
    )
    at = now or utcnow()
    rows = [
        {
            "b_id": u["id"],
            "b_severity": u["severity"],
            "b_description": u["description"],
            "b_details": u["details"],
            "b_now": at,
        }
        for u in updates
    ]
    await conn.execute(stmt, rows)


async def get_incident(conn: AsyncConnection, incident_id: int) -> IncidentOut:
    found = (await conn.execute(sa.select(incidents).where(incidents.c.id == incident_id))).first()
    if found is None:
        raise NotFound(f"incident {incident_id} not found")
    return _incident(found._mapping)


async def statuses(conn: AsyncConnection, ids: list[int]) -> dict[int, str]:
    """Status of each incident by id, the rows locked until the transaction ends (PostgreSQL),
    so a resolve by hand waits for the pass that is updating them, or is seen by it."""
    if not ids:
        return {}
    query = sa.select(incidents.c.id, incidents.c.status).where(incidents.c.id.in_(ids))
    return {int(i): str(s) for i, s in await conn.execute(query.with_for_update())}


async def list_incidents(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    type: str | None = None,
    host: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[IncidentOut]:
    """Incidents, newest first, filtered by whichever of the arguments are given."""
    query = sa.select(incidents).order_by(incidents.c.started_at.desc(), incidents.c.id.desc())
    if status is not None:
        query = query.where(incidents.c.status == status)
    if type is not None:
        query = query.where(incidents.c.type == type)
    if host is not None:
        query = query.where(incidents.c.host == host)
    if since is not None:
        query = query.where(incidents.c.updated_at >= since)
    return [_incident(r._mapping) for r in await conn.execute(query.limit(limit))]


async def record_notification(
    conn: AsyncConnection, incident_id: int, *, sent: bool, now: datetime | None = None
) -> None:
    """Note whether the webhook took the incident (and when)."""
    await conn.execute(
        sa.update(incidents)
        .where(incidents.c.id == incident_id)
        .values(
            notified_at=(now or utcnow()) if sent else None,
            notification_status="sent" if sent else "failed",
        )
    )


async def alerting_incidents(
    conn: AsyncConnection, *, resolved_since: datetime, limit: int = 5000
) -> list[IncidentOut]:
    """Every open incident and those resolved since ``resolved_since``, oldest first: what
    the Alertmanager push re-sends (at most ``limit``)."""
    query = (
        sa.select(incidents)
        .where(
            sa.or_(
                incidents.c.status == "open",
                sa.and_(
                    incidents.c.status == "resolved", incidents.c.resolved_at >= resolved_since
                ),
            )
        )
        .order_by(incidents.c.id)
        .limit(limit)
    )
    return [_incident(r._mapping) for r in await conn.execute(query)]
