"""Storing pushed samples and the retention job.

Usage: `await ingest(conn, body.samples, default_host=settings.hostname)`;
`retention_loop(engine, settings).start()` in the lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.collector.samples import repository
from shared.clock import utcnow
from shared.loops import BackgroundLoop
from shared.settings import Settings

log = logging.getLogger("autofix_ml.collector")


async def ingest(conn: AsyncConnection, samples: Sequence[BaseModel], *, default_host: str) -> int:
    """Store validated samples; a missing timestamp is now, a missing host is `default_host`."""
    now = utcnow().replace(microsecond=0)
    rows = []
    for sample in samples:
        row = sample.model_dump()
        row["timestamp"] = row["timestamp"] or now
        row["host"] = row["host"] or default_host
        rows.append(row)
    return await repository.insert_samples(conn, rows)


def retention_loop(engine: AsyncEngine, settings: Settings) -> BackgroundLoop:
    """Every ML_RETENTION_CHECK_SECONDS, delete samples older than ML_DATA_RETENTION_DAYS."""

    async def purge() -> None:
        async with engine.begin() as conn:
            deleted = await repository.delete_older_than(conn, settings.retention_days)
        if deleted:
            log.info(
                "retention: deleted %d samples older than %s days",
                deleted,
                settings.retention_days,
            )

    every = settings.retention_check_seconds
    return BackgroundLoop("retention", purge, interval=every, retry_after=every)
