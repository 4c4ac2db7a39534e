"""SQL of the forecaster: bucketed history, newest samples, stored forecasts and their retention."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.forecaster.forecasting.history import BUCKET, SAMPLES, normal_column
from services.forecaster.forecasting.stored import StoredForecast
from shared.clock import utc
from shared.db import row_dict
from shared.registry import SUMMARY_COLUMNS
from shared.schemas.models import ModelSummary
from shared.tables import forecast_generations, metric_forecasts, metrics_history, ml_models

MODEL_NAME = "forecaster"
# Generations of forecasts kept per host and metric: the newest, and the one before it
# (what a reader saw a refresh ago). Older ones are deleted as each new one is written.
KEEP_GENERATIONS = 2


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
    ``<metric>`` (mean of every sample) and ``<metric>__normal`` (mean of samples labelled
    normal, which is what the model fits). Thousands of rows instead of tens of thousands.
    `history.bucket_means` computes the same from a DataFrame of samples.
    """
    bucket = _bucket(conn, bucket_seconds).label(BUCKET)
    normal = metrics_history.c.label == "normal"
    columns: list[Any] = [bucket, sa.func.count().label(SAMPLES)]
    for name in metrics:
        column = metrics_history.c[name]
        columns.append(sa.func.avg(column).label(name))
        columns.append(sa.func.avg(sa.case((normal, column))).label(normal_column(name)))
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
    result = await conn.execute(query)
    return BucketRows(list(result.keys()), [tuple(row) for row in result])


# SQLite allows 500 parts in a compound SELECT.
_SAMPLES_PER_STATEMENT = 200


async def latest_samples(
    conn: AsyncConnection, hosts: Collection[str]
) -> dict[str, dict[str, Any]]:
    """The newest sample of each host that has one.

    One UNION ALL of per-host `ORDER BY timestamp DESC LIMIT 1` look-ups (each one probe of
    idx_metrics_host_timestamp) per 200 hosts: one round trip instead of one per host.
    """
    names = sorted(set(hosts))
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(names), _SAMPLES_PER_STATEMENT):
        parts = [
            sa.select(
                sa.select(metrics_history)
                .where(metrics_history.c.host == host)
                .order_by(metrics_history.c.timestamp.desc())
                .limit(1)
                .subquery()
            )
            for host in names[i : i + _SAMPLES_PER_STATEMENT]
        ]
        query = parts[0] if len(parts) == 1 else sa.union_all(*parts)
        for row in await conn.execute(query):
            found = row_dict(row._mapping)
            out[str(found["host"])] = found
    return out


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


async def write_forecasts(
    conn: AsyncConnection,
    *,
    host: str,
    metric: str,
    model_id: int,
    generated_at: datetime,
    timestamps: Sequence[datetime],
    yhat: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
) -> int:
    """Store one generation of a metric's forecast, then drop generations beyond the kept ones."""
    rows = [
        {
            "model_id": model_id,
            "host": host,
            "metric": metric,
            "generated_at": generated_at,
            "target_timestamp": ts,
            "yhat": y,
            "yhat_lower": lo,
            "yhat_upper": hi,
        }
        for ts, y, lo, hi in zip(timestamps, yhat, lower, upper, strict=True)
    ]
    if rows:
        await conn.execute(sa.insert(metric_forecasts), rows)
        newest = forecast_generations.c
        await conn.execute(
            sa.delete(forecast_generations).where(newest.host == host, newest.metric == metric)
        )
        await conn.execute(
            sa.insert(forecast_generations).values(
                host=host, metric=metric, generated_at=generated_at
            )
        )
    scope = (metric_forecasts.c.host == host, metric_forecasts.c.metric == metric)
    oldest_kept = (
        sa.select(metric_forecasts.c.generated_at)
        .where(*scope)
        .distinct()
        .order_by(metric_forecasts.c.generated_at.desc())
        .limit(1)
        .offset(KEEP_GENERATIONS - 1)
        .scalar_subquery()
    )
    await conn.execute(
        sa.delete(metric_forecasts).where(*scope, metric_forecasts.c.generated_at < oldest_kept)
    )
    return len(rows)


