"""Gateway routes of the forecaster: /api/ml/forecast*, /api/ml/train/forecaster."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from services.api.proxy import ServiceClients
from shared.schemas.common import ErrorResponse
from shared.schemas.forecast import (
    AlertsResponse,
    ForecastResponse,
    NextHourResponse,
    RefreshResponse,
    TrainForecasterRequest,
    TrainForecasterResponse,
    TrendResponse,
)

router = APIRouter(prefix="/api/ml", tags=["forecasting"])

# Fitting 14 metrics on 30 days takes seconds; a year of history or a busy machine longer.
TRAIN_TIMEOUT_SECONDS = 600.0

_422 = {"model": ErrorResponse, "description": "Invalid input: each field and the reason."}
_503 = {"model": ErrorResponse, "description": "The forecaster service is down."}
_404_METRIC = {"model": ErrorResponse, "description": "Unknown metric; the detail lists the known."}
_409_MODEL = {
    "model": ErrorResponse,
    "description": "No forecaster model (or no stored forecast) yet; the detail says to train.",
}
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    404: _404_METRIC,
    409: _409_MODEL,
    422: _422,
    503: _503,
}

HostQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        description="Host; default: the host whose forecaster was trained last.",
    ),
]


def clients(request: Request) -> ServiceClients:
    c: ServiceClients = request.app.state.clients
    return c


@router.post(
    "/train/forecaster",
    response_model=TrainForecasterResponse,
    responses={
        404: {"model": ErrorResponse, "description": "The host has no samples."},
        409: {
            "model": ErrorResponse,
            "description": "A training run is already in progress, or there is no data to fit.",
        },
        422: _422,
        503: _503,
    },
    summary="Fit one Prophet model per metric (waits for the result, seconds for 30 days)",
)
async def train_forecaster(
    request: Request, body: TrainForecasterRequest | None = None
) -> Response:
    return await clients(request).forward(
        "forecaster",
        "/train/forecaster",
        request,
        timeout=max(clients(request).settings.http_timeout, TRAIN_TIMEOUT_SECONDS),
    )


@router.get(
    "/forecast",
    response_model=ForecastResponse,
    responses=READ_ERRORS,
    summary="Forecast 1-24 hours ahead with bounds, from the stored forecasts",
)
async def forecast(
    request: Request,
    hours_ahead: Annotated[int, Query(ge=1, le=24, description="Hours ahead, 1 to 24.")] = 6,
    metric: Annotated[
        str | None, Query(description="One metric; default: every forecast metric.")
    ] = None,
    host: HostQuery = None,
) -> Response:
    return await clients(request).forward("forecaster", "/forecast", request)


@router.get(
    "/forecast/next-hour",
    response_model=NextHourResponse,
    responses={409: _409_MODEL, 422: _422, 503: _503},
    summary="Every metric: current value, forecast an hour ahead, bounds, direction",
)
async def forecast_next_hour(request: Request, host: HostQuery = None) -> Response:
    return await clients(request).forward("forecaster", "/forecast/next-hour", request)


@router.get(
    "/forecast/alerts",
    response_model=AlertsResponse,
    responses={409: _409_MODEL, 422: _422, 503: _503},
    summary="Every predicted threshold breach in the horizon",
)
async def forecast_alerts(
    request: Request,
    hours_ahead: Annotated[int, Query(ge=1, le=24, description="Horizon, 1 to 24 hours.")] = 24,
    host: HostQuery = None,
) -> Response:
    return await clients(request).forward("forecaster", "/forecast/alerts", request)


@router.get(
    "/forecast/trend/{metric}",
    response_model=TrendResponse,
    responses=READ_ERRORS,
    summary="Trend slope per hour and per day, direction and change points",
)
async def forecast_trend(
    request: Request,
    metric: Annotated[str, Path(max_length=100, description="A metric of the catalogue.")],
    host: HostQuery = None,
) -> Response:
    return await clients(request).forward(
        "forecaster", f"/forecast/trend/{quote(metric, safe='')}", request
    )


@router.post(
    "/forecast/refresh",
    response_model=RefreshResponse,
    responses={503: _503},
    summary="Recompute the stored forecasts and breach incidents now (normally scheduled)",
)
async def forecast_refresh(request: Request) -> Response:
    return await clients(request).forward(
        "forecaster",
        "/forecast/refresh",
        request,
        timeout=max(clients(request).settings.http_timeout, 120.0),
    )
