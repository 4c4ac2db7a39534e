"""The read side: answers built from stored forecasts and model rows, never from Prophet."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection

from services.forecaster import repository as repo
from services.forecaster.service import ALERT_HORIZON_HOURS, find_breach, unknown_metric
from shared.catalogue import METRIC_NAMES
from shared.db import utc
from shared.errors import Conflict
from shared.schemas.forecast import (
    AlertsResponse,
    BreachAlert,
    ChangePointOut,
    ForecastPoint,
    ForecastResponse,
    MetricForecast,
    NextHourItem,
    NextHourResponse,
    TrendResponse,
)

NEXT_HOUR_FLAT_TOLERANCE = 0.02  # of the metric's scale, as model.next_hour


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
        models = [m for m in models if m["metric"] == metric]
    return _not_written(host) if models else _no_model(host, metric)


def _series(rows: list[tuple[Any, ...]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    return [(str(metric), list(group)) for metric, group in groupby(rows, key=lambda r: r[0])]


async def forecast(
    conn: AsyncConnection,
    *,
    host: str | None,
    metric: str | None,
    hours_ahead: int,
    step_minutes: float,
    now: datetime,
) -> ForecastResponse:
    check_metric(metric)
    host = await resolve_host(conn, host)
    rows = await repo.read_forecasts(
        conn, host=host, metric=metric, after=now, until=now + timedelta(hours=hours_ahead)
    )
    if not rows:
        raise await _explain_empty(conn, host, metric)
    forecasts = [
        MetricForecast(
            metric=name,
            model_id=group[0][1],
            model_version=group[0][2],
            generated_at=utc(group[0][3]),
            points=[
                ForecastPoint(timestamp=utc(r[4]), yhat=r[5], yhat_lower=r[6], yhat_upper=r[7])
                for r in group
            ],
        )
        for name, group in _series(rows)
    ]
    return ForecastResponse(
        host=host, hours_ahead=hours_ahead, step_minutes=step_minutes, forecasts=forecasts
    )


def _direction(change: float, tolerance: float) -> str:
    if change > tolerance:
        return "rising"
    if change < -tolerance:
        return "falling"
    return "flat"


async def next_hour(
    conn: AsyncConnection, *, host: str | None, step_minutes: float, now: datetime
) -> NextHourResponse:
    host = await resolve_host(conn, host)
    models = {m["metric"]: m for m in await repo.active_models(conn, host=host)}
    if not models:
        raise _no_model(host)
    at = now + timedelta(hours=1)
    rows = await repo.read_forecasts(
        conn, host=host, after=now, until=at + timedelta(minutes=2 * step_minutes)
    )
    if not rows:
        raise _not_written(host)
    sample = await repo.latest_sample(conn, host) or {}
    items: list[NextHourItem] = []
    newest: datetime | None = None
    target = at.timestamp()
    for name, group in _series(rows):
        seconds = np.array([utc(r[4]).timestamp() for r in group])
        yhat, lower, upper = (
            float(np.interp(target, seconds, np.array([r[i] for r in group], dtype=float)))
            for i in (5, 6, 7)
        )
        generated = utc(group[0][3])
        newest = generated if newest is None or generated > newest else newest
        current = sample.get(name)
        change = None if current is None else yhat - float(current)
        scale = float((models.get(name) or {}).get("parameters", {}).get("y_scale") or 0.0)
        scale = scale or max(abs(yhat), abs(float(current or 0.0)), 1e-9)
        direction = (
            "flat" if change is None else _direction(change, NEXT_HOUR_FLAT_TOLERANCE * scale)
        )
        items.append(
            NextHourItem(
                metric=name,
                current_value=None if current is None else float(current),
                current_at=sample.get("timestamp"),
                at=at,
                yhat=yhat,
                yhat_lower=lower,
                yhat_upper=upper,
                change=change,
                direction=direction,
            )
        )
    order = {name: i for i, name in enumerate(METRIC_NAMES)}
    items.sort(key=lambda item: order.get(item.metric, len(order)))
    return NextHourResponse(host=host, generated_at=newest, metrics=items)


async def alerts(
    conn: AsyncConnection,
    *,
    host: str | None,
    hours_ahead: int,
    thresholds: Mapping[str, float],
    now: datetime,
) -> AlertsResponse:
    host = await resolve_host(conn, host)
    models = {m["metric"]: m for m in await repo.active_models(conn, host=host)}
    if not models:
        raise _no_model(host)
    rows = await repo.read_forecasts(
        conn, host=host, after=now, until=now + timedelta(hours=hours_ahead)
    )
    found: list[BreachAlert] = []
    for name, group in _series(rows):
        if name not in thresholds:
            continue
        width = float((models.get(name) or {}).get("parameters", {}).get("interval_width") or 0.8)
        breach = find_breach(
            name,
            [utc(r[4]) for r in group],
            np.array([r[5] for r in group], dtype=float),
            np.array([r[7] for r in group], dtype=float),
            threshold=thresholds[name],
            interval_width=width,
            now=now,
        )
        if breach is None:
            continue
        found.append(
            BreachAlert(
                metric=name,
                threshold=breach.threshold,
                yhat_crossing_at=breach.yhat_crossing_at,
                upper_crossing_at=breach.upper_crossing_at,
                at=breach.at,
                predicted_value=breach.predicted_value,
                predicted_upper=breach.predicted_upper,
                probability=breach.probability,
                peak_probability=breach.peak_probability,
                severity=breach.severity,
                model_id=group[0][1],
                generated_at=utc(group[0][3]),
            )
        )
    found.sort(key=lambda alert: alert.at)
    return AlertsResponse(
        host=host,
        hours_ahead=hours_ahead,
        thresholds=dict(thresholds),
        alerts=found,
        count=len(found),
    )


async def trend(conn: AsyncConnection, *, host: str | None, metric: str) -> TrendResponse:
    check_metric(metric)
    host = await resolve_host(conn, host)
    found = [m for m in await repo.active_models(conn, host=host) if m["metric"] == metric]
    if not found:
        raise _no_model(host, metric)
    row = found[0]
    data = (row.get("metrics") or {}).get("trend")
    if not data:
        raise Conflict(f"model {row['id']} has no stored trend; retrain the forecaster")
    return TrendResponse(
        host=host,
        metric=metric,
        model_id=row["id"],
        model_version=row["version"],
        window_start=data["window_start"],
        window_end=data["window_end"],
        slope_per_hour=data["slope_per_hour"],
        slope_per_day=data["slope_per_day"],
        direction=data["direction"],
        change_points=[ChangePointOut.model_validate(p) for p in data["change_points"]],
    )


__all__ = ["ALERT_HORIZON_HOURS", "alerts", "forecast", "next_hour", "resolve_host", "trend"]