async def newest_generation(conn: AsyncConnection) -> datetime | None:
    value = (await conn.execute(sa.select(sa.func.max(metric_forecasts.c.generated_at)))).scalar()
    return None if value is None else utc(value)


def _stored(host: str, metric: str, rows: list[Any]) -> StoredForecast:
    first = rows[0]
    return StoredForecast(
        host=host,
        metric=metric,
        model_id=first[2],
        model_version=first[3],
        generated_at=utc(first[4]),
        times=[utc(r[5]) for r in rows],
        yhat=[r[6] for r in rows],
        lower=[r[7] for r in rows],
        upper=[r[8] for r in rows],
    )


async def read_forecasts(
    conn: AsyncConnection,
    *,
    after: datetime,
    until: datetime,
    host: str | None = None,
    metric: str | None = None,
    metrics: Collection[str] | None = None,
    pairs: Collection[tuple[str, str]] | None = None,
) -> list[StoredForecast]:
    """The newest generation of each host's and metric's forecast, points in (after, until].

    Every host unless `host`; only `metric`, or only `metrics`, when given. By host, then
    metric. The newest generations come from forecast_generations, so each (host, metric)
    is one range of the lookup index, however many hosts and points are stored. `pairs`:
    only these (host, metric)s.
    """
    f, g = metric_forecasts.c, forecast_generations.c
    scope: list[sa.ColumnElement[bool]] = []
    if host is not None:
        scope.append(g.host == host)
    if metric is not None:
        scope.append(g.metric == metric)
    if metrics is not None:
        scope.append(g.metric.in_(list(metrics)))
    if pairs is not None:
        if not pairs:
            return []
        scope.append(sa.or_(*(sa.and_(g.host == h, g.metric == m) for h, m in pairs)))
    query = (
        sa.select(
            f.host,
            f.metric,
            f.model_id,
            ml_models.c.version,
            f.generated_at,
            f.target_timestamp,
            f.yhat,
            f.yhat_lower,
            f.yhat_upper,
        )
        .select_from(forecast_generations)
        .join(
            metric_forecasts,
            sa.and_(f.host == g.host, f.metric == g.metric, f.generated_at == g.generated_at),
        )
        .outerjoin(ml_models, ml_models.c.id == f.model_id)
        .where(*scope, f.target_timestamp > after, f.target_timestamp <= until)
        .order_by(f.host, f.metric, f.target_timestamp)
    )
    rows = list(await conn.execute(query))
    return [
        _stored(str(key[0]), str(key[1]), list(group))
        for key, group in groupby(rows, key=lambda r: (r[0], r[1]))
    ]


async def reaching(
    conn: AsyncConnection,
    *,
    after: datetime,
    until: datetime,
    limits: Mapping[str, float],
    host: str | None = None,
) -> list[tuple[str, str]]:
    """The (host, metric)s whose newest forecast, in (after, until], has a point with yhat or
    its upper bound at or above the metric's limit: the only ones that can breach it.

    Alerts read these series whole instead of every series of the fleet.
    """
    if not limits:
        return []
    f, g = metric_forecasts.c, forecast_generations.c
    reached = sa.or_(
        *(
            sa.and_(g.metric == name, sa.or_(f.yhat >= limit, f.yhat_upper >= limit))
            for name, limit in limits.items()
        )
    )
    query = (
        sa.select(g.host, g.metric)
        .select_from(forecast_generations)
        .join(
            metric_forecasts,
            sa.and_(f.host == g.host, f.metric == g.metric, f.generated_at == g.generated_at),
        )
        .where(
            g.metric.in_(list(limits)),
            f.target_timestamp > after,
            f.target_timestamp <= until,
            reached,
            *([g.host == host] if host is not None else []),
        )
        .distinct()
    )
    return sorted((str(r[0]), str(r[1])) for r in await conn.execute(query))


async def generations(conn: AsyncConnection, *, host: str, metric: str) -> list[datetime]:
    """Stored generation times of one metric's forecast, newest first."""
    f = metric_forecasts.c
    query = (
        sa.select(f.generated_at)
        .where(f.host == host, f.metric == metric)
        .distinct()
        .order_by(f.generated_at.desc())
    )
    return [utc(row[0]) for row in await conn.execute(query)]
