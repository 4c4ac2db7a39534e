"""The read side: answers built from stored forecasts and model rows, never from Prophet.

Every read is fleet-wide without `host` (each entry names its host) and one host's with it.

The stored generations are served from a ReadCache (read_cache.py) checked against the store on
every request; the two big answers are built as JSON bytes, not pydantic objects.

Usage: `await reads.forecast(conn, cache, query, step_minutes=15.0, now=utcnow())` in an endpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.forecaster.forecasting import forecast_store as store
from services.forecaster.forecasting import repository as repo
from services.forecaster.forecasting.breach import find_breach
from services.forecaster.forecasting.read_cache import (
    CachedSeries,
    NextHourAnswer,
    ReadCache,
    answered,
    forecast_body,
    windows,
)
from shared.catalogue import METRIC_NAMES
from shared.errors import Conflict, NotFound, Unprocessable
from shared.schemas.forecast import (
    AlertsQuery,
    AlertsResponse,
    BreachAlert,
    ChangePointOut,
    ForecastQuery,
    TrendResponse,
)


def unknown_metric(metric: str) -> NotFound:
    return NotFound(f"unknown metric {metric!r}; known metrics: {', '.join(METRIC_NAMES)}")


def _no_model(host: str | None, metric: str | None = None) -> Conflict:
    what = ("any host" if host is None else f"host {host!r}") + (
        f", metric {metric!r}" if metric else ""
    )
    body = "{}" if host is None else f'{{"host": "{host}"}}'
    return Conflict(
        f"no forecaster model for {what} yet; train first: "
        f"POST /api/ml/train/forecaster with {body}"
    )


NO_MODEL_YET = Conflict(
    "no forecaster model yet; train first: POST /api/ml/train/forecaster with {} "
    "(or wait for the scheduled training, every ML_FORECAST_RETRAIN_HOURS)"
)


def _not_written(host: str | None) -> Conflict:
    which = "any host" if host is None else f"host {host!r}"
    return Conflict(
        f"no forecasts stored for {which} in this horizon yet: they are written after "
        "training and every ML_FORECAST_REFRESH_MINUTES (POST /api/ml/forecast/refresh now)"
    )


def check_metric(metric: str | None) -> None:
    if metric is not None and metric not in METRIC_NAMES:
        raise unknown_metric(metric)


def _unknown_host(host: str, known: list[str]) -> NotFound:
    return NotFound(
        f"host {host!r} (query parameter host) has no forecaster model; hosts with one: "
        + (", ".join(known) or "none yet")
    )


async def _models_by_host(
    conn: AsyncConnection, host: str | None, *, parameters: bool = True
) -> dict[str, dict[str, dict[str, Any]]]:
    """Active models' parameters by host and metric: of `host` (404 naming the hosts if it has
    none), else of every host (409 when nothing was trained yet)."""
    by_host = await repo.active_parameters(conn, host=host, parameters=parameters)
    if by_host:
        return by_host
    if host is None:
        raise NO_MODEL_YET
    raise _unknown_host(host, sorted(await repo.active_parameters(conn, parameters=False)))


async def _series(
    conn: AsyncConnection, cache: ReadCache, *, host: str | None, metric: str | None = None
) -> list[CachedSeries]:
    """The newest generation of each (host, metric) in scope, from the cache (see `_current`)."""
    await _current(conn, cache, host=host)
    return cache.scoped(host, metric)


async def _current(conn: AsyncConnection, cache: ReadCache, *, host: str | None) -> None:
    """The cache made the store's newest; 404 for a host without an active model (naming the
    hosts that have one), 409 when none has.

    Every request reads the store's fingerprint (one row): when a generation was written or
    a version activated since, by this process or another, the index and the hosts are read
    and the new generations loaded before answering; a stale answer is never served.
    """
    fingerprint = await store.fingerprint(conn, repo.MODEL_NAME)
    if fingerprint != cache.fingerprint:
        index = await store.generation_index(conn)
        stale = cache.stale(index)
        if stale:
            for stored, parameters in await store.read_generations(conn, stale):
                cache.put(stored, parameters)
        cache.settle(index, await repo.active_hosts(conn), fingerprint)
    if host is None and not cache.hosts:
        raise NO_MODEL_YET
    if host is not None and host not in cache.hosts:
        raise _unknown_host(host, cache.hosts)


def _searched(cache: ReadCache, host: str | None) -> list[str]:
    return list(cache.hosts) if host is None else [host]


async def forecast(
    conn: AsyncConnection,
    cache: ReadCache,
    query: ForecastQuery,
    *,
    step_minutes: float,
    now: datetime,
) -> bytes:
    """A ForecastResponse's JSON."""
    check_metric(query.metric)
    series = await _series(conn, cache, host=query.host, metric=query.metric)
    body = forecast_body(
        windows(series, now, now + timedelta(hours=query.hours_ahead)),
        host=query.host,
        hours_ahead=query.hours_ahead,
        step_minutes=step_minutes,
    )
    if body is None:
        if query.metric is not None:
            models = await _models_by_host(conn, query.host, parameters=False)
            if not any(query.metric in m for m in models.values()):
                raise _no_model(query.host, query.metric)
        raise _not_written(query.host)
    return body


