"""Fleet-wide forecast reads and the training schedule, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.forecaster.app import create_app
from services.forecaster.forecasting import repository as repo
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared import workers
from shared.settings import Settings
from tests.api.test_gateway import stack
from tests.conftest import app_client
from tests.forecaster.test_service import forecaster, train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:prophet")

CPU = "cpu_usage_percent"
MEMORY = "memory_usage_percent"
METRICS = [CPU, MEMORY]
BREACH_AT = 80.0


async def store_host(
    engine: AsyncEngine, host: str, *, days: float, memory_scale: float = 1.0
) -> pd.DataFrame:
    """Synthetic samples whose CPU climbs 8 %/day (as test_service's rising series); memory
    scaled per host so that hosts tell apart. `days` may be a fraction: the newest part."""
    frame = SyntheticDataGenerator(seed=42).generate_full_training_set(max(1, int(np.ceil(days))))
    frame = frame.iloc[-int(days * 1440) :].reset_index(drop=True)
    elapsed = (pd.DatetimeIndex(frame["timestamp"]) - frame["timestamp"].iloc[0]) / pd.Timedelta(
        days=1
    )
    frame[CPU] = np.clip(10.0 + 8.0 * np.asarray(elapsed) + 0.15 * frame[CPU].to_numpy(), 0, 100)
    frame[MEMORY] = frame[MEMORY] * memory_scale
    async with engine.begin() as conn:
        await store_frame(conn, frame, host=host)
    return frame


async def test_reads_without_host_answer_for_every_trained_host(
    settings: Settings, engine: AsyncEngine
) -> None:
    frames = {
        "alpha": await store_host(engine, "alpha", days=8),
        "beta": await store_host(engine, "beta", days=8, memory_scale=0.5),
    }
    settings = settings.model_copy(update={"forecast_thresholds": {CPU: BREACH_AT}})
    async with forecaster(settings, engine) as (client, _app):
        await train(client, host="alpha")
        await train(client, host="beta")  # trained last: reads used to answer for it alone
        spec = await client.get("/forecast", params={"hours_ahead": 6, "metric": CPU})
        every = await client.get("/forecast", params={"hours_ahead": 1})
        one = await client.get("/forecast", params={"hours_ahead": 1, "host": "alpha"})
        next_hour = await client.get("/forecast/next-hour")
        next_alpha = await client.get("/forecast/next-hour", params={"host": "alpha"})
        alerts = await client.get("/forecast/alerts")
        alerts_beta = await client.get("/forecast/alerts", params={"host": "beta"})

    assert spec.status_code == 200, spec.text
    body = spec.json()
    assert body["host"] is None and body["hosts"] == ["alpha", "beta"]
    assert [(f["host"], f["metric"]) for f in body["forecasts"]] == [("alpha", CPU), ("beta", CPU)]
    assert all(len(f["points"]) == 6 * 4 for f in body["forecasts"])
    assert [(f["host"], f["metric"]) for f in every.json()["forecasts"]] == [
        (host, metric) for host in ("alpha", "beta") for metric in METRICS
    ]
    assert one.json()["host"] == "alpha" and one.json()["hosts"] == ["alpha"]
    assert {f["host"] for f in one.json()["forecasts"]} == {"alpha"}

    assert next_hour.status_code == 200, next_hour.text
    items = next_hour.json()["metrics"]
    assert next_hour.json()["hosts"] == ["alpha", "beta"]
    assert [(i["host"], i["metric"]) for i in items] == [
        (host, metric) for host in ("alpha", "beta") for metric in METRICS
    ]
    for item in items:  # each host's own newest sample
        expected = frames[item["host"]][item["metric"]].iloc[-1]
        assert item["current_value"] == pytest.approx(expected)
    assert next_alpha.json()["host"] == "alpha"
    assert [i["host"] for i in next_alpha.json()["metrics"]] == ["alpha", "alpha"]

    assert alerts.status_code == 200, alerts.text
    found = alerts.json()
    assert found["host"] is None and found["hosts"] == ["alpha", "beta"]
    assert sorted((a["host"], a["metric"]) for a in found["alerts"]) == [
        ("alpha", CPU),
        ("beta", CPU),
    ]
    assert found["count"] == 2
    assert [a["at"] for a in found["alerts"]] == sorted(a["at"] for a in found["alerts"])
    assert [a["host"] for a in alerts_beta.json()["alerts"]] == ["beta"]


async def test_a_host_without_a_model_is_a_404_naming_the_parameter(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_host(engine, "alpha", days=3)
    await store_host(engine, "beta", days=3)
    async with forecaster(settings, engine) as (client, _app):
        await train(client, host="alpha", metrics=[CPU])
        await train(client, host="beta", metrics=[CPU])
        missing = {
            path: await client.get(path, params={"host": "nowhere"})
            for path in ("/forecast", "/forecast/next-hour", "/forecast/alerts")
        }
        empty = await client.get("/forecast", params={"host": ""})
        trend_both = await client.get(f"/forecast/trend/{CPU}")
        trend_one = await client.get(f"/forecast/trend/{CPU}", params={"host": "beta"})
        trend_missing = await client.get(f"/forecast/trend/{MEMORY}", params={"host": "beta"})

    for path, response in missing.items():
        assert response.status_code == 404, path
        detail = response.json()["detail"]
        assert "'nowhere'" in detail and "host" in detail
        assert "alpha, beta" in detail
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["field"] == "query.host"
    assert trend_both.status_code == 422
    [error] = trend_both.json()["detail"]
    assert error["field"] == "query.host" and "alpha, beta" in error["msg"]
    assert trend_one.status_code == 200 and trend_one.json()["host"] == "beta"
    assert trend_missing.status_code == 409


async def test_the_spec_call_answers_through_the_gateway_after_two_hosts_were_trained(
    settings: Settings, engine: AsyncEngine
) -> None:
    settings = settings.model_copy(update={"forecast_retrain_hours": 0.0})  # on demand only
    await store_host(engine, "web-1", days=3)
    await store_host(engine, "db-1", days=3)
    async with stack(settings, engine) as s:
        s.gateway.timeout = 120
        for host in ("web-1", "db-1"):
            trained = await s.gateway.post(
                "/api/ml/train/forecaster", json={"host": host, "metrics": [CPU]}
            )
            assert trained.status_code == 200, trained.text
        response = await s.gateway.get("/api/ml/forecast", params={"hours_ahead": 6, "metric": CPU})
        unknown = await s.gateway.get("/api/ml/forecast", params={"host": "nowhere"})
    assert response.status_code == 200, response.text
    assert response.json()["hosts"] == ["db-1", "web-1"]
    assert [f["host"] for f in response.json()["forecasts"]] == ["db-1", "web-1"]
    assert unknown.status_code == 404 and "host" in unknown.json()["detail"]


async def test_the_schedule_trains_hosts_with_enough_history_and_skips_the_rest(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_host(engine, "long", days=1.5)
    await store_host(engine, "short", days=0.25)
    # A refit every 4 seconds: the test sees a host trained, then trained again.
    quick = settings.model_copy(update={"forecast_retrain_hours": 4 / 3600})
    with workers.thread_pool(2, name="prophet") as pool:
        app = create_app(quick, engine=engine, refresh_loop=False, retrain_loop=True, executor=pool)
        async with app_client(app) as client:
            [loop] = [lp for lp in app.state.loops if lp.name == "forecast-retrain"]
            versions: list[int] = []
            for _ in range(1200):
                async with engine.connect() as conn:
                    models = await repo.active_models(conn)
                versions = sorted({m.version for m in models if m.host == "long"})
                if versions and versions[0] >= 2:
                    break
                await asyncio.sleep(0.05)
            reads: Any = await client.get("/forecast", params={"metric": CPU})
        assert not loop.running
    assert versions and versions[0] >= 2, "the host was not refitted on schedule"
    assert {m.host for m in models} == {"long"}
    assert len({m.metric for m in models}) == 14  # every metric, as POST {} would
    assert loop.state().failures == 0
    assert reads.status_code == 200 and reads.json()["hosts"] == ["long"]
