"""SQL of the forecaster: bucketed history, newest samples, stored forecasts and their retention."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.forecaster.forecasting.history import BUCKET, SAMPLES, normal_column, square_column
from shared.clock import utc
from shared.db import row_dict
from shared.registry import SUMMARY_COLUMNS
from shared.schemas.models import ModelSummary
from shared.tables import (
    anomaly_scores,
    incidents,
    metrics_history,
    ml_models,
)

MODEL_NAME = "forecaster"
# Generations of forecasts kept per host and metric: the newest, and the one before it
# (what a reader saw a refresh ago). Older ones are deleted as each new one is written.


# ------------------------------------------------------------------------------ history


async def sample_counts(conn: AsyncConnection) -> list[tuple[str, int]]:
    """Hosts with samples, most samples first."""
    count = sa.func.count().label("n")
    query = (
        sa.select(metrics_history.c.host, count)
        .group_by(metrics_history.c.host)
        .order_by(count.desc(), metrics_history.c.host)
    )
    return [(str(row[0]), int(row[1])) for row in await conn.execute(query)]


async def sample_span(conn: AsyncConnection, host: str) -> tuple[datetime, datetime] | None:
    """Oldest and newest sample of a host, or None when it has none."""
    ts = metrics_history.c.timestamp
    query = sa.select(sa.func.min(ts), sa.func.max(ts)).where(metrics_history.c.host == host)
    row = (await conn.execute(query)).first()
    if row is None or row[0] is None:
        return None
    return utc(row[0]), utc(row[1])


async def sample_spans(conn: AsyncConnection) -> dict[str, tuple[datetime, datetime]]:
    """Oldest and newest sample of every host with samples."""
    ts = metrics_history.c.timestamp
    query = sa.select(metrics_history.c.host, sa.func.min(ts), sa.func.max(ts)).group_by(
        metrics_history.c.host
    )
    return {str(row[0]): (utc(row[1]), utc(row[2])) for row in await conn.execute(query)}


def _bucket(conn: AsyncConnection, seconds: int) -> sa.ColumnElement[Any]:
    """The bucket number of each sample: floor(epoch seconds / bucket width), per dialect."""
    if conn.dialect.name == "sqlite":
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff'; strftime would round the fraction up
        # into the next second (and bucket), so cut it off first.
        sql = f"CAST(strftime('%s', substr(metrics_history.\"timestamp\", 1, 19)) AS INTEGER) / {seconds}"
    else:
        sql = f'CAST(floor(extract(epoch from metrics_history."timestamp") / {seconds}) AS BIGINT)'
    return sa.literal_column(sql)


@dataclass(frozen=True, slots=True)
class BucketRows:
    """Per-bucket means as the database returns them (see `bucketed_history`)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    @property
    def samples(self) -> int:
        return int(sum(row[1] for row in self.rows))

    def table(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.rows, columns=self.columns)


async def bucketed_history(
    conn: AsyncConnection,
    *,
    host: str,
    start: datetime,
    end: datetime,
    metrics: Sequence[str],
    bucket_seconds: int,
) -> BucketRows:
    """Per-bucket means of each metric, computed by the database.

    Columns: ``bucket`` (epoch seconds / width), ``samples``, then per metric
    ``<metric>`` (mean of every sample), ``<metric>__normal`` (mean of samples labelled
    normal, which is what the model fits) and ``<metric>__sq`` (mean of the squares: the
    spread of the samples around the mean, which the interval covers). Thousands of rows instead of tens of thousands.
    `history.bucket_means` computes the same from a DataFrame of samples.
    """
    bucket = _bucket(conn, bucket_seconds).label(BUCKET)
    normal = metrics_history.c.label == "normal"
    columns: list[Any] = [bucket, sa.func.count().label(SAMPLES)]
    for name in metrics:
        column = metrics_history.c[name]
        columns.append(sa.func.avg(column).label(name))
        columns.append(sa.func.avg(sa.case((normal, column))).label(normal_column(name)))
        columns.append(sa.func.avg(column * column).label(square_column(name)))
    query = (
        sa.select(*columns)
        .where(
            metrics_history.c.host == host,
            metrics_history.c.timestamp >= start,
            metrics_history.c.timestamp <= end,
        )
        .group_by(sa.literal_column(BUCKET))
        .order_by(sa.literal_column(BUCKET))
    )
    # Streamed in parts: 30 days x 14 metrics are 2,880 rows of 44 values, and turning them
    # into Python objects at once held the event loop (and /health) for tens of ms.
    result = await conn.stream(query)
    rows: list[tuple[Any, ...]] = []
    async for part in result.partitions(_BUCKET_ROWS_PER_PART):
        rows.extend(tuple(row) for row in part)
    return BucketRows(list(result.keys()), rows)


_BUCKET_ROWS_PER_PART = 250


# SQLite allows 500 parts in a compound SELECT.
_SAMPLES_PER_STATEMENT = 200


async def latest_samples(
    conn: AsyncConnection, hosts: Collection[str]
) -> dict[str, dict[str, Any]]:
    """The newest sample of each host that has one.

    Per host one `ORDER BY timestamp DESC LIMIT 1` look-up (one probe of
    idx_metrics_host_timestamp), all in one round trip: a LATERAL join over the hosts on
    PostgreSQL, a UNION ALL per 200 hosts on SQLite.
    """
    return samples_by_host(await latest_sample_rows(conn, hosts))


