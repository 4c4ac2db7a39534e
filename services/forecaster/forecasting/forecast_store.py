"""The stored forecasts' SQL (split from repository.py for size): write, read, what reaches a threshold.

Usage: ``await forecast_store.write_forecasts(conn, ...)``; ``await forecast_store.read_forecasts(conn, ...)``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.forecaster.forecasting.stored import StoredForecast
from shared.clock import utc
from shared.tables import (
    forecast_generations,
    metric_forecasts,
    ml_models,
)

KEEP_GENERATIONS = 2  # forecasts kept per host and metric: the newest and the one before


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


Key = tuple[str, str]  # (host, metric)


async def fingerprint(conn: AsyncConnection, model_name: str) -> tuple[Any, ...]:
    """What the reads' cache depends on, in one row: forecast_generations' (count, newest,
    sum of every generated_at) and the active `model_name` versions' (count, sum of ids).

    Every write of a generation moves its row's generated_at forward (to the time of the
    write), so the sum changes even when a write made earlier commits after a newer one and
    the newest stays; removing a row changes the count. Activating or retiring a version
    changes the ids' count or sum. Equal fingerprints: the same index and active hosts.
    Every read asks it: one pass over each table, the statement built once.
    """
    return tuple((await conn.execute(_fingerprint_query(conn.dialect.name, model_name))).one())


@functools.lru_cache(maxsize=8)
def _fingerprint_query(dialect: str, model_name: str) -> sa.Select[Any]:
    g, m = forecast_generations.c, ml_models.c
    if dialect == "sqlite":
        total = sa.func.sum(sa.func.julianday(g.generated_at))
    else:
        total = sa.func.sum(sa.extract("epoch", g.generated_at))
    generations = sa.select(
        sa.func.count().label("count"),
        sa.func.max(g.generated_at).label("newest"),
        total.label("total"),
    ).subquery()
    active = (
        sa.select(sa.func.count().label("count"), sa.func.sum(m.id).label("ids"))
        .where(m.name == model_name, m.status == "active")
        .subquery()
    )
    return sa.select(
        generations.c.count,
        generations.c.newest,
        generations.c.total,
        active.c.count,
        active.c.ids,
    ).select_from(generations.join(active, sa.true()))


async def generation_index(
    conn: AsyncConnection, *, host: str | None = None, metric: str | None = None
) -> dict[Key, datetime]:
    """The newest stored generation of each (host, metric): one small indexed read, so that
    a read cache can tell, per request and across processes, which series it holds are stale."""
    g = forecast_generations.c
    query = sa.select(g.host, g.metric, g.generated_at)
    if host is not None:
        query = query.where(g.host == host)
    if metric is not None:
        query = query.where(g.metric == metric)
    return {(str(h), str(m)): utc(t) for h, m, t in await conn.execute(query)}


async def read_generations(
    conn: AsyncConnection, wanted: Mapping[Key, datetime]
) -> list[tuple[StoredForecast, dict[str, Any]]]:
    """Every point of exactly the generations in `wanted`, with their model's parameters.

    Read per host (one index range per host and metric); a generation replaced since
    `wanted` was read is skipped (the next request sees the newer one).
    """
    f, g, m = metric_forecasts.c, forecast_generations.c, ml_models.c
    hosts = sorted({host for host, _ in wanted})
    metrics = sorted({metric for _, metric in wanted})
    out: list[tuple[StoredForecast, dict[str, Any]]] = []
    for i in range(0, len(hosts), 200):
        query = (
            sa.select(
                f.host,
                f.metric,
                f.model_id,
                m.version,
                f.generated_at,
                f.target_timestamp,
                f.yhat,
                f.yhat_lower,
                f.yhat_upper,
                m.parameters,
            )
            .select_from(forecast_generations)
            .join(
                metric_forecasts,
                sa.and_(f.host == g.host, f.metric == g.metric, f.generated_at == g.generated_at),
            )
            .outerjoin(ml_models, m.id == f.model_id)
            .where(g.host.in_(hosts[i : i + 200]), g.metric.in_(metrics))
            .order_by(f.host, f.metric, f.target_timestamp)
        )
        rows = list(await conn.execute(query))
        for key, group in groupby(rows, key=lambda r: (str(r[0]), str(r[1]))):
            series = list(group)
            if wanted.get(key) != utc(series[0][4]):
                continue  # not asked for, or replaced since the index was read
            out.append((_stored(key[0], key[1], series), dict(series[0][9] or {})))
    return out
