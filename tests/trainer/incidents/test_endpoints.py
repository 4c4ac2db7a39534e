"""The incident routes of the trainer: list, read, resolve, and their errors."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app as create_trainer
from shared.settings import Settings
from tests.conftest import app_client
from tests.shared.incidents.conftest import open_incident


async def test_incident_routes(engine: AsyncEngine, settings: Settings) -> None:
    opened, _ = await open_incident(engine)
    async with app_client(create_trainer(settings, engine=engine)) as client:
        listed = (await client.get("/incidents", params={"status": "open"})).json()
        one = await client.get(f"/incidents/{opened.id}")
        resolved = await client.post(f"/incidents/{opened.id}/resolve", json={"reason": "ok"})
        twice = await client.post(f"/incidents/{opened.id}/resolve")
        missing = await client.get("/incidents/424242")
        bad = await client.get("/incidents", params={"status": "maybe"})
    assert listed["count"] == 1 and listed["incidents"][0]["id"] == opened.id
    assert one.json()["dedup_key"] == "ML_ANOMALY:h1"
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert resolved.json()["details"]["resolution"] == "ok"
    assert twice.status_code == 409
    assert missing.status_code == 404
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "query.status"
