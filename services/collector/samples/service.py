"""Storing pushed samples and the retention job.

Usage: `await ingest(conn, body.samples, default_host=h, retention_days=d)`;
`retention_loop(engine, settings).start()` in the lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.collector.samples import repository
from shared.clock import utcnow
from shared.errors import Unprocessable
from shared.loops import BackgroundLoop
from shared.settings import Settings

log = logging.getLogger("autofix_ml.collector")


async def ingest(
    conn: AsyncConnection,
    samples: Sequence[BaseModel],
    *,
    default_host: str,
    retention_days: float,
) -> int:
    """Store validated samples; a missing timestamp is now, a missing host is `default_host`.

    A sample older than the retention window is refused (422 naming it): retention would
    delete it at its next pass, so accepting it would only lose it later, silently.
    """
    now = utcnow().replace(microsecond=0)
    oldest = now - timedelta(days=retention_days)
    rows = []
    expired = []
    for i, sample in enumerate(samples):
        row = sample.model_dump()
        row["timestamp"] = row["timestamp"] or now
        row["host"] = row["host"] or default_host
        if row["timestamp"] < oldest:
            loc = ["body", "samples", str(i), "timestamp"]
            expired.append(
                {
                    "field": ".".join(loc),
                    "loc": loc,
                    "msg": f"timestamp is older than the retention window "
                    f"(ML_DATA_RETENTION_DAYS={retention_days:g}, so before {oldest:%Y-%m-%dT%H:%M:%SZ}); "
                    "it would be deleted at the next retention pass",
                    "type": "retention_window",
                }
            )
        rows.append(row)
    if expired:
        raise Unprocessable(expired[:MAX_REPORTED])
    return await repository.insert_samples(conn, rows)


# A batch of expired samples names this many of them.
MAX_REPORTED = 20


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