async def latest_sample_rows(
    conn: AsyncConnection, hosts: Collection[str]
) -> list[tuple[Any, ...]]:
    """`latest_samples`' rows as the driver gave them (cheap to compare), hosts sorted;
    `samples_by_host` turns them into its answer."""
    names = sorted(set(hosts))
    if conn.dialect.name == "postgresql" and names:
        return [tuple(row) for row in await conn.execute(_LATEST_PG, {"hosts": names})]
    rows: list[tuple[Any, ...]] = []
    for i in range(0, len(names), _SAMPLES_PER_STATEMENT):
        query = _latest_query(tuple(names[i : i + _SAMPLES_PER_STATEMENT]))
        rows.extend(tuple(row) for row in await conn.execute(query))
    return rows


_SAMPLE_KEYS = tuple(column.name for column in metrics_history.c)


def samples_by_host(rows: Sequence[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """`latest_sample_rows`' rows as `latest_samples` answers them: by host, times aware UTC."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        found = row_dict(dict(zip(_SAMPLE_KEYS, row, strict=True)))
        out[str(found["host"])] = found
    return out


# PostgreSQL: the same index probes as one small statement of any number of hosts (planning
# a UNION of 100 probes took longer than running it).
_LATEST_PG = sa.text(
    "SELECT m.* FROM unnest(CAST(:hosts AS varchar[])) AS h(host) CROSS JOIN LATERAL "
    "(SELECT * FROM metrics_history WHERE metrics_history.host = h.host "
    'ORDER BY metrics_history."timestamp" DESC LIMIT 1) AS m'
).columns(*metrics_history.c)


@functools.lru_cache(maxsize=16)
def _latest_query(names: tuple[str, ...]) -> sa.Executable:
    """The statement for these hosts, built once: building 100 subqueries took longer than
    running them (fleet-wide next-hour reads ask for the same hosts every time)."""
    parts = [
        sa.select(
            sa.select(metrics_history)
            .where(metrics_history.c.host == host)
            .order_by(metrics_history.c.timestamp.desc())
            .limit(1)
            .subquery()
        )
        for host in names
    ]
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


ANOMALY_INCIDENT = "ML_ANOMALY"


async def flagged_spans(
    conn: AsyncConnection, *, host: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Stretches of a host's history not to fit on: its ML_ANOMALY incidents, flagged samples.

    An incident spans started_at to resolved_at (to ``end`` while open); a sample scored
    ``is_anomaly`` is a span of one instant.
    """
    spans: list[tuple[datetime, datetime]] = []
    query = sa.select(incidents.c.started_at, incidents.c.resolved_at).where(
        incidents.c.host == host,
        incidents.c.type == ANOMALY_INCIDENT,
        incidents.c.started_at <= end,
        sa.or_(incidents.c.resolved_at.is_(None), incidents.c.resolved_at >= start),
    )
    for started, resolved in await conn.execute(query):
        spans.append((utc(started), end if resolved is None else utc(resolved)))
    flagged = sa.select(anomaly_scores.c.timestamp).where(
        anomaly_scores.c.host == host,
        anomaly_scores.c.is_anomaly.is_(True),
        anomaly_scores.c.timestamp >= start,
        anomaly_scores.c.timestamp <= end,
    )
    spans.extend((utc(ts), utc(ts)) for (ts,) in await conn.execute(flagged))
    return spans


# ------------------------------------------------------------------------------- models


async def active_models(conn: AsyncConnection, *, host: str | None = None) -> list[ModelSummary]:
    """Active forecaster versions (summary columns, no artifact), by host and metric."""
    query = sa.select(*SUMMARY_COLUMNS).where(
        ml_models.c.name == MODEL_NAME, ml_models.c.status == "active"
    )
    if host is not None:
        query = query.where(ml_models.c.host == host)
    query = query.order_by(ml_models.c.host, ml_models.c.metric)
    return [
        ModelSummary.model_validate(row_dict(row._mapping)) for row in await conn.execute(query)
    ]


async def count_active(conn: AsyncConnection) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(ml_models)
        .where(ml_models.c.status == "active", ml_models.c.name == MODEL_NAME)
    )
    return int((await conn.execute(query)).scalar_one())


async def active_parameters(
    conn: AsyncConnection, *, host: str | None = None, parameters: bool = True
) -> dict[str, dict[str, dict[str, Any]]]:
    """Active forecaster versions' parameters by host and metric (every host unless `host`).

    Only the columns a read needs: no evaluation or trend JSON to parse for 14 x hosts rows;
    `parameters=False` leaves them out too (every value then `{}`).
    """
    m = ml_models.c
    columns = [m.host, m.metric, m.parameters] if parameters else [m.host, m.metric]
    query = sa.select(*columns).where(
        m.name == MODEL_NAME, m.status == "active", m.host.is_not(None), m.metric.is_not(None)
    )
    if host is not None:
        query = query.where(m.host == host)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in await conn.execute(query):
        found = row[2] if parameters else {}
        out.setdefault(str(row[0]), {})[str(row[1])] = dict(found or {})
    return out


async def active_hosts(conn: AsyncConnection, *, host: str | None = None) -> list[str]:
    """Hosts with an active forecaster version (only `host`, if it has one), sorted."""
    m = ml_models.c
    query = (
        sa.select(m.host)
        .where(m.name == MODEL_NAME, m.status == "active", m.host.is_not(None))
        .distinct()
    )
    if host is not None:
        query = query.where(m.host == host)
    return sorted(str(row[0]) for row in await conn.execute(query))


async def trained_at_by_host(conn: AsyncConnection) -> dict[str, datetime]:
    """Per host with active forecaster versions, when the newest of them was activated."""
    m = ml_models.c
    query = (
        sa.select(m.host, sa.func.max(sa.func.coalesce(m.activated_at, m.created_at)))
        .where(m.name == MODEL_NAME, m.status == "active", m.host.is_not(None))
        .group_by(m.host)
    )
    return {str(row[0]): utc(row[1]) for row in await conn.execute(query)}


# ---------------------------------------------------------------------------- forecasts
