"""The forecaster service on SQLite and PostgreSQL: training, stored forecasts, alerts, incidents."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from services.forecaster.app import create_app
from services.forecaster.forecasting import forecast_store as store
from services.forecaster.forecasting import repository as repo
from services.forecaster.forecasting.errors import ModelIntegrityError
from services.forecaster.forecasting.history import frames_from_buckets, history_from_samples
from services.forecaster.forecasting.prophet_model import load_model
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared import registry, workers
from shared.catalogue import METRIC_NAMES
from shared.errors import Conflict
from shared.incidents.repository import list_incidents
from shared.registry import ArtifactIntegrityError
from shared.settings import Settings
from shared.tables import metric_forecasts, ml_models
from tests.conftest import app_client, served

# Prophet 1.5 calls DataFrame.drop(inplace=True), which pandas 3 deprecates
# (Pandas4Warning, a DeprecationWarning raised from prophet.forecaster). Not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:prophet")

DAYS = 8
METRICS = ["cpu_usage_percent", "memory_usage_percent"]
CPU = "cpu_usage_percent"
BREACH_AT = 70.0


async def store_synthetic(
    engine: AsyncEngine, *, days: int = DAYS, host: str = "synthetic", rising: bool = False
) -> pd.DataFrame:
    """Synthetic samples through the generator and store_frame; `rising`: CPU climbs 8 %/day."""
    frame = SyntheticDataGenerator(seed=42).generate_full_training_set(days)
    if rising:
        elapsed = (
            pd.DatetimeIndex(frame["timestamp"]) - frame["timestamp"].iloc[0]
        ) / pd.Timedelta(days=1)
        cpu = 10.0 + 8.0 * np.asarray(elapsed) + 0.15 * frame[CPU].to_numpy()
        frame[CPU] = np.clip(cpu, 0.0, 100.0)
    async with engine.begin() as conn:
        await store_frame(conn, frame, host=host)
    return frame


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    """The service's default executor kind, shared by the tests that need real processes."""
    pool = workers.process_pool(2)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.asynccontextmanager
