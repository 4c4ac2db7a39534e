"""The trainer's health and its Prometheus figures: database, background loops, scoring lag.

Usage: ``await trainer_health(engine, settings, loops, anomaly, storage)``; ``await scoring_gauges(anomaly)`` for /metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly.service import AnomalyService
from shared import registry
from shared.loops import BackgroundLoop
from shared.schemas.health import LoopHealth, ScoringHealth, TrainerHealth
from shared.settings import Settings
from shared.storage import StorageState


def loop_health(loop: BackgroundLoop, settings: Settings) -> LoopHealth:
    st = loop.state()
    return LoopHealth(
        name=st.name,
        running=st.running,
        stalled=loop.stalled(
            settings.loop_stall_intervals, min_seconds=settings.loop_stall_min_seconds
        ),
        interval_seconds=st.interval,
        runs=st.runs,
        failures=st.failures,
        last_success_at=st.last_success_at,
        seconds_since_success=st.seconds_since_success,
        last_error=st.last_error,
        last_error_at=st.last_error_at,
    )


async def trainer_health(
    engine: AsyncEngine,
    settings: Settings,
    loops: Sequence[BackgroundLoop],
    anomaly: AnomalyService,
    storage: StorageState,
) -> TrainerHealth:
    """healthy, or degraded naming each problem: database away or full, a loop stalled,
    scoring late, scores waiting or dropped."""
    states = [loop_health(loop, settings) for loop in loops]
    problems = [
        f"loop {s.name} stalled: no successful pass for {s.seconds_since_success or 0:.0f} s"
        + (f" (last error: {s.last_error})" if s.last_error else "")
        for s in states
        if s.stalled
    ]
    scoring: ScoringHealth | None = None
    active = 0
    database = False
    query_failed: Exception | None = None
    # One connection for the ping and the figures: each checkout costs round trips.
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
            database = True
            try:
                active = await registry.count_active(conn)
                scoring = await anomaly.scoring_health(conn)
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                query_failed = exc
    except Exception:  # noqa: BLE001 - reported, not raised
        pass
    if not database:
        problems.insert(0, "database unreachable")
    elif query_failed is not None:
        problems.insert(0, f"database query failed: {type(query_failed).__name__}")
    if scoring is not None and (scoring.lag_seconds or 0.0) > settings.scoring_lag_limit:
        problems.append(
            f"scoring lags {scoring.lag_seconds:.0f} s behind the newest sample "
            f"(limit {settings.scoring_lag_limit:.0f} s)"
        )
    if full := storage.problem():
        problems.append(full)
    writer = anomaly.writer
    if writer.failing:
        problems.append(f"{len(writer.pending)} scores waiting for the database")
    return TrainerHealth(
        status="degraded" if problems else "healthy",
        pending_scores=len(writer.pending),
        dropped_scores=writer.dropped,
        service="trainer",
        database=database,
        active_models=active,
        problems=problems,
        loops=states,
        scoring=scoring,
    )


async def scoring_gauges(anomaly: AnomalyService) -> list[tuple[str, str, float | None]]:
    """The scoring lag and the score writer's queue, as (name, help, value) gauges for /metrics."""
    try:
        scoring: ScoringHealth | None = await anomaly.scoring_health()
    except Exception:  # noqa: BLE001 - the loop figures still count
        scoring = None

    def stamp(value: object) -> float | None:
        return value.timestamp() if hasattr(value, "timestamp") else None

    gauges = [
        (
            "autofix_scoring_lag_seconds",
            "Newest stored sample minus newest scored sample.",
            scoring.lag_seconds if scoring else None,
        ),
        (
            "autofix_scoring_newest_sample_timestamp_seconds",
            "Unix time of the newest stored sample.",
            stamp(scoring.newest_sample_at) if scoring else None,
        ),
        (
            "autofix_scoring_newest_scored_timestamp_seconds",
            "Unix time of the newest scored sample.",
            stamp(scoring.newest_scored_at) if scoring else None,
        ),
        (
            "autofix_anomaly_scores_dropped",
            "Scores dropped because too many waited to be written.",
            float(anomaly.writer.dropped),
        ),
        (
            "autofix_anomaly_scores_pending",
            "Scores of answered predictions waiting to be written (the database away).",
            float(len(anomaly.writer.pending)),
        ),
    ]
    return gauges
