"""The read side: answers built from stored forecasts and model rows, never from Prophet.

Every read is fleet-wide without `host` (each entry names its host) and one host's with it.

Usage: `await reads.forecast(conn, query, step_minutes=15.0, now=utcnow())` in an endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.forecaster.forecasting import forecast_store as store
from services.forecaster.forecasting import repository as repo
from services.forecaster.forecasting.breach import find_breaches, interval_width
from services.forecaster.forecasting.next_hour import next_hour as next_hour_of
from shared.catalogue import METRIC_NAMES
from shared.errors import Conflict, NotFound, Unprocessable
from shared.schemas.forecast import (
    AlertsQuery,
    AlertsResponse,
    BreachAlert,
    ChangePointOut,
    ForecastPoint,
    ForecastQuery,
    ForecastResponse,
    MetricForecast,
    NextHourItem,
    NextHourResponse,
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


def _answered(host: str | None, hosts: list[str]) -> str | None:
    """The response's `host`: the one asked for, or the only one answered; else None."""
    if host is not None:
        return host
    return hosts[0] if len(hosts) == 1 else None


async def forecast(
    conn: AsyncConnection, query: ForecastQuery, *, step_minutes: float, now: datetime
) -> ForecastResponse:
    check_metric(query.metric)
    models = await _models_by_host(conn, query.host, parameters=False)
    stored = await store.read_forecasts(
        conn,
        host=query.host,
        metric=query.metric,
        after=now,
        until=now + timedelta(hours=query.hours_ahead),
    )
    if not stored:
        if query.metric is not None and not any(query.metric in m for m in models.values()):
            raise _no_model(query.host, query.metric)
        raise _not_written(query.host)
    forecasts = [
        MetricForecast(
            host=series.host,
            metric=series.metric,
            model_id=series.model_id,
            model_version=series.model_version,
            generated_at=series.generated_at,
            points=[
                ForecastPoint(timestamp=t, yhat=y, yhat_lower=lo, yhat_upper=hi)
                for t, y, lo, hi in zip(
                    series.times, series.yhat, series.lower, series.upper, strict=True
                )
            ],
        )
        for series in stored
    ]
    hosts = list(dict.fromkeys(series.host for series in stored))
    return ForecastResponse(
        host=_answered(query.host, hosts),
        hosts=hosts,
        hours_ahead=query.hours_ahead,
        step_minutes=step_minutes,
        forecasts=forecasts,
    )


async def next_hour(
    conn: AsyncConnection, *, host: str | None, step_minutes: float, now: datetime
) -> NextHourResponse:
    models = await _models_by_host(conn, host)
    at = now + timedelta(hours=1)
    stored = await store.read_forecasts(
        conn, host=host, after=now, until=at + timedelta(minutes=2 * step_minutes)
    )
    if not stored:
        raise _not_written(host)
    hosts = list(dict.fromkeys(series.host for series in stored))
    samples = await repo.latest_samples(conn, hosts)
    order = {name: i for i, name in enumerate(METRIC_NAMES)}
    items: list[NextHourItem] = []
    for series in stored:
        sample = samples.get(series.host) or {}
        current = sample.get(series.metric)
        params = models.get(series.host, {}).get(series.metric, {})
        found = next_hour_of(
            series.prediction(),
            at=at,
            current_value=None if current is None else float(current),
            scale=float(params.get("y_scale") or 0.0),
        )
        items.append(
            NextHourItem(
                host=series.host,
                metric=series.metric,
                current_value=None if current is None else float(current),
                current_at=sample.get("timestamp"),
                at=found.at,
                yhat=found.yhat,
                yhat_lower=found.yhat_lower,
                yhat_upper=found.yhat_upper,
                change=found.change,
                direction=found.direction,
            )
        )
    items.sort(key=lambda item: (item.host, order.get(item.metric, len(order))))
    newest = max(series.generated_at for series in stored)
    return NextHourResponse(
        host=_answered(host, hosts), hosts=hosts, generated_at=newest, metrics=items
    )


async def alerts(
    conn: AsyncConnection, query: AlertsQuery, *, thresholds: Mapping[str, float], now: datetime
) -> AlertsResponse:
    models = await _models_by_host(conn, query.host)
    until = now + timedelta(hours=query.hours_ahead)
    # Only series reaching their threshold somewhere can breach it: read those whole.
    reaching = await store.reaching(
        conn, host=query.host, after=now, until=until, limits=thresholds
    )
    stored = await store.read_forecasts(conn, after=now, until=until, pairs=reaching)
    found: list[BreachAlert] = []
    for host, group in groupby(stored, key=lambda series: series.host):
        series_of = {series.metric: series for series in group}
        params = models.get(host, {})
        breaches = find_breaches(
            (
                (
                    name,
                    series.prediction(),
                    # The width the model's interval was made for (calibrated by the model).
                    interval_width(params.get(name, {})),
                )
                for name, series in series_of.items()
            ),
            limits=thresholds,
            now=now,
        )
        found.extend(
            BreachAlert(
                host=host,
                **asdict(breach),
                model_id=series_of[breach.metric].model_id,
                generated_at=series_of[breach.metric].generated_at,
            )
            for breach in breaches
        )
    found.sort(key=lambda alert: (alert.at, alert.host, alert.metric))
    hosts = sorted(models) if query.host is None else [query.host]
    return AlertsResponse(
        host=_answered(query.host, hosts),
        hosts=hosts,
        hours_ahead=query.hours_ahead,
        thresholds=dict(thresholds),
        alerts=found,
        count=len(found),
    )


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
