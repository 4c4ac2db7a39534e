"""SQL of GET /metrics/series: a host's metrics averaged, min'd and max'd per time bucket in the
database, so a month of samples reaches the dashboard as a few hundred points.

Usage: `await read_series(engine, series_window(host="web-1", ...))`. Split from repository.py
for size.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.samples.window import SeriesWindow
from shared.clock import utc
from shared.schemas.samples import HostSamples, HostsResponse, SeriesResponse, SeriesValues
from shared.tables import metrics_history as mh


def _bucket(step: int, *, postgres: bool) -> sa.ColumnElement[Any]:
    """The bucket number of a sample: its Unix seconds divided by the step, rounded down."""
    if postgres:
        return sa.func.floor(sa.extract("epoch", mh.c.timestamp) / step)
    # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC; strftime('%s') reads it as seconds.
    seconds = sa.cast(sa.func.strftime("%s", mh.c.timestamp), sa.Integer)
    return sa.cast(seconds / step, sa.Integer)  # integer division of two integers


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def read_series(engine: AsyncEngine, window: SeriesWindow) -> SeriesResponse:
    """One row per non-empty bucket: its number, sample count, then avg/min/max per metric."""
    postgres = engine.dialect.name == "postgresql"
    bucket = _bucket(window.step_seconds, postgres=postgres).label("bucket")
    columns: list[Any] = [bucket, sa.func.count()]
    for name in window.metrics:
        col = mh.c[name]
        columns += [sa.func.avg(sa.cast(col, sa.Float)), sa.func.min(col), sa.func.max(col)]
    query = (
        sa.select(*columns)
        .where(
            mh.c.host == window.host,
            mh.c.timestamp >= window.start,
            mh.c.timestamp <= window.end,
        )
        .group_by(bucket)
        .order_by(bucket)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    step = window.step_seconds
    values = {name: SeriesValues(avg=[], min=[], max=[]) for name in window.metrics}
    for row in rows:
        for i, name in enumerate(window.metrics):
            v = values[name]
            v.avg.append(_float(row[2 + 3 * i]))
            v.min.append(_float(row[3 + 3 * i]))
            v.max.append(_float(row[4 + 3 * i]))
    first = (int(window.start.timestamp()) // step) * step
    return SeriesResponse(
        host=window.host,
        start=datetime.fromtimestamp(first, UTC),
        end=window.end,
        step_seconds=step,
        timestamps=[int(row[0]) * step for row in rows],
        counts=[int(row[1]) for row in rows],
        series=values,
    )


async def read_hosts(engine: AsyncEngine) -> HostsResponse:
    """Every host with samples and its newest sample's time (the index on host, timestamp)."""
    query = (
        sa.select(mh.c.host, sa.func.max(mh.c.timestamp)).group_by(mh.c.host).order_by(mh.c.host)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    hosts = [HostSamples(host=host, newest=utc(newest)) for host, newest in rows]
    return HostsResponse(hosts=hosts, count=len(hosts))
