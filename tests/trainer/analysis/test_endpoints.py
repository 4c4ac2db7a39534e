"""Incident analysis in the trainer: by itself when an incident opens (and the webhook's
follow-up carries it), found by the sweep when another service opened it, and the routes."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app as create_trainer
from shared.settings import Settings
from tests.conftest import app_client, served
from tests.shared.incidents.conftest import Receiver
from tests.trainer.analysis.conftest import store_cpu_incident


async def _analysis(client: Any, incident_id: int) -> dict[str, Any]:
    for _ in range(500):
        answer = await client.get(f"/incidents/{incident_id}/analysis")
        if answer.status_code == 200:
            return dict(answer.json())
        await asyncio.sleep(0.02)
    raise AssertionError(f"incident {incident_id} was not analysed")


async def test_an_opened_incident_is_analysed_and_the_webhook_gets_the_analysis(
    engine: AsyncEngine, settings: Settings
) -> None:
    receiver = Receiver()
    async with served(receiver.app) as hook:
        settings = settings.model_copy(
            update={"webhook_url": f"{hook}/hook", "webhook_format": "alertmanager"}
        )
        app = create_trainer(settings, engine=engine)
        async with app_client(app) as client:
            incident = await store_cpu_incident(engine)
            app.state.notifier.notify(incident)  # as the scoring loop does after its commit
            stored = await _analysis(client, incident.id)
            await receiver.wait(2)
    assert stored["provider"] == "rules" and stored["category"] == "cpu_saturation"
    assert stored["analysis"]["top_metric"] == "cpu_usage_percent"
    assert stored["recommendations"][0]["action"] == "scale_out"
    first, follow_up = receiver.bodies[:2]
    assert "analysis_summary" not in first["alerts"][0]["annotations"]
    notes = follow_up["alerts"][0]["annotations"]
    assert notes["analysis_summary"] == stored["summary"]
    assert notes["analysis_cause"] == "cpu_saturation" and "scale_out" in notes["analysis_actions"]


async def test_the_sweep_analyses_incidents_opened_elsewhere(
    engine: AsyncEngine, settings: Settings
) -> None:
    settings = settings.model_copy(update={"analysis_sweep_seconds": 0.1})
    async with app_client(create_trainer(settings, engine=engine)) as client:
        incident = await store_cpu_incident(engine)  # nobody told the trainer
        stored = await _analysis(client, incident.id)
    assert stored["incident_id"] == incident.id and not stored["fallback"]


async def test_analysis_routes(engine: AsyncEngine, settings: Settings) -> None:
    settings = settings.model_copy(update={"analysis_auto": False})
    async with app_client(create_trainer(settings, engine=engine)) as client:
        incident = await store_cpu_incident(engine)
        none_yet = await client.get(f"/incidents/{incident.id}/analysis")
        first = await client.post(f"/incidents/{incident.id}/analyze")
        again = await client.post(f"/incidents/{incident.id}/analyze", json={"provider": "rules"})
        latest = await client.get(f"/incidents/{incident.id}/analysis")
        listed = await client.get("/analyses", params={"incident_id": incident.id})
        by_host = await client.get(
            "/analyses", params={"host": "web-1", "category": "cpu_saturation"}
        )
        other_host = await client.get("/analyses", params={"host": "db-9"})
        fallbacks = await client.get("/analyses", params={"fallback": "true"})
        not_configured = await client.post(
            f"/incidents/{incident.id}/analyze", json={"provider": "openai"}
        )
        bad_provider = await client.post(
            f"/incidents/{incident.id}/analyze", json={"provider": "gpt"}
        )
        missing = await client.post("/incidents/424242/analyze")
        missing_read = await client.get("/incidents/424242/analysis")
    assert none_yet.status_code == 404 and "no analysis" in none_yet.json()["detail"]
    assert first.status_code == 200 and again.status_code == 200
    body = latest.json()
    assert body["id"] == again.json()["id"] > first.json()["id"]
    assert body["provider"] == "rules" and body["requested_provider"] == "rules"
    ids = {i["id"] for i in body["evidence"]["items"]}
    assert all(set(c["evidence"]) <= ids for c in body["analysis"]["claims"])
    assert listed.json()["count"] == 2 and by_host.json()["count"] == 2
    assert other_host.json()["count"] == 0 and fallbacks.json()["count"] == 0
    assert (
        not_configured.status_code == 409 and "OPENAI_BASE_URL" in not_configured.json()["detail"]
    )
    assert bad_provider.status_code == 422
    assert bad_provider.json()["detail"][0]["field"] == "body.provider"
    assert missing.status_code == 404 and missing_read.status_code == 404
