"""HTTP routes of the forecaster: training, stored forecasts, alerts, trend, health."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from services.forecaster import repository as repo
from services.forecaster import views
from services.forecaster.service import Forecaster
from shared.db import utcnow
from shared.schemas.forecast import (
    AlertsResponse,
    ForecasterHealth,
    ForecastResponse,
    NextHourResponse,
    RefreshedHost,
    RefreshResponse,
    TrainForecasterRequest,
    TrainForecasterResponse,
    TrendResponse,
)
from shared.web import ConnDep, EngineDep

router = APIRouter()

HostQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        description="Host; default: the host whose forecaster was trained last.",
    ),
]
HoursQuery = Annotated[int, Query(ge=1, le=24, description="Hours ahead, 1 to 24.")]


def forecaster(request: Request) -> Forecaster:
    service: Forecaster = request.app.state.forecaster
    return service


@router.get("/health", response_model=ForecasterHealth, summary="Forecaster health")
async def health(request: Request, engine: EngineDep) -> ForecasterHealth:
    service = forecaster(request)
    state = dict(
        service="forecaster",
        fit_running=service.fit_running,
        fit_started_at=service.fit_started_at if service.fit_running else None,
        last_refresh_at=service.last_refresh_at,
        refresh_minutes=service.settings.forecast_refresh_minutes,
    )
    try:
        async with engine.connect() as conn:
            active = await repo.count_active(conn)
    except Exception:  # noqa: BLE001 - reported, not raised
        return ForecasterHealth(status="degraded", database=False, **state)
    return ForecasterHealth(status="healthy", database=True, active_models=active, **state)


@router.post(
    "/train/forecaster",
    response_model=TrainForecasterResponse,
    summary="Fit one Prophet model per metric, activate them and store 24 h of forecasts",
)
async def train(
    request: Request, body: TrainForecasterRequest | None = None
) -> TrainForecasterResponse:
    return await forecaster(request).train(body or TrainForecasterRequest())


@router.post(
    "/forecast/refresh",
    response_model=RefreshResponse,
    summary="Recompute the stored forecasts (and breach incidents) from now on",
)
async def refresh(request: Request) -> RefreshResponse:
    started = time.perf_counter()
    outcomes = await forecaster(request).refresh()
    return RefreshResponse(
        hosts=[RefreshedHost.model_validate(o) for o in outcomes],
        seconds=time.perf_counter() - started,
    )


@router.get("/forecast", response_model=ForecastResponse, summary="Stored forecast, 1-24 h ahead")
async def forecast(
    request: Request,
    conn: ConnDep,
    hours_ahead: HoursQuery = 6,
    metric: Annotated[
        str | None, Query(description="One metric; default: every forecast metric.")
    ] = None,
    host: HostQuery = None,
) -> ForecastResponse:
    service = forecaster(request)
    return await views.forecast(
        conn,
        host=host,
        metric=metric,
        hours_ahead=hours_ahead,
        step_minutes=service.step.total_seconds() / 60.0,
        now=utcnow(),
    )


@router.get(
    "/forecast/next-hour",
    response_model=NextHourResponse,
    summary="Each metric now and an hour from now",
)
async def next_hour(request: Request, conn: ConnDep, host: HostQuery = None) -> NextHourResponse:
    step = forecaster(request).step.total_seconds() / 60.0
    return await views.next_hour(conn, host=host, step_minutes=step, now=utcnow())


@router.get(
    "/forecast/alerts",
    response_model=AlertsResponse,
    summary="Every predicted threshold breach in the horizon",
)
async def alerts(
    request: Request, conn: ConnDep, hours_ahead: HoursQuery = 24, host: HostQuery = None
) -> AlertsResponse:
    return await views.alerts(
        conn,
        host=host,
        hours_ahead=hours_ahead,
        thresholds=forecaster(request).thresholds,
        now=utcnow(),
    )


@router.get(
    "/forecast/trend/{metric}",
    response_model=TrendResponse,
    summary="Trend slope, direction and change points of a metric",
)
async def trend(
    conn: ConnDep,
    metric: Annotated[str, Path(max_length=100, description="A metric of the catalogue.")],
    host: HostQuery = None,
) -> TrendResponse:
    return await views.trend(conn, host=host, metric=metric)
