"""Forecasting through the gateway, with the services on loopback ports."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import Settings
from tests.api.test_gateway import stack

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:prophet")

CPU = "cpu_usage_percent"


async def test_forecast_through_the_gateway(settings: Settings, engine: AsyncEngine) -> None:
    async with stack(settings, engine) as s:
        generated = await s.gateway.post("/api/ml/train/generate-synthetic", json={"days": 8})
        untrained = await s.gateway.get("/api/ml/forecast", params={"metric": CPU})
        trained = await s.gateway.post(
            "/api/ml/train/forecaster", json={"metrics": [CPU, "response_time_p95"]}
        )
        forecast = await s.gateway.get("/api/ml/forecast", params={"hours_ahead": 6, "metric": CPU})
        too_far = await s.gateway.get("/api/ml/forecast", params={"hours_ahead": 25})
        unknown = await s.gateway.get("/api/ml/forecast", params={"metric": "nope"})
        alerts = await s.gateway.get("/api/ml/forecast/alerts")
        next_hour = await s.gateway.get("/api/ml/forecast/next-hour")
        trend = await s.gateway.get(f"/api/ml/forecast/trend/{CPU}")
        models = await s.gateway.get("/api/ml/models", params={"name": "forecaster"})
        schema = await s.gateway.get("/api/openapi.json")

    assert generated.status_code == 200
    assert untrained.status_code == 409
    assert trained.status_code == 200, trained.text
    assert trained.json()["host"] == "synthetic"
    assert forecast.status_code == 200
    [series] = forecast.json()["forecasts"]
    assert len(series["points"]) == 24
    assert (
        too_far.status_code == 422 and too_far.json()["detail"][0]["field"] == "query.hours_ahead"
    )
    assert unknown.status_code == 404 and CPU in unknown.json()["detail"]
    assert alerts.status_code == 200 and alerts.json()["host"] == "synthetic"
    assert [m["metric"] for m in next_hour.json()["metrics"]] == [CPU, "response_time_p95"]
    assert trend.json()["metric"] == CPU
    assert models.json()["count"] == 2
    paths = schema.json()["paths"]
    for path in (
        "/api/ml/train/forecaster",
        "/api/ml/forecast",
        "/api/ml/forecast/next-hour",
        "/api/ml/forecast/alerts",
        "/api/ml/forecast/trend/{metric}",
        "/api/ml/forecast/refresh",
    ):
        assert path in paths


async def test_forecaster_down_is_a_503_naming_it(settings: Settings, engine: AsyncEngine) -> None:
    async with stack(settings, engine, without="forecaster") as s:
        forecast = await s.gateway.get("/api/ml/forecast")
        train = await s.gateway.post("/api/ml/train/forecaster", json={})
        health = await s.gateway.get("/api/ml/health")
    for response in (forecast, train):
        assert response.status_code == 503
        assert "forecaster" in response.json()["detail"]
    assert health.json()["services"]["forecaster"]["status"] == "down"
