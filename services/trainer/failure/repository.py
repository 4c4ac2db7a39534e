"""All SQL of failure prediction: hosts and their recent samples, stored predictions.

Usage: ``rows = await recent_rows(conn, host="web-1", limit=900)``;
``await insert_predictions(conn, records)``; ``await list_predictions(conn, query)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.trainer.anomaly.repository import SAMPLE_COLUMNS, SampleRow
from shared.clock import utc
from shared.db import row_dict
from shared.schemas.failure import FailurePredictionOut, FailurePredictionQuery
from shared.tables import failure_predictions as fp
from shared.tables import metrics_history as mh


async def recent_rows(
    conn: AsyncConnection, *, host: str, limit: int, until: datetime | None = None
) -> list[SampleRow]:
    """A host's latest ``limit`` samples (at or before ``until``), oldest first."""
    query = sa.select(*SAMPLE_COLUMNS).where(mh.c.host == host)
    if until is not None:
        query = query.where(mh.c.timestamp <= until)
    query = query.order_by(mh.c.timestamp.desc(), mh.c.id.desc()).limit(limit)
    rows = [tuple(r) for r in await conn.execute(query)]
    rows.reverse()
    return rows


async def window_rows(
    conn: AsyncConnection, *, host: str, seconds: float, limit: int, until: datetime | None = None
) -> list[SampleRow]:
    """A host's samples of the ``seconds`` up to its newest (at or before ``until``), oldest
    first, at most the latest ``limit``: the look-back of one prediction."""
    if until is None:
        newest = (
            await conn.execute(sa.select(sa.func.max(mh.c.timestamp)).where(mh.c.host == host))
        ).scalar_one_or_none()
        if newest is None:
            return []
        until = utc(newest)
    query = sa.select(*SAMPLE_COLUMNS).where(
        mh.c.host == host,
        mh.c.timestamp <= until,
        mh.c.timestamp >= until - timedelta(seconds=seconds),
    )
    query = query.order_by(mh.c.timestamp.desc(), mh.c.id.desc()).limit(limit)
    rows = [tuple(r) for r in await conn.execute(query)]
    rows.reverse()
    return rows


async def active_hosts(conn: AsyncConnection, *, since: datetime) -> list[str]:
    """Hosts with a sample at or after ``since``."""
    query = sa.select(mh.c.host).where(mh.c.timestamp >= since).distinct().order_by(mh.c.host)
    return [str(r[0]) for r in await conn.execute(query)]


async def last_predicted(conn: AsyncConnection) -> dict[str, datetime]:
    """Each host's newest stored prediction time (where scoring resumes after a restart)."""
    query = sa.select(fp.c.host, sa.func.max(fp.c.timestamp)).group_by(fp.c.host)
    return {str(h): utc(t) for h, t in await conn.execute(query) if t is not None}


async def insert_predictions(conn: AsyncConnection, records: Sequence[dict[str, Any]]) -> None:
    if records:
        await conn.execute(sa.insert(fp), list(records))


async def list_predictions(
    conn: AsyncConnection, query: FailurePredictionQuery
) -> list[FailurePredictionOut]:
    """Stored predictions matching ``query``, newest first."""
    select = sa.select(fp).order_by(fp.c.timestamp.desc(), fp.c.horizon_minutes, fp.c.id.desc())
    if query.host is not None:
        select = select.where(fp.c.host == query.host)
    if query.start is not None:
        select = select.where(fp.c.timestamp >= query.start)
    if query.end is not None:
        select = select.where(fp.c.timestamp <= query.end)
    if query.min_probability > 0:
        select = select.where(fp.c.failure_probability >= query.min_probability)
    if query.horizon_minutes is not None:
        select = select.where(fp.c.horizon_minutes == query.horizon_minutes)
    if query.warnings_only:
        select = select.where(fp.c.will_fail.is_(True))
    rows = await conn.execute(select.limit(query.limit))
    return [FailurePredictionOut.model_validate(row_dict(r._mapping)) for r in rows]
