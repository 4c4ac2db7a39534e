"""The analysis routes through the gateway: a reader reads, only an operator analyses."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import Settings
from tests.api.test_access import bearer, keyed_stack
from tests.trainer.analysis.conftest import store_cpu_incident

TOKEN = "internal-test-token"


async def test_roles_of_the_analysis_routes(settings: Settings, engine: AsyncEngine) -> None:
    settings = settings.model_copy(
        update={"internal_token": TOKEN, "auth_cache_seconds": 0.2, "analysis_auto": False}
    )
    incident = await store_cpu_incident(engine)
    path = f"/api/ml/incidents/{incident.id}"
    async with keyed_stack(settings, engine) as (s, keys):
        reader, operator = bearer(keys["reader"]), bearer(keys["operator"])
        refused = await s.gateway.post(f"{path}/analyze", headers=reader, json={})
        done = await s.gateway.post(f"{path}/analyze", headers=operator, json={})
        read = await s.gateway.get(f"{path}/analysis", headers=reader)
        listed = await s.gateway.get("/api/ml/analyses?category=cpu_saturation", headers=reader)
        anonymous = await s.gateway.get(f"{path}/analysis")
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    assert done.status_code == 200 and done.json()["category"] == "cpu_saturation"
    assert read.status_code == 200 and read.json()["id"] == done.json()["id"]
    assert listed.json()["count"] == 1
    assert anonymous.status_code == 401
