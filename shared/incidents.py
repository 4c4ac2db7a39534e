"""Incidents: raised by the detectors, deduplicated per cause, resolved, and sent to a webhook.

Usage: `incident, change = await raise_incident(conn, type="ML_ANOMALY", host=h, dedup_key=k, ...)`
then `notifier.notify(incident)` after the transaction commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import utc, utcnow
from shared.errors import Conflict, NotFound
from shared.settings import Settings
from shared.severity import worst
from shared.tables import incidents

log = logging.getLogger("autofix_ml.incidents")

Change = Literal["opened", "reopened", "updated"]


def _row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("started_at", "updated_at", "resolved_at", "notified_at"):
        if row.get(key) is not None:
            row[key] = utc(row[key])
    return row


async def _open_incident(conn: AsyncConnection, dedup_key: str) -> dict[str, Any] | None:
    query = sa.select(incidents).where(
        incidents.c.dedup_key == dedup_key, incidents.c.status == "open"
    )
    found = (await conn.execute(query)).first()
    return _row(found._mapping) if found else None


async def raise_incident(
    conn: AsyncConnection,
    *,
    type: str,
    host: str,
    dedup_key: str,
    severity: str,
    title: str,
    description: str | None = None,
    metric: str | None = None,
    details: dict[str, Any] | None = None,
    cooldown_minutes: float = 15.0,
    now: datetime | None = None,
) -> tuple[dict[str, Any], Change]:
    """Open an incident for a cause, or update the one already open for it.

    One open incident per `dedup_key`; a cause that recurs within `cooldown_minutes` of its
    incident being resolved reopens that incident instead of opening another.
    """
    now = now or utcnow()
    details = details or {}
    current = await _open_incident(conn, dedup_key)
    if current is not None:
        worst_severity = worst(current["severity"], severity)
        await conn.execute(
            sa.update(incidents)
            .where(incidents.c.id == current["id"])
            .values(
                severity=worst_severity,
                updated_at=now,
                details={**current["details"], **details},
                description=description or current["description"],
            )
        )
        return await get_incident(conn, current["id"]), "updated"

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
        return await get_incident(conn, recent[0]), "reopened"

    values = dict(
        type=type,
        host=host,
        dedup_key=dedup_key,
        severity=severity,
        title=title,
        description=description,
        metric=metric,
        details=details,
        status="open",
        started_at=now,
        updated_at=now,
    )
    try:
        async with conn.begin_nested():
            result = await conn.execute(
                sa.insert(incidents).values(**values).returning(incidents.c.id)
            )
            new_id = int(result.scalar_one())
    except IntegrityError:
        # Another writer opened it between our read and insert: update theirs.
        return await raise_incident(
            conn,
            type=type,
            host=host,
            dedup_key=dedup_key,
            severity=severity,
            title=title,
            description=description,
            metric=metric,
            details=details,
            cooldown_minutes=cooldown_minutes,
            now=now,
        )
    return await get_incident(conn, new_id), "opened"


async def resolve_incident(
    conn: AsyncConnection,
    *,
    incident_id: int | None = None,
    dedup_key: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """Resolve by id (NotFound / Conflict if absent / already resolved) or by open dedup key."""
    now = now or utcnow()
    if incident_id is not None:
        current = await get_incident(conn, incident_id)
        if current["status"] == "resolved":
            raise Conflict(f"incident {incident_id} is already resolved")
    else:
        assert dedup_key is not None
        found = await _open_incident(conn, dedup_key)
        if found is None:
            return None
        current = found
    details = dict(current["details"])
    if reason:
        details["resolution"] = reason
    await conn.execute(
        sa.update(incidents)
        .where(incidents.c.id == current["id"])
        .values(status="resolved", resolved_at=now, updated_at=now, details=details)
    )
    return await get_incident(conn, current["id"])


async def get_incident(conn: AsyncConnection, incident_id: int) -> dict[str, Any]:
    found = (await conn.execute(sa.select(incidents).where(incidents.c.id == incident_id))).first()
    if found is None:
        raise NotFound(f"incident {incident_id} not found")
    return _row(found._mapping)


async def list_incidents(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    type: str | None = None,
    host: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    query = sa.select(incidents).order_by(incidents.c.started_at.desc(), incidents.c.id.desc())
    if status is not None:
        query = query.where(incidents.c.status == status)
    if type is not None:
        query = query.where(incidents.c.type == type)
    if host is not None:
        query = query.where(incidents.c.host == host)
    if since is not None:
        query = query.where(incidents.c.updated_at >= since)
    return [_row(r._mapping) for r in await conn.execute(query.limit(limit))]


# ---------------------------------------------------------------- notification


def _iso(value: datetime | None) -> str:
    return utc(value).isoformat().replace("+00:00", "Z") if value else "0001-01-01T00:00:00Z"


def alertmanager_payload(incident: dict[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook format, version 4, with one alert."""
    status = "resolved" if incident["status"] == "resolved" else "firing"
    labels = {
        "alertname": incident["type"],
        "host": incident["host"],
        "severity": incident["severity"],
        "incident_id": str(incident["id"]),
    }
    if incident.get("metric"):
        labels["metric"] = incident["metric"]
    annotations = {"summary": incident["title"], "description": incident.get("description") or ""}
    alert = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": _iso(incident["started_at"]),
        "endsAt": _iso(incident.get("resolved_at")),
        "generatorURL": "",
        "fingerprint": hashlib.sha256(incident["dedup_key"].encode()).hexdigest()[:16],
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{incident["type"]}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "autofix-ml",
        "groupLabels": {"alertname": incident["type"]},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [alert],
    }


