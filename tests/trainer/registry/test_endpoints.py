"""The trainer's model registry over HTTP: listing and reading versions (activation: anomaly tests)."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app
from shared import registry
from shared.settings import Settings
from tests.conftest import app_client


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [item["field"] for item in response.json()["detail"]]


async def test_model_registry_starts_empty(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        everything = await client.get("/models")
        active = await client.get("/models", params={"status": "active"})
    assert everything.status_code == 200
    assert everything.json() == {"models": [], "count": 0}
    assert active.json() == {"models": [], "count": 0}


async def test_unknown_model_is_404(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        missing = await client.get("/models/999")
        invalid = await client.get("/models/0")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "model 999 not found"}
    assert fields(invalid) == ["path.model_id"]


async def test_only_an_anomaly_detector_is_activated_here(settings: Settings, engine: AsyncEngine):
    async with engine.begin() as conn:
        other = await registry.insert_model(
            conn,
            name="forecaster",
            model_type="prophet",
            artifact=b"{}",
            artifact_format="json",
            parameters={},
            metrics={},
        )
    async with app_client(create_app(settings, engine=engine)) as client:
        refused = await client.post(f"/models/{other.id}/activate")
        missing = await client.post("/models/999999/activate")
        stored = (await client.get(f"/models/{other.id}")).json()
    assert refused.status_code == 409
    assert refused.json() == {
        "detail": f"model {other.id} is a forecaster, not an anomaly detector"
    }
    assert missing.status_code == 404
    assert stored["status"] == "candidate"
