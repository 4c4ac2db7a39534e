"""The evidence pack read from the database: the incident, the host's metrics, the anomaly
scores and attribution, a similar past incident with its analysis and resolution."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.analysis import repository as repo
from services.trainer.analysis.service import AnalysisService
from shared.clock import utcnow
from shared.incidents import repository as incidents
from shared.incidents.notifier import Notifier
from shared.settings import Settings
from tests.trainer.analysis.conftest import store_cpu_incident


async def test_the_pack_holds_the_incident_its_metrics_scores_and_a_similar_one(
    engine: AsyncEngine, settings: Settings
) -> None:
    async with engine.begin() as conn:
        past, _ = await incidents.raise_incident(
            conn,
            type="ML_ANOMALY",
            host="web-2",
            dedup_key="ML_ANOMALY:web-2",
            severity="medium",
            title="Anomalous behaviour on web-2 (cpu_usage_percent)",
            details={"top_metrics": [{"metric": "cpu_usage_percent"}]},
            now=utcnow() - timedelta(days=2),
        )
        await incidents.resolve_incident(conn, incident_id=past.id, reason="scaled out")
    service = AnalysisService(settings, engine, Notifier(settings, engine))
    await service.analyze(past.id, provider="rules")
    incident = await store_cpu_incident(engine)
    pack = await repo.read_pack(engine, incident.id, now=utcnow())
    await service.stop()
    items = {i.id: i.data for i in pack.items}
    cpu = items["metric:cpu_usage_percent"]
    assert cpu["peak"] >= 93 and cpu["before_mean"] < 60 and cpu["crossed_at"] is not None
    assert next(iter(pack.metrics)) == "cpu_usage_percent"  # the detector's metric first
    assert items["anomaly:scores"]["flagged"] == 20
    assert items["attribution:cpu_usage_percent"]["weight"] > 0.5
    similar = items[f"similar:{past.id}"]
    assert similar["host"] == "web-2" and similar["resolution"] == "scaled out"
    assert similar["analysis_category"] is not None
    assert items[f"incident:{incident.id}"]["host"] == "web-1"
    assert pack.hosts() == {"web-1", "web-2"}
