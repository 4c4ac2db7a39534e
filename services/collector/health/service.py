"""The collector's health: what the database holds (cached briefly) and how sampling goes.

Usage: `cache = stored_data_cache(engine, sampling)` in the lifespan;
`collector_health(await cache.get(), sampling, app.state.storage)` per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.samples import repository
from services.collector.sampling.service import SamplingService
from shared.clock import utcnow
from shared.schemas.health import CollectorHealth
from shared.storage import StorageState
from shared.web import TTLCache

# Health is polled often (the gateway, load balancers); the summary is a full-table aggregate.
SUMMARY_TTL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class StoredData:
    """Whether the database answered, and the row count and age bounds it reported."""

    database: bool
    count: int
    oldest: datetime | None
    newest: datetime | None


def stored_data_cache(engine: AsyncEngine, sampling: SamplingService) -> TTLCache[StoredData]:
    """The database summary, recomputed at most once a second; invalidate it after writes."""

    async def compute() -> StoredData:
        try:
            async with engine.connect() as conn:
                stored = await repository.summary(conn)
        except Exception:  # noqa: BLE001 - health reports the database as down
            return StoredData(False, sampling.samples_written, None, None)
        return StoredData(True, stored.count, stored.oldest, stored.newest)

    return TTLCache(SUMMARY_TTL_SECONDS, compute)


def collector_health(
    stored: StoredData, sampling: SamplingService, storage: StorageState
) -> CollectorHealth:
    now = utcnow()
    problems = [] if stored.database else ["database unreachable"]
    if full := storage.problem():
        problems.append(full)
    return CollectorHealth(
        status="degraded" if problems else "healthy",
        problems=problems,
        database=stored.database,
        metrics_collected=stored.count,
        data_collection_active=sampling.active,
        oldest_data_age_hours=(now - stored.oldest).total_seconds() / 3600
        if stored.oldest
        else None,
        newest_data_age_seconds=(now - stored.newest).total_seconds() if stored.newest else None,
        last_collection_at=sampling.last_collection_at,
        collection_interval_seconds=sampling.settings.collection_interval,
        buffered_samples=len(sampling.buffer),
        dropped_samples=sampling.buffer.dropped,
    )
