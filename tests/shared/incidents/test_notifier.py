"""Webhook delivery to a real local receiver: retries, both formats, the outcome recorded."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.incidents import repository as incidents
from shared.incidents.notifier import Notifier
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings
from tests.conftest import served
from tests.shared.incidents.conftest import Receiver, open_incident


async def recorded(engine: AsyncEngine, incident_id: int) -> IncidentOut:
    """The incident once the notifier has recorded the delivery's outcome (10 s at most)."""
    for _ in range(500):
        async with engine.connect() as conn:
            stored = await incidents.get_incident(conn, incident_id)
        if stored.notification_status:
            break
        await asyncio.sleep(0.02)
    return stored


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
        incident, _ = await open_incident(engine, metric="cpu_usage_percent", severity="high")
        notifier.notify(incident)
        await receiver.wait(1)
        stored = await recorded(engine, incident.id)
        await notifier.stop()
    assert receiver.attempts == 3
    body = receiver.bodies[0]
    if fmt == "json":
        assert body["id"] == incident.id and body["type"] == "ML_ANOMALY"
        assert body["started_at"].endswith("Z")
    else:
        assert body["version"] == "4" and body["status"] == "firing"
        alert = body["alerts"][0]
        assert alert["labels"] == {
            "alertname": "ML_ANOMALY",
            "host": "h1",
            "severity": "high",
            "incident_id": str(incident.id),
            "metric": "cpu_usage_percent",
        }
        assert alert["annotations"]["summary"] == "anomaly on h1"
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"
        assert len(alert["fingerprint"]) == 16
    assert stored.notification_status == "sent" and stored.notified_at is not None


async def test_webhook_gives_up_and_records_failure(
    engine: AsyncEngine, settings: Settings
) -> None:
    receiver = Receiver(failures=100)
    async with served(receiver.app) as url:
        settings = settings.model_copy(update={"webhook_url": f"{url}/hook", "webhook_retries": 2})
        notifier = Notifier(settings, engine, backoff=0.01)
        notifier.start()
        incident, _ = await open_incident(engine)
        notifier.notify(incident)
        stored = await recorded(engine, incident.id)
        await notifier.stop()
    assert receiver.attempts == 3 and notifier.failed == 1 and notifier.sent == 0
    assert stored.notification_status == "failed"
