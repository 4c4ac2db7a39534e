"""The analysis queue: bounded, never waited on, the oldest dropped when full (the sweep finds
it again), resolved incidents and those already queued left out."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.analysis.service import AnalysisService
from shared.incidents.notifier import Notifier
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings

AT = datetime(2026, 1, 1, tzinfo=UTC)


def incident(n: int, status: str = "open") -> IncidentOut:
    return IncidentOut(
        id=n,
        type="ML_ANOMALY",
        severity="high",
        status=status,
        host=f"h{n}",
        dedup_key=f"ML_ANOMALY:h{n}",
        title="t",
        started_at=AT,
        updated_at=AT,
    )


async def test_the_queue_is_bounded_and_fed_by_the_notifier(
    engine: AsyncEngine, settings: Settings
) -> None:
    settings = settings.model_copy(update={"analysis_queue_size": 2})
    notifier = Notifier(settings, engine)
    service = AnalysisService(settings, engine, notifier)
    for n in (1, 2, 2, 3):
        notifier.notify(incident(n))  # as the scoring loop does; no webhook configured
    notifier.notify(incident(4, status="resolved"))
    queued = [service.queue.get_nowait() for _ in range(service.queue.qsize())]
    await service.stop()
    assert queued == [2, 3] and service.dropped == 1
    assert service.pending == {2, 3}


async def test_no_listener_without_auto_analysis(engine: AsyncEngine, settings: Settings) -> None:
    settings = settings.model_copy(update={"analysis_auto": False})
    notifier = Notifier(settings, engine)
    service = AnalysisService(settings, engine, notifier)
    notifier.notify(incident(1))
    await service.stop()
    assert service.queue.empty() and notifier.listeners == [] and service.loops == []
