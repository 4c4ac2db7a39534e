"""HTTP routes of forecasting: training, refresh, stored forecasts, next hour, alerts, trend."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.forecaster.deps import ForecasterDep, ReadCacheDep
from services.forecaster.forecasting import reads
from shared.clock import utcnow
from shared.schemas.forecast import (
    AlertsQuery,
    AlertsResponse,
    ForecastHostQuery,
    ForecastQuery,
    ForecastResponse,
    NextHourResponse,
    RefreshedHost,
    RefreshResponse,
    TrainForecasterRequest,
    TrainForecasterResponse,
    TrendQuery,
    TrendResponse,
)
from shared.web import ConnDep, MetricPath

router = APIRouter()


@router.post(
    "/train/forecaster",
    response_model=TrainForecasterResponse,
    summary="Fit one Prophet model per metric, activate them and store 24 h of forecasts",
)
async def train(
    forecaster: ForecasterDep, body: TrainForecasterRequest | None = None
) -> TrainForecasterResponse:
    return await forecaster.train(body or TrainForecasterRequest())


@router.post(
    "/forecast/refresh",
    response_model=RefreshResponse,
    summary="Recompute the stored forecasts (and breach incidents) from now on",
)
async def refresh(forecaster: ForecasterDep) -> RefreshResponse:
    started = time.perf_counter()
    outcomes = await forecaster.refresh()
    return RefreshResponse(
        hosts=[RefreshedHost.model_validate(o) for o in outcomes],
        seconds=time.perf_counter() - started,
    )


@router.get(
    "/forecast",
    response_model=ForecastResponse,
    summary="Stored forecasts 1-24 h ahead, of every host or one",
)
async def forecast(
    forecaster: ForecasterDep,
    cache: ReadCacheDep,
    conn: ConnDep,
    query: Annotated[ForecastQuery, Query()],
) -> Response:
    body = await reads.forecast(
        conn, cache, query, step_minutes=forecaster.step_minutes, now=utcnow()
    )
    # Built from the cached generations as JSON (thousands of points): no re-validation.
    return Response(body, media_type="application/json")


@router.get(
    "/forecast/next-hour",
    response_model=NextHourResponse,
    summary="Each metric of every host (or one) now and an hour from now",
)
async def next_hour(
    forecaster: ForecasterDep,
    cache: ReadCacheDep,
    conn: ConnDep,
    query: Annotated[ForecastHostQuery, Query()],
) -> Response:
    body = await reads.next_hour(
        conn, cache, host=query.host, step_minutes=forecaster.step_minutes, now=utcnow()
    )
    return Response(body, media_type="application/json")


@router.get(
    "/forecast/alerts",
    response_model=AlertsResponse,
    summary="Every predicted threshold breach of every host (or one) in the horizon",
)
async def alerts(
    cache: ReadCacheDep, conn: ConnDep, query: Annotated[AlertsQuery, Query()]
) -> Response:
    body = await reads.alerts(conn, cache, query, now=utcnow())
    return Response(body, media_type="application/json")


@router.get(
    "/forecast/trend/{metric}",
    response_model=TrendResponse,
    summary="Trend slope, direction and change points of a metric",
)
async def trend(
    conn: ConnDep,
    metric: MetricPath,
    query: Annotated[TrendQuery, Query()],
) -> TrendResponse:
    return await reads.trend(conn, host=query.host, metric=metric)
