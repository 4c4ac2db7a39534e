"""Incidents: dedup, cooldown, resolve, and webhook delivery to a real local receiver."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app as create_trainer
from shared import incidents
from shared.db import utcnow
from shared.errors import Conflict, NotFound
from shared.incidents import Notifier
from shared.settings import Settings
from tests.conftest import app_client, served


async def _raise(engine: AsyncEngine, **kw: Any) -> tuple[dict[str, Any], str]:
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


async def test_one_open_incident_per_cause(engine: AsyncEngine) -> None:
    first, change1 = await _raise(engine, details={"scores": [0.9]})
    second, change2 = await _raise(engine, severity="critical", details={"top": ["cpu"]})
    assert (change1, change2) == ("opened", "updated")
    assert second["id"] == first["id"]
    assert second["severity"] == "critical"
    assert second["details"] == {"scores": [0.9], "top": ["cpu"]}
    lower, _ = await _raise(engine, severity="low")
    assert lower["severity"] == "critical"  # never downgraded while open
    other, change3 = await _raise(engine, host="h2", dedup_key="ML_ANOMALY:h2")
    assert change3 == "opened" and other["id"] != first["id"]
    async with engine.connect() as conn:
        assert len(await incidents.list_incidents(conn, status="open")) == 2
        assert [i["host"] for i in await incidents.list_incidents(conn, host="h2")] == ["h2"]


async def test_cooldown_reopens_instead_of_duplicating(engine: AsyncEngine) -> None:
    now = utcnow()
    opened, _ = await _raise(engine, now=now)
    async with engine.begin() as conn:
        resolved = await incidents.resolve_incident(conn, dedup_key="ML_ANOMALY:h1", now=now)
    assert resolved is not None and resolved["status"] == "resolved"
    again, change = await _raise(engine, now=now + timedelta(minutes=5), cooldown_minutes=15)
    assert change == "reopened" and again["id"] == opened["id"] and again["status"] == "open"
    async with engine.begin() as conn:
        await incidents.resolve_incident(
            conn, incident_id=again["id"], now=now + timedelta(minutes=6)
        )
    later, change = await _raise(engine, now=now + timedelta(minutes=30), cooldown_minutes=15)
    assert change == "opened" and later["id"] != opened["id"]


async def test_resolve_errors(engine: AsyncEngine) -> None:
    opened, _ = await _raise(engine)
    async with engine.begin() as conn:
        await incidents.resolve_incident(conn, incident_id=opened["id"], reason="fixed")
    async with engine.begin() as conn:
        with pytest.raises(Conflict):
            await incidents.resolve_incident(conn, incident_id=opened["id"])
        with pytest.raises(NotFound):
            await incidents.resolve_incident(conn, incident_id=999_999)
        assert await incidents.resolve_incident(conn, dedup_key="nothing-open") is None
        assert (await incidents.get_incident(conn, opened["id"]))["details"][
            "resolution"
        ] == "fixed"


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


@pytest.mark.parametrize("fmt", ["json", "alertmanager"])
async def test_webhook_delivers_with_retries(
    engine: AsyncEngine, settings: Settings, fmt: str
) -> None:
    receiver = Receiver(failures=2)
    async with served(receiver.app) as url:
        settings = settings.model_copy(
            update={"webhook_url": f"{url}/hook", "webhook_format": fmt, "webhook_retries": 3}
        )
        notifier = Notifier(settings, engine, backoff=0.01)
        notifier.start()
        incident, _ = await _raise(engine, metric="cpu_usage_percent", severity="high")
        notifier.notify(incident)
        await receiver.wait(1)
        for _ in range(500):
            async with engine.connect() as conn:
                stored = await incidents.get_incident(conn, incident["id"])
            if stored["notification_status"]:
                break
            await asyncio.sleep(0.02)
        await notifier.stop()
    assert receiver.attempts == 3
    body = receiver.bodies[0]
    if fmt == "json":
        assert body["id"] == incident["id"] and body["type"] == "ML_ANOMALY"
        assert body["started_at"].endswith("Z")
    else:
        assert body["version"] == "4" and body["status"] == "firing"
        alert = body["alerts"][0]
        assert alert["labels"] == {
            "alertname": "ML_ANOMALY",
            "host": "h1",
            "severity": "high",
            "incident_id": str(incident["id"]),
            "metric": "cpu_usage_percent",
        }
        assert alert["annotations"]["summary"] == "anomaly on h1"
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"
        assert len(alert["fingerprint"]) == 16
    assert stored["notification_status"] == "sent" and stored["notified_at"] is not None


async def test_webhook_gives_up_and_records_failure(
    engine: AsyncEngine, settings: Settings
) -> None:
    receiver = Receiver(failures=100)
    async with served(receiver.app) as url:
        settings = settings.model_copy(update={"webhook_url": f"{url}/hook", "webhook_retries": 2})
        notifier = Notifier(settings, engine, backoff=0.01)
        notifier.start()
        incident, _ = await _raise(engine)
        notifier.notify(incident)
        for _ in range(500):
            async with engine.connect() as conn:
                stored = await incidents.get_incident(conn, incident["id"])
            if stored["notification_status"]:
                break
            await asyncio.sleep(0.02)
        await notifier.stop()
    assert receiver.attempts == 3 and notifier.failed == 1 and notifier.sent == 0
    async with engine.connect() as conn:
        assert (await incidents.get_incident(conn, incident["id"]))[
            "notification_status"
        ] == "failed"


async def test_incident_routes(engine: AsyncEngine, settings: Settings) -> None:
    opened, _ = await _raise(engine)
    async with app_client(create_trainer(settings, engine=engine)) as client:
        listed = (await client.get("/incidents", params={"status": "open"})).json()
        one = await client.get(f"/incidents/{opened['id']}")
        resolved = await client.post(f"/incidents/{opened['id']}/resolve", json={"reason": "ok"})
        twice = await client.post(f"/incidents/{opened['id']}/resolve")
        missing = await client.get("/incidents/424242")
        bad = await client.get("/incidents", params={"status": "maybe"})
    assert listed["count"] == 1 and listed["incidents"][0]["id"] == opened["id"]
    assert one.json()["dedup_key"] == "ML_ANOMALY:h1"
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert resolved.json()["details"]["resolution"] == "ok"
    assert twice.status_code == 409
    assert missing.status_code == 404
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "query.status"
