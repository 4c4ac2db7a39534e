"""The rules analyst says only what the pack read from the database holds: the detector's
attribution as it weighs the metrics."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.analysis import grounding, rules
from services.trainer.analysis import repository as repo
from shared.clock import utcnow
from tests.trainer.analysis.conftest import store_incident

# errors at ~0.2/s (about 20 times their usual rate) while the detector ranks p95 first
ERROR_STORM = {"error_rate": 0.2}


async def test_the_attribution_claim_names_the_metric_the_detector_weighs_most(
    engine: AsyncEngine,
) -> None:
    incident = await store_incident(
        engine, spike=ERROR_STORM, attributed=("response_time_p95", "error_rate")
    )
    pack = await repo.read_pack(engine, incident.id, now=utcnow())
    weights = {i.data["metric"]: i.data["weight"] for i in pack.items if i.kind == "attribution"}
    assert weights["response_time_p95"] > weights["error_rate"] > 0
    answer = rules.analyze(pack)
    assert answer.cause.category == "error_storm" and answer.top_metric == "error_rate"
    about = [c for c in answer.claims if any(e.startswith("attribution:") for e in c.evidence)]
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
    incident = await store_incident(
        engine, spike=ERROR_STORM, attributed=("error_rate", "response_time_p95")
    )
    pack = await repo.read_pack(engine, incident.id, now=utcnow())
    answer = rules.analyze(pack)
    about = [c for c in answer.claims if any(e.startswith("attribution:") for e in c.evidence)]
    assert [c.evidence for c in about] == [["attribution:error_rate"]]
    assert "mostly to error_rate" in about[0].text
    assert grounding.check(answer, pack) == []
