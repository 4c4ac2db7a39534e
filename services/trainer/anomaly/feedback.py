"""Operator feedback on a score: one verdict per score, moving that host's own threshold.

Usage: ``answer = await give_feedback(engine, settings, score_id, "false_positive")``;
the scoring loop reads the thresholds with ``repository.host_thresholds`` once per pass.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.threshold import (
    Feedback,
    feedback_step,
    from_surprise,
    learned_range,
    precision,
    surprise,
)
from shared.clock import utcnow
from shared.db import write_transaction
from shared.schemas.anomaly import FeedbackResponse, HostThreshold, HostThresholdList
from shared.settings import Settings

RANGE_SCORES = 10_000  # a host's latest scores its threshold range is learned from
HISTORY = 200  # moves kept per host (a replaced verdict older than this cannot be undone)


async def give_feedback(
    engine: AsyncEngine, settings: Settings, score_id: int, kind: Feedback
) -> FeedbackResponse:
    """Record a verdict on a score and move its host's threshold (one transaction)."""
    async with write_transaction(engine) as conn:
        row = await repo.get_score(conn, score_id)
        host = row.host
        stored = await repo.locked_threshold(conn, host)
        before = float(stored["threshold"]) if stored else settings.anomaly_threshold
        history: list[dict[str, Any]] = list(stored["history"]) if stored else []
        previous = next((e for e in reversed(history) if e.get("score_id") == score_id), None)
        base = before
        if previous is not None:  # the last verdict counts: undo the one it replaces
            base = from_surprise(surprise(before) - float(previous["delta"]))
        scores = await repo.host_recent_scores(conn, host, limit=RANGE_SCORES)
        bounds = learned_range(
            scores,
            default=settings.anomaly_threshold,
            hard_min=settings.anomaly_threshold_min,
            hard_max=settings.anomaly_threshold_max,
        )
        after = feedback_step(base, kind, row.score, bounds=bounds)
        now = utcnow()
        await repo.set_feedback(conn, score_id, feedback=kind, at=now)
        verdicts = await repo.host_verdicts(conn, host)
        p_before, p_after = precision(verdicts, before), precision(verdicts, after)
        history.append(
            {
                "at": now.isoformat(),
                "score_id": score_id,
                "feedback": kind,
                "replaced": previous["feedback"] if previous else None,
                "score": row.score,
                "before": before,
                "after": after,
                "delta": surprise(after) - surprise(base),
                "precision_before": p_before,
                "precision_after": p_after,
            }
        )
        await repo.save_threshold(
            conn,
            {
                "host": host,
                "threshold": after,
                "lower": bounds.lower,
                "upper": bounds.upper,
                "verdicts": len(verdicts),
                "precision_before": p_before,
                "precision_after": p_after,
                "history": history[-HISTORY:],
                "updated_at": now,
            },
        )
    return FeedbackResponse(
        score_id=score_id,
        feedback=kind,
        replaced=previous["feedback"] if previous else None,
        score=row.score,
        host=host,
        threshold_before=before,
        threshold_after=after,
        threshold_lower=bounds.lower,
        threshold_upper=bounds.upper,
        verdicts=len(verdicts),
        precision_before=p_before,
        precision_after=p_after,
    )


async def list_thresholds(
    engine: AsyncEngine, settings: Settings, host: str | None
) -> HostThresholdList:
    async with engine.connect() as conn:
        rows = await repo.list_thresholds(conn, host)
    found = [HostThreshold.model_validate(r) for r in rows]
    return HostThresholdList(
        default_threshold=settings.anomaly_threshold, thresholds=found, count=len(found)
    )