async def forecaster(
    settings: Settings, engine: AsyncEngine, *, executor: Executor | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The forecaster app; Prophet on a small thread pool unless an executor is handed in."""
    with contextlib.ExitStack() as exits:
        if executor is None:
            executor = exits.enter_context(workers.thread_pool(2, name="prophet"))
        app = create_app(settings, engine=engine, refresh_loop=False, executor=executor)
        async with app_client(app) as client:
            client.timeout = httpx.Timeout(120.0)
            yield client, app


async def train(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/train/forecaster", json={"metrics": METRICS, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_training_registers_verified_versions_with_evaluation_and_stores_forecasts(
    settings: Settings, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="autofix_ml.events")
    await store_synthetic(engine, host="small", days=2)
    await store_synthetic(engine)
    async with forecaster(settings, engine) as (client, app):
        result = await train(client)
        again = await train(client, days=DAYS - 1)

    assert result["host"] == "synthetic" and result["host_chosen"] is True  # most samples
    assert result["resolution_minutes"] == 15
    assert result["failures"] == {}
    assert [m["metric"] for m in result["models"]] == METRICS
    step = pd.Timedelta(minutes=15)
    per_metric = result["forecasts_written"] // len(METRICS)
    assert per_metric * step >= pd.Timedelta(hours=24)
    async with engine.connect() as conn:
        models = await repo.active_models(conn, host="synthetic")
        assert [m.version for m in models] == [2, 2]
        for row in models:
            assert row.model_type == "backtest_selected" and row.name == "forecaster"
            evaluation = row.metrics
            for key in ("mae", "mape", "mase", "coverage", "naive_day_mae", "naive_week_mae"):
                assert key in evaluation
            assert 0.0 <= evaluation["coverage"] <= 1.0
            # The choice and every candidate's backtest error, the naives' among them.
            scores = evaluation["candidates"]
            assert (
                evaluation["chosen"] in scores and row.parameters["chosen"] == evaluation["chosen"]
            )
            assert evaluation["mae"] == scores[evaluation["chosen"]] == min(scores.values())
            assert evaluation["naive_day_mae"] == scores["naive_day"]
            assert {"prophet", "naive_day", "profile_day", "median"} <= scores.keys()
            artifact, fmt, sha = await registry.load_artifact(conn, row.id)
            assert fmt == "forecast_json" and sha == hashlib.sha256(artifact).hexdigest()
            assert load_model(artifact, sha).metric == row.metric
        retired = await registry.list_models(conn, name="forecaster", status="retired")
        assert sorted(m.id for m in retired) == sorted(m["model_id"] for m in result["models"])
        stored = (
            await conn.execute(sa.select(sa.func.count()).select_from(metric_forecasts))
        ).scalar_one()
    # Only the kept generations remain: the retired models' forecasts plus the new ones.
    assert stored == result["forecasts_written"] + again["forecasts_written"]
    # Each activation names the version it replaced: none the first time, then the first run's.
    activated = [r.fields for r in caplog.records if getattr(r, "event", None) == "model_activated"]
    first = {m["metric"]: m["model_id"] for m in result["models"]}
    second = {m["metric"]: m["model_id"] for m in again["models"]}
    assert [(f["model_id"], f["previous_model_id"]) for f in activated] == [
        *((first[name], None) for name in METRICS),
        *((second[name], first[name]) for name in METRICS),
    ]


async def test_forecast_answers_hours_ahead_points_with_ordered_bounds(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_synthetic(engine)
    async with forecaster(settings, engine) as (client, _app):
        before = await client.get("/forecast", params={"hours_ahead": 6, "metric": CPU})
        result = await train(client)
        response = await client.get("/forecast", params={"hours_ahead": 6, "metric": CPU})
        every = await client.get("/forecast", params={"hours_ahead": 1})
        unknown = await client.get("/forecast", params={"metric": "cpu"})
        zero = await client.get("/forecast", params={"hours_ahead": 0})
        too_far = await client.get("/forecast", params={"hours_ahead": 25})
        other_host = await client.get("/forecast", params={"host": "elsewhere"})

    assert before.status_code == 409
    assert "train" in before.json()["detail"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["host"] == "synthetic" and body["step_minutes"] == 15
    [series] = body["forecasts"]
    assert series["metric"] == CPU
    cpu_model = next(m for m in result["models"] if m["metric"] == CPU)
    assert series["model_id"] == cpu_model["model_id"]
    assert series["model_version"] == 1
    assert series["generated_at"] == result["generated_at"].replace("+00:00", "Z")
    points = series["points"]
    assert len(points) == 6 * 4
    times = pd.DatetimeIndex([p["timestamp"] for p in points])
    assert (times[1:] - times[:-1] == pd.Timedelta(minutes=15)).all()
    for p in points:
        assert p["yhat_lower"] <= p["yhat"] <= p["yhat_upper"]
        assert 0.0 <= p["yhat_lower"] and p["yhat_upper"] <= 100.0
    assert [f["metric"] for f in every.json()["forecasts"]] == METRICS
    assert unknown.status_code == 404
    assert all(name in unknown.json()["detail"] for name in METRIC_NAMES)
    for bad in (zero, too_far):
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["field"] == "query.hours_ahead"
    # A host without a model is a 404 naming the parameter and the hosts that have one.
    assert other_host.status_code == 404
    assert "host" in other_host.json()["detail"] and "synthetic" in other_host.json()["detail"]


async def test_training_input_errors_name_the_field_or_the_cause(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with forecaster(settings, engine) as (client, _app):
        empty = await client.post("/train/forecaster", json={})
        await store_synthetic(engine, days=1)
        unknown_metric = await client.post("/train/forecaster", json={"metrics": ["cpu"]})
        unknown_host = await client.post("/train/forecaster", json={"host": "nowhere"})
        both = await client.post(
            "/train/forecaster", json={"start": "2025-01-01T00:00:00Z", "days": 3}
        )
        width = await client.post("/train/forecaster", json={"interval_width": 1.5})
        extra = await client.post("/train/forecaster", json={"resolution": "1min"})
        no_data = await client.post(
            "/train/forecaster",
            json={"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"},
        )

    assert empty.status_code == 409
    assert "generate" in empty.json()["detail"]
    assert unknown_metric.status_code == 422
    [error] = unknown_metric.json()["detail"]
    assert error["field"] == "body.metrics"
    assert CPU in error["msg"] and "'cpu'" not in error["msg"].split("known metrics")[1]
    assert unknown_host.status_code == 404
    assert "synthetic" in unknown_host.json()["detail"]
    assert both.status_code == 422
    assert width.status_code == 422
    assert width.json()["detail"][0]["field"] == "body.interval_width"
    assert extra.status_code == 422
    assert no_data.status_code == 409
    assert "no samples" in no_data.json()["detail"]


async def test_a_second_training_run_is_a_409_and_health_answers_meanwhile(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_synthetic(engine)
    pool = workers.thread_pool(1, name="prophet")
    async with forecaster(settings, engine, executor=pool) as (client, _app):
        # Park the service's only worker so the run provably stays in progress.
        gate = threading.Event()
        pool.submit(gate.wait, 60)
        first = asyncio.create_task(client.post("/train/forecaster", json={"metrics": METRICS}))
        try:
            health = await client.get("/health")
            while not health.json()["fit_running"]:
                await asyncio.sleep(0.01)
                health = await client.get("/health")
            second = await client.post("/train/forecaster", json={})
            assert not first.done()
        finally:
            gate.set()
        response = await first
        after = await client.get("/health")
    pool.shutdown()

    assert health.status_code == 200 and health.json()["fit_running"] is True
    assert health.json()["fit_started_at"] is not None
    assert second.status_code == 409
    assert "in progress" in second.json()["detail"]
    assert response.status_code == 200
    assert after.json()["fit_running"] is False
    assert after.json()["active_models"] == len(METRICS)


async def test_health_answers_while_prophet_is_fitting_in_worker_processes(
    settings: Settings, engine: AsyncEngine, process_pool: ProcessPoolExecutor
) -> None:
    await store_synthetic(engine)
    async with forecaster(settings, engine, executor=process_pool) as (client, _app):
        fit = asyncio.create_task(client.post("/train/forecaster", json={"metrics": METRICS}))
        answers = []
        while not fit.done():
            answers.append(await client.get("/health"))
            await asyncio.sleep(0.005)
        assert (await fit).status_code == 200
        # A refresh sends the stored versions to the same workers, which parse them once.
        refreshed = await client.post("/forecast/refresh")
    during = [a for a in answers if a.json()["fit_running"]]
    assert during, "no health answer arrived while the fit was running"
    assert all(a.status_code == 200 and a.json()["status"] == "healthy" for a in during)
    assert refreshed.status_code == 200, refreshed.text
    [host] = refreshed.json()["hosts"]
    assert host["metrics"] == METRICS and host["failures"] == {}


async def test_next_hour_gives_every_metric_now_and_in_an_hour(
    settings: Settings, engine: AsyncEngine
) -> None:
    frame = await store_synthetic(engine)
    async with forecaster(settings, engine) as (client, _app):
        before = await client.get("/forecast/next-hour")
        await train(client)
        response = await client.get("/forecast/next-hour")

    assert before.status_code == 409
    assert response.status_code == 200, response.text
    items = response.json()["metrics"]
    assert [i["metric"] for i in items] == METRICS
    for item in items:
        assert item["current_value"] == pytest.approx(frame[item["metric"]].iloc[-1])
        assert item["yhat_lower"] <= item["yhat"] <= item["yhat_upper"]
        assert item["change"] == pytest.approx(item["yhat"] - item["current_value"])
        assert item["direction"] in ("rising", "falling", "flat")
        at = pd.Timestamp(item["at"]) - pd.Timestamp(response.json()["generated_at"])
        assert timedelta(minutes=59) < at < timedelta(minutes=62)


async def test_a_rising_cpu_series_is_a_rising_trend(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_synthetic(engine, rising=True)
    async with forecaster(settings, engine) as (client, _app):
        unknown = await client.get("/forecast/trend/cpu")
        missing = await client.get("/forecast/trend/disk_usage_percent")
        await train(client)
        response = await client.get(f"/forecast/trend/{CPU}")
        memory = await client.get("/forecast/trend/memory_usage_percent")

    assert unknown.status_code == 404 and CPU in unknown.json()["detail"]
    assert missing.status_code == 409
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["direction"] == "rising"
    assert body["slope_per_day"] == pytest.approx(8.0, rel=0.35)
    assert body["slope_per_hour"] == pytest.approx(body["slope_per_day"] / 24)
    for point in body["change_points"]:
        assert {"time", "slope_change_per_hour", "slope_change_per_day"} <= point.keys()
    assert memory.json()["direction"] in ("flat", "rising", "falling")


async def test_predicted_breach_opens_one_incident_and_resolves_when_it_no_longer_holds(
    settings: Settings, engine: AsyncEngine
) -> None:
    received: list[dict[str, Any]] = []
    webhook = FastAPI()

    @webhook.post("/hook")
    async def hook(request: Request) -> dict[str, bool]:
        received.append(await request.json())
        return {"ok": True}

    await store_synthetic(engine, rising=True)
    async with served(webhook) as url:
        # The rising CPU climbs 8 points a day and its daily peak in the next 24 h is about
        # 85 %: the catalogue's 85 % was reached at that peak or not at all, depending on the
        # minute the test ran; a forecaster chosen by backtest (a level-adjusted daily
        # profile, no trend) may peak near 80 %. 70 % is crossed by the forecast itself.
        settings = settings.model_copy(
            update={"webhook_url": f"{url}/hook", "forecast_thresholds": {CPU: BREACH_AT}}
        )
        async with forecaster(settings, engine) as (client, _app):
            trained = await train(client)
            alerts = await client.get("/forecast/alerts")
            refreshed = await client.post("/forecast/refresh")
            await client.post("/forecast/refresh")
            for _ in range(500):
                if received:
                    break
                await asyncio.sleep(0.01)
        async with engine.connect() as conn:
            open_after_refreshes = await list_incidents(conn, type="predicted_breach")

        # Beyond the metric's bound (100 %): no band reaches it, so the breach no longer holds
        # (at 99 % the calibrated upper bound, clipped at 100 %, may still cross it).
        raised = settings.model_copy(update={"forecast_thresholds": {CPU: 101.0}})
        async with forecaster(raised, engine) as (client, _app):
            resolved = await client.post("/forecast/refresh")
            quiet = await client.get("/forecast/alerts")
            for _ in range(500):
                if len(received) >= 2:
                    break
                await asyncio.sleep(0.01)
        async with engine.connect() as conn:
            after = await list_incidents(conn, type="predicted_breach")

    assert trained["predicted_breaches"] == 1
    assert alerts.status_code == 200, alerts.text
    [alert] = alerts.json()["alerts"]
    assert alert["metric"] == CPU and alert["threshold"] == BREACH_AT
    assert alert["yhat_crossing_at"] is not None
    assert alert["upper_crossing_at"] <= alert["yhat_crossing_at"]
    assert alert["predicted_value"] >= BREACH_AT
    assert 0.5 <= alert["probability"] <= 1.0
    assert refreshed.json()["hosts"][0]["incidents_opened"] == 0  # deduplicated

    [incident] = open_after_refreshes
    assert incident.status == "open"
    assert incident.dedup_key == f"predicted_breach:synthetic:{CPU}"
    assert incident.metric == CPU and incident.details["threshold"] == BREACH_AT

    assert resolved.json()["hosts"][0]["incidents_resolved"] == 1
    assert quiet.json()["alerts"] == []
    [closed] = after
    assert closed.id == incident.id and closed.status == "resolved"
    assert [r["status"] for r in received] == ["open", "resolved"]
    assert all(r["type"] == "predicted_breach" for r in received)


async def test_a_tampered_artifact_is_refused_when_a_process_loads_it(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_synthetic(engine)
    async with forecaster(settings, engine) as (client, _app):
        result = await train(client)
        cpu_id = next(m["model_id"] for m in result["models"] if m["metric"] == CPU)
        async with engine.begin() as conn:
            artifact = (
                await conn.execute(sa.select(ml_models.c.artifact).where(ml_models.c.id == cpu_id))
            ).scalar_one()
            tampered = bytes(artifact).replace(b'"metric":"cpu', b'"metric":"CPU', 1)
            assert tampered != bytes(artifact)
            await conn.execute(
                sa.update(ml_models).where(ml_models.c.id == cpu_id).values(artifact=tampered)
            )
        # The process that wrote the version holds it as verified then: not re-read per refresh.
        same_process = await client.post("/forecast/refresh")
    async with engine.connect() as conn:
        with pytest.raises(ArtifactIntegrityError, match="sha256"):
            await registry.load_artifact(conn, cpu_id)
        record = await registry.get_model(conn, cpu_id)
        sha = record.artifact_sha256
    assert sha is not None
    with pytest.raises(ModelIntegrityError):
        load_model(tampered, sha)

    # A process that loads it (a restart, another replica) refuses it, on every pass.
    async with forecaster(settings, engine) as (client, app):
        async with engine.connect() as conn:
            with pytest.raises(Conflict, match="sha256"):
                await app.state.forecaster.models.load(conn, record)
        refreshed = await client.post("/forecast/refresh")
        again = await client.post("/forecast/refresh")

    assert same_process.json()["hosts"][0]["metrics"] == METRICS
    for response in (refreshed, again):
        assert response.status_code == 200
        [host] = response.json()["hosts"]
        assert "sha256" in host["failures"][CPU]
        assert host["metrics"] == ["memory_usage_percent"]
    async with engine.connect() as conn:
        cpu_generations = await store.generations(conn, host="synthetic", metric=CPU)
        memory_generations = await store.generations(conn, host="synthetic", metric=METRICS[1])
    # The tampered model's forecast was not rewritten after the training process's refresh.
    assert cpu_generations[0] == pd.Timestamp(same_process.json()["hosts"][0]["generated_at"])
    assert len(memory_generations) == store.KEEP_GENERATIONS
    assert memory_generations[0] > cpu_generations[0]


async def test_refreshes_keep_only_recent_generations(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_synthetic(engine)
    async with forecaster(settings, engine) as (client, _app):
        await train(client, metrics=[CPU])
        for _ in range(3):
            assert (await client.post("/forecast/refresh")).status_code == 200
        latest = await client.get("/forecast", params={"metric": CPU})
    async with engine.connect() as conn:
        kept = await store.generations(conn, host="synthetic", metric=CPU)
    assert len(kept) == store.KEEP_GENERATIONS
    generated = pd.Timestamp(latest.json()["forecasts"][0]["generated_at"])
    assert generated == pd.Timestamp(kept[0])


async def test_database_buckets_match_the_dataframe_buckets(
    settings: Settings, engine: AsyncEngine
) -> None:
    """The history the service fits (SQL means) is the one the benches and notebooks build."""
    frame = await store_synthetic(engine, days=2)
    start, end = frame["timestamp"].min(), frame["timestamp"].max()
    async with engine.connect() as conn:
        buckets = await repo.bucketed_history(
            conn,
            host="synthetic",
            start=start.to_pydatetime(),
            end=end.to_pydatetime(),
            metrics=METRICS,
            bucket_seconds=900,
        )
    assert buckets.samples == len(frame)
    from_sql = frames_from_buckets(buckets.table(), METRICS, bucket_seconds=900)
    from_frame = history_from_samples(frame, METRICS, resolution="15min")
    for name in METRICS:
        for part in ("fit", "observed"):
            ours, theirs = getattr(from_sql[name], part), getattr(from_frame[name], part)
            assert len(ours) > 0 and ours["ds"].tolist() == theirs["ds"].tolist()
            np.testing.assert_allclose(ours["y"], theirs["y"], rtol=1e-9)
        # The samples' spread within each bucket (mean of squares less the squared mean).
        ours, theirs = from_sql[name].spread, from_frame[name].spread
        assert ours is not None and theirs is not None and len(ours) == len(theirs) > 0
        scale = float(np.max(np.abs(from_frame[name].observed["y"])))
        np.testing.assert_allclose(ours["y"], theirs["y"], rtol=1e-6, atol=1e-6 * scale)
        assert float(theirs["y"].mean()) > 0
    assert len(from_sql[CPU].fit) == len(from_frame[CPU].fit) < len(from_sql[CPU].observed)


async def test_a_metric_without_values_is_reported_and_the_others_fitted(
    settings: Settings, engine: AsyncEngine
) -> None:
    frame = SyntheticDataGenerator(seed=42).generate_full_training_set(DAYS)
    frame["disk_usage_percent"] = np.nan
    async with engine.begin() as conn:
        await store_frame(conn, frame, host="synthetic")
    async with forecaster(settings, engine) as (client, _app):
        result = await train(client, metrics=[CPU, "disk_usage_percent"])
    assert [m["metric"] for m in result["models"]] == [CPU]
    assert "0 usable points" in result["failures"]["disk_usage_percent"]


async def test_the_refresh_loop_rewrites_stale_forecasts(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_synthetic(engine)
    async with forecaster(settings, engine) as (client, _app):
        await train(client, metrics=[CPU])
    quick = settings.model_copy(update={"forecast_refresh_minutes": 0.01})
    with workers.thread_pool(1, name="prophet") as pool:
        app = create_app(quick, engine=engine, executor=pool)
        async with app_client(app) as client:
            [loop] = [lp for lp in app.state.loops if lp.name == "forecast-refresh"]
            assert {lp.name for lp in app.state.loops} == {
                "forecast-refresh",
                "forecast-retrain",
                "webhook",
            }
            for _ in range(600):
                async with engine.connect() as conn:
                    kept = await store.generations(conn, host="synthetic", metric=CPU)
                if len(kept) == store.KEEP_GENERATIONS and loop.runs > 0:
                    break
                await asyncio.sleep(0.05)
            health = await client.get("/health")
        assert not loop.running
    state = loop.state()
    assert state.name == "forecast-refresh" and state.failures == 0
    assert state.last_success_at is not None
    assert len(kept) == store.KEEP_GENERATIONS
    assert pd.Timestamp(health.json()["last_refresh_at"]) >= pd.Timestamp(kept[0])