def json_payload(incident: dict[str, Any]) -> dict[str, Any]:
    out = dict(incident)
    for key in ("started_at", "updated_at", "resolved_at", "notified_at"):
        if out.get(key) is not None:
            out[key] = _iso(out[key])
    return out


class Notifier:
    """Posts incidents to AUTOFIX_WEBHOOK_URL from a background task, retrying with backoff.

    `notify()` never blocks the caller; the queue is bounded and drops the oldest when full.
    """

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine | None = None,
        *,
        backoff: float = 0.5,
        queue_size: int = 1000,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.backoff = backoff
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhook_url)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._client = httpx.AsyncClient(timeout=self.settings.webhook_timeout, trust_env=False)
            self._task = asyncio.create_task(self._run(), name="webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def notify(self, incident: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(incident)

    def payload(self, incident: dict[str, Any]) -> dict[str, Any]:
        if self.settings.webhook_format == "alertmanager":
            return alertmanager_payload(incident)
        return json_payload(incident)

    async def _run(self) -> None:
        while True:
            incident = await self.queue.get()
            ok = await self._deliver(incident)
            await self._record(incident, ok)

    async def _deliver(self, incident: dict[str, Any]) -> bool:
        assert self._client is not None
        body = self.payload(incident)
        for attempt in range(self.settings.webhook_retries + 1):
            try:
                response = await self._client.post(self.settings.webhook_url, json=body)
                if response.status_code < 300:
                    self.sent += 1
                    return True
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    log.warning(
                        "webhook refused incident %s: %s", incident["id"], response.status_code
                    )
                    break
            except httpx.HTTPError as exc:
                log.warning("webhook attempt %d failed: %s", attempt + 1, type(exc).__name__)
            await asyncio.sleep(min(self.backoff * 2**attempt, 30.0))
        self.failed += 1
        return False

    async def _record(self, incident: dict[str, Any], ok: bool) -> None:
        if self.engine is None:
            return
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.update(incidents)
                    .where(incidents.c.id == incident["id"])
                    .values(
                        notified_at=utcnow() if ok else None,
                        notification_status="sent" if ok else "failed",
                    )
                )
        except Exception as exc:  # noqa: BLE001 - bookkeeping only
            log.warning("could not record notification of incident %s: %s", incident["id"], exc)
