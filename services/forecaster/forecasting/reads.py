"""The read side: answers built from stored forecasts and model rows, never from Prophet.

Usage: `await reads.forecast(conn, query, step_minutes=15.0, now=utcnow())` in an endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.forecaster.forecasting import repository as repo
from services.forecaster.forecasting.breach import find_breaches, interval_width
from services.forecaster.forecasting.next_hour import next_hour as next_hour_of
from shared.catalogue import METRIC_NAMES
from shared.errors import Conflict, NotFound
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
from shared.schemas.models import ModelSummary


def unknown_metric(metric: str) -> NotFound:
    return NotFound(f"unknown metric {metric!r}; known metrics: {', '.join(METRIC_NAMES)}")


def _no_model(host: str, metric: str | None = None) -> Conflict:
    what = f"host {host!r}" + (f", metric {metric!r}" if metric else "")
    body = f'{{"host": "{host}"}}'
    return Conflict(
        f"no forecaster model for {what} yet; train first: "
        f"POST /api/ml/train/forecaster with {body}"
    )


def _not_written(host: str) -> Conflict:
    return Conflict(
        f"no forecasts stored for host {host!r} in this horizon yet: they are written after "
        "training and every ML_FORECAST_REFRESH_MINUTES (POST /api/ml/forecast/refresh now)"
    )


def check_metric(metric: str | None) -> None:
    if metric is not None and metric not in METRIC_NAMES:
        raise unknown_metric(metric)


async def resolve_host(conn: AsyncConnection, host: str | None) -> str:
    """The host asked for, else the one whose forecaster models were trained last."""
    if host is not None:
        return host
    found = await repo.latest_trained_host(conn)
    if found is None:
        raise Conflict(
            "no forecaster model yet; train first: POST /api/ml/train/forecaster with {}"
        )
    return found


async def _explain_empty(conn: AsyncConnection, host: str, metric: str | None = None) -> Conflict:
    models = await repo.active_models(conn, host=host)
    if metric is not None:
        models = [m for m in models if m.metric == metric]
    return _not_written(host) if models else _no_model(host, metric)


async def _active_by_metric(conn: AsyncConnection, host: str) -> dict[str, ModelSummary]:
    models = {str(m.metric): m for m in await repo.active_models(conn, host=host)}
    if not models:
        raise _no_model(host)
    return models


async def forecast(
    conn: AsyncConnection, query: ForecastQuery, *, step_minutes: float, now: datetime
) -> ForecastResponse:
    check_metric(query.metric)
    host = await resolve_host(conn, query.host)
    stored = await repo.read_forecasts(
        conn,
        host=host,
        metric=query.metric,
        after=now,
        until=now + timedelta(hours=query.hours_ahead),
    )
    if not stored:
        raise await _explain_empty(conn, host, query.metric)
    forecasts = [
        MetricForecast(
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
    return ForecastResponse(
        host=host, hours_ahead=query.hours_ahead, step_minutes=step_minutes, forecasts=forecasts
    )


async def next_hour(
    conn: AsyncConnection, *, host: str | None, step_minutes: float, now: datetime
) -> NextHourResponse:
    host = await resolve_host(conn, host)
    models = await _active_by_metric(conn, host)
    at = now + timedelta(hours=1)
    stored = await repo.read_forecasts(
        conn, host=host, after=now, until=at + timedelta(minutes=2 * step_minutes)
    )
    if not stored:
        raise _not_written(host)
    sample = await repo.latest_sample(conn, host) or {}
    items: list[NextHourItem] = []
    for series in stored:
        current = sample.get(series.metric)
        model = models.get(series.metric)
        found = next_hour_of(
            series.prediction(),
            at=at,
            current_value=None if current is None else float(current),
            scale=float((model.parameters.get("y_scale") if model else None) or 0.0),
        )
        items.append(
            NextHourItem(
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
    order = {name: i for i, name in enumerate(METRIC_NAMES)}
    items.sort(key=lambda item: order.get(item.metric, len(order)))
    newest = max(series.generated_at for series in stored)
    return NextHourResponse(host=host, generated_at=newest, metrics=items)


async def alerts(
    conn: AsyncConnection, query: AlertsQuery, *, thresholds: Mapping[str, float], now: datetime
) -> AlertsResponse:
    host = await resolve_host(conn, query.host)
    models = await _active_by_metric(conn, host)
    stored = {
        series.metric: series
        for series in await repo.read_forecasts(
            conn,
            host=host,
            after=now,
            until=now + timedelta(hours=query.hours_ahead),
            metrics=thresholds.keys(),
        )
    }
    breaches = find_breaches(
        (
            (
                name,
                series.prediction(),
                interval_width(models[name].parameters if name in models else {}),
            )
            for name, series in stored.items()
        ),
        limits=thresholds,
        now=now,
    )
    found = [
        BreachAlert(
            **asdict(breach),
            model_id=stored[breach.metric].model_id,
            generated_at=stored[breach.metric].generated_at,
        )
        for breach in breaches
    ]
    return AlertsResponse(
        host=host,
        hours_ahead=query.hours_ahead,
        thresholds=dict(thresholds),
        alerts=found,
        count=len(found),
    )


async def trend(conn: AsyncConnection, *, host: str | None, metric: str) -> TrendResponse:
    check_metric(metric)
    host = await resolve_host(conn, host)
    found = [m for m in await repo.active_models(conn, host=host) if m.metric == metric]
    if not found:
        raise _no_model(host, metric)
    model = found[0]
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
