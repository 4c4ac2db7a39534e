"""SQL of the forecaster: bucketed history, newest samples, stored forecasts and their retention."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.forecaster.forecasting.history import BUCKET, SAMPLES, normal_column, square_column
from services.forecaster.forecasting.prediction import Prediction
from shared.clock import utc
from shared.db import row_dict
from shared.registry import SUMMARY_COLUMNS
from shared.schemas.models import ModelSummary
from shared.tables import anomaly_scores, incidents, metric_forecasts, metrics_history, ml_models

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
    result = await conn.execute(query)
    return BucketRows(list(result.keys()), [tuple(row) for row in result])


async def latest_sample(conn: AsyncConnection, host: str) -> dict[str, Any] | None:
    """The newest sample of a host as a row (timestamp, host, the metrics, label), or None."""
    query = (
        sa.select(metrics_history)
        .where(metrics_history.c.host == host)
        .order_by(metrics_history.c.timestamp.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    return None if row is None else row_dict(row._mapping)


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


async def latest_trained_host(conn: AsyncConnection) -> str | None:
    """The host whose forecaster models were activated last: the default for reads."""
    query = (
        sa.select(ml_models.c.host)
        .where(ml_models.c.name == MODEL_NAME, ml_models.c.status == "active")
        .order_by(ml_models.c.activated_at.desc(), ml_models.c.id.desc())
        .limit(1)
    )
    value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else str(value)


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


@dataclass(slots=True)
class StoredForecast:
    """One metric's newest stored forecast generation, points soonest first."""

    metric: str
    model_id: int | None
    model_version: int | None
    generated_at: datetime
    times: list[datetime]
    yhat: list[float]
    lower: list[float]
    upper: list[float]

    def prediction(self) -> Prediction:
        return Prediction(
            times=self.times,
            yhat=np.array(self.yhat, dtype=float),
            lower=np.array(self.lower, dtype=float),
            upper=np.array(self.upper, dtype=float),
        )


def _stored(metric: str, rows: list[Any]) -> StoredForecast:
    first = rows[0]
    return StoredForecast(
        metric=metric,
        model_id=first[1],
        model_version=first[2],
        generated_at=utc(first[3]),
        times=[utc(r[4]) for r in rows],
        yhat=[r[5] for r in rows],
        lower=[r[6] for r in rows],
        upper=[r[7] for r in rows],
    )


async def read_forecasts(
    conn: AsyncConnection,
    *,
    host: str,
    after: datetime,
    until: datetime,
    metric: str | None = None,
    metrics: Collection[str] | None = None,
) -> list[StoredForecast]:
    """The newest generation of each metric's forecast with points in (after, until], by metric.

    Only `metric`, or only `metrics`, when given.

    Two statements on purpose: one joined to its own GROUP BY was slow on PostgreSQL
    before its statistics were gathered (docs/forecasting.md).
    """
    f = metric_forecasts.c
    scope = [f.host == host]
    if metric is not None:
        scope.append(f.metric == metric)
    if metrics is not None:
        scope.append(f.metric.in_(list(metrics)))
    newest = sa.select(f.metric, sa.func.max(f.generated_at)).where(*scope).group_by(f.metric)
    pairs = [(row[0], row[1]) for row in await conn.execute(newest)]
    if not pairs:
        return []
    query = (
        sa.select(
            f.metric,
            f.model_id,
            ml_models.c.version,
            f.generated_at,
            f.target_timestamp,
            f.yhat,
            f.yhat_lower,
            f.yhat_upper,
        )
        .outerjoin(ml_models, ml_models.c.id == f.model_id)
        .where(
            f.host == host,
            f.target_timestamp > after,
            f.target_timestamp <= until,
            sa.or_(*(sa.and_(f.metric == m, f.generated_at == g) for m, g in pairs)),
        )
        .order_by(f.metric, f.target_timestamp)
    )
    rows = list(await conn.execute(query))
    return [_stored(str(name), list(group)) for name, group in groupby(rows, key=lambda r: r[0])]


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