async def next_hour(
    conn: AsyncConnection,
    cache: ReadCache,
    *,
    host: str | None,
    step_minutes: float,
    now: datetime,
) -> bytes:
    """A NextHourResponse's JSON, for the minute of `now`: `at` is that minute plus an hour.

    Answers are kept per plan (the cache's series of `host`, or of every host) with the
    minute and the newest samples they were built from: a read in the same minute whose
    samples are the same gets the same bytes; a new sample or a new generation (the
    fingerprint) makes a new answer.
    """
    await _current(conn, cache, host=host)
    plan = cache.plan(host)
    minute = now.replace(second=0, microsecond=0)
    at = minute + timedelta(hours=1)
    last = plan.last
    if last is not None and last.minute == minute:
        located, hosts = last.located, last.hosts
    else:
        located = plan.located(minute, at, at + timedelta(minutes=2 * step_minutes))
        hosts = plan.hosts(located[0])
    if located[-1] is None:
        raise _not_written(host)
    samples = await repo.latest_sample_rows(conn, hosts)
    if last is not None and last.minute == minute and last.samples == samples:
        return last.body
    body = plan.body(located, at=at, host=host, samples=repo.samples_by_host(samples))
    assert body is not None  # located is not empty
    plan.last = NextHourAnswer(
        minute=minute, located=located, hosts=hosts, samples=samples, body=body
    )
    return body


async def alerts(
    conn: AsyncConnection, cache: ReadCache, query: AlertsQuery, *, now: datetime
) -> bytes:
    """An AlertsResponse's JSON: predicted breaches of the cache's thresholds (the service's)
    in the horizon.

    Only a series with a point at or above its threshold can breach it; the cache lists
    those once per settle, so a scope with none (the usual case) is answered by bytes
    made once per settle, host and horizon.
    """
    await _current(conn, cache, host=query.host)
    hosts = _searched(cache, query.host)
    candidates = [e for e in cache.breachable if query.host is None or e.host == query.host]
    key = (query.host, query.hours_ahead)
    if not candidates and key in cache.quiet:
        return cache.quiet[key]
    until = now + timedelta(hours=query.hours_ahead)
    found: list[BreachAlert] = []
    for entry, i, j in windows(candidates, now, until):
        limit = cache.thresholds.get(entry.metric)
        if limit is None or not entry.reaches(i, j):
            continue
        breach = find_breach(
            entry.metric,
            entry.times[i:j],
            entry.yhat[i:j],
            entry.upper[i:j],
            threshold=limit,
            interval_width=entry.width,
            now=now,
        )
        if breach is not None:
            found.append(
                BreachAlert(
                    host=entry.host,
                    **asdict(breach),
                    model_id=entry.model_id,
                    generated_at=entry.generated_at,
                )
            )
    found.sort(key=lambda alert: (alert.at, alert.host, alert.metric))
    body = AlertsResponse(
        host=answered(query.host, hosts),
        hosts=hosts,
        hours_ahead=query.hours_ahead,
        thresholds=dict(cache.thresholds),
        alerts=found,
        count=len(found),
    ).model_dump_json()
    encoded = body.encode()
    if not candidates:
        cache.quiet[key] = encoded
    return encoded


async def trend(conn: AsyncConnection, *, host: str | None, metric: str) -> TrendResponse:
    """One host's trend: `host`, else the only host with a model of the metric (422 naming
    `host` and the hosts when there are several)."""
    check_metric(metric)
    by_host = await _models_by_host(conn, host, parameters=False)
    hosts = sorted(name for name, models in by_host.items() if metric in models)
    if not hosts:
        raise _no_model(host, metric)
    if len(hosts) > 1:
        raise Unprocessable(
            [
                {
                    "field": "query.host",
                    "msg": f"several hosts have a {metric} forecaster, name one: "
                    + ", ".join(hosts),
                }
            ]
        )
    host = hosts[0]
    [model] = [m for m in await repo.active_models(conn, host=host) if m.metric == metric]
    data = model.metrics.get("trend")
    if not data:
        raise Conflict(f"model {model.id} has no stored trend; retrain the forecaster")
    return TrendResponse(
        host=host,
        metric=metric,
        model_id=model.id,
        model_version=model.version,
        window_start=data["window_start"],
        window_end=data["window_end"],
        slope_per_hour=data["slope_per_hour"],
        slope_per_day=data["slope_per_day"],
        direction=data["direction"],
        change_points=[ChangePointOut.model_validate(p) for p in data["change_points"]],
    )
