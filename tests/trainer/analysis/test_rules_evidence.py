"""The rules analyst says only what the pack read from the database holds: the detector's
attribution as it weighs the metrics, no rollback of the application for a change of this
product's own models, and the metric it says it names."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.analysis import grounding, rules
from services.trainer.analysis import repository as repo
from services.trainer.analysis.evidence import EvidencePack
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared import registry
from shared.catalogue import METRIC_NAMES
from shared.clock import utcnow
from shared.db import bulk_insert_samples
from shared.incidents import repository as incidents
from shared.schemas.analysis import Analysis, Claim
from tests.trainer.analysis.conftest import HOST, store_incident

# errors at ~0.2/s (about 20 times their usual rate) while the detector ranks p95 first
ERROR_STORM = {"error_rate": 0.2}


async def _attribution_claims(
    engine: AsyncEngine, attributed: tuple[str, ...]
) -> tuple[EvidencePack, Analysis, list[Claim]]:
    """An error storm's pack as read from the database, its analysis, and the analysis's
    claims citing the detector's attribution."""
    incident = await store_incident(engine, spike=ERROR_STORM, attributed=attributed)
    pack = await repo.read_pack(engine, incident.id, now=utcnow())
    answer = rules.analyze(pack)
    about = [c for c in answer.claims if any(e.startswith("attribution:") for e in c.evidence)]
    return pack, answer, about


async def test_the_attribution_claim_names_the_metric_the_detector_weighs_most(
    engine: AsyncEngine,
) -> None:
    pack, answer, about = await _attribution_claims(engine, ("response_time_p95", "error_rate"))
    weights = {i.data["metric"]: i.data["weight"] for i in pack.items if i.kind == "attribution"}
    assert weights["response_time_p95"] > weights["error_rate"] > 0
    assert answer.cause.category == "error_storm" and answer.top_metric == "error_rate"
    assert len(about) == 1
    claim = about[0]
    assert "mostly to response_time_p95" in claim.text
    assert "mostly to error_rate" not in claim.text
    assert "error_rate" in claim.text  # the classified metric, with its own smaller weight
    assert set(claim.evidence) == {"attribution:response_time_p95", "attribution:error_rate"}
    assert grounding.check(answer, pack) == []


async def test_the_attribution_claim_says_mostly_when_the_metric_leads(
    engine: AsyncEngine,
) -> None:
    pack, answer, about = await _attribution_claims(engine, ("error_rate", "response_time_p95"))
    assert [c.evidence for c in about] == [["attribution:error_rate"]]
    assert "mostly to error_rate" in about[0].text
    assert grounding.check(answer, pack) == []


async def test_a_new_version_of_the_anomaly_detector_is_no_reason_to_roll_back(
    engine: AsyncEngine,
) -> None:
    incident = await store_incident(
        engine, spike=ERROR_STORM, attributed=("error_rate", "response_time_p95")
    )
    async with engine.begin() as conn:  # the host's detector trained and activated just before
        await registry.insert_model(
            conn,
            name="anomaly_detector",
            model_type="isolation_forest",
            artifact=b"model",
            artifact_format="skops",
            parameters={},
            metrics={},
            host=HOST,
            status="active",
        )
    pack = await repo.read_pack(engine, incident.id, now=utcnow())
    assert [i.data["name"] for i in pack.items if i.kind == "model_change"] == ["anomaly_detector"]
    answer = rules.analyze(pack)
    assert answer.cause.category == "error_storm"
    actions = [a.action for a in answer.actions]
    assert "rollback" not in actions
    assert actions[0] == "restart_service"
    assert grounding.check(answer, pack) == []


async def test_a_predicted_breach_without_samples_yet_names_its_metric(
    engine: AsyncEngine,
) -> None:
    """As the forecaster opens one and the analysis follows at once: the host's samples end
    before the incident's window, so no metric has moved in it."""
    now = utcnow().replace(second=0, microsecond=0)
    frame = SyntheticDataGenerator(seed=3).generate_full_training_set(
        days=1, start=now - timedelta(hours=2)
    )
    rows = [
        (r.timestamp.to_pydatetime(), HOST, *[getattr(r, m) for m in METRIC_NAMES], "normal")
        for r in frame.iloc[:120].itertuples(index=False)
    ]
    async with engine.begin() as conn:
        await bulk_insert_samples(conn, rows)
        incident, _ = await incidents.raise_incident(
            conn,
            type="predicted_breach",
            host=HOST,
            dedup_key=f"predicted_breach:{HOST}:disk_usage_percent",
            severity="medium",
            metric="disk_usage_percent",
            title=f"disk_usage_percent on {HOST} predicted to reach 90",
            details={"threshold": 90.0, "probability": 0.8123, "predicted_value": 93.25}
            | {"at": (now + timedelta(hours=6)).isoformat()},
            now=now,
        )
    pack = await repo.read_pack(engine, incident.id, now=now + timedelta(seconds=30))
    assert pack.metrics == {}
    answer = rules.analyze(pack)
    assert answer.cause.category == "unknown"
    assert answer.top_metric == "disk_usage_percent"
    assert "disk_usage_percent" in answer.cause.text
    assert "disk_usage_percent" in answer.summary
    assert "moved most" not in answer.cause.text  # nothing was seen to move
    assert grounding.check(answer, pack) == []
