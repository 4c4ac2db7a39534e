"""Every host scored from its first sample by its own detectors: no model needed, state kept
across restarts and evictions, late samples skipped, predict stateless, per-host forests.
Real SQLite and PostgreSQL, the trainer app with its loops running."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.sampling.sampler import MetricsCollector
from services.trainer.anomaly.budget import GRID
from services.trainer.anomaly.features import epoch_seconds
from services.trainer.anomaly.forests import AUTO_CONTAMINATION, INCIDENT_BUDGET
from services.trainer.anomaly.service import AnomalyService
from services.trainer.anomaly.streaming import HostStream
from services.trainer.app import create_app
from shared.catalogue import METRIC_NAMES
from shared.clock import utcnow
from shared.settings import Settings
from shared.tables import anomaly_scores, anomaly_stream_state, ml_models
from tests.conftest import app_client
from tests.trainer.anomaly.test_anomaly_service import (
    SPIKE,
    samples,
    store,
    store_history,
    train,
    training_frame,
    wait_for,
)

READING_KEYS = {"metric", "value", "expected", "lower", "upper", "likelihood"}


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"scoring_interval": 0.05})


@pytest.fixture
async def running(
    fast_settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(fast_settings, engine=engine)
    async with app_client(app) as client:
        yield app, client


async def scored_count(engine: AsyncEngine, host: str) -> int:
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(anomaly_scores)
        return int((await conn.execute(query.where(anomaly_scores.c.host == host))).scalar_one())


async def wait_scored(engine: AsyncEngine, host: str, n: int) -> None:
    async def done() -> bool:
        return await scored_count(engine, host) >= n

    await wait_for(done, timeout=30)


async def stored_scores(engine: AsyncEngine, host: str) -> list[dict[str, Any]]:
    """A host's scored samples, in sample-time order."""
    async with engine.connect() as conn:
        query = (
            sa.select(anomaly_scores)
            .where(anomaly_scores.c.host == host)
            .order_by(anomaly_scores.c.timestamp, anomaly_scores.c.id)
        )
        return [dict(r._mapping) for r in await conn.execute(query)]


def reference_scores(frame: pd.DataFrame) -> list[float]:
    """The host scores of one uninterrupted detector fed the frame in order, in process."""
    stream = HostStream(tuple(METRIC_NAMES))
    times = epoch_seconds(list(frame["timestamp"]))
    values = frame[list(METRIC_NAMES)].to_numpy(dtype=float)
    return [
        stream.update(float(t), dict(zip(METRIC_NAMES, row.tolist(), strict=True))).score
        for t, row in zip(times, values, strict=True)
    ]


def minutes_ago(n: int) -> datetime:
    return utcnow().replace(second=0, microsecond=0) - timedelta(minutes=n)


# -- scoring from the first sample -----------------------------------------------------


async def test_a_new_host_is_scored_from_its_first_sample_with_no_model(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    _app, client = running
    await store(engine, samples(minutes_ago(100), 90), "fresh")
    await wait_scored(engine, "fresh", 90)
    body = (await client.get("/anomaly-scores", params={"host": "fresh", "limit": 1000})).json()
    assert body["count"] == 90
    for s in body["scores"]:
        assert s["model_id"] is None and s["metrics_id"] is not None
        assert s["contributions"] and all(set(c) == READING_KEYS for c in s["contributions"])
        top = s["contributions"][0]
        assert top["lower"] <= top["expected"] <= top["upper"]
    first = min(body["scores"], key=lambda s: s["timestamp"])
    assert first["score"] == 0.0  # learning: the first sample raises nothing
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(ml_models))).scalar() == 0
    # No incident while the detectors learn a normal host.
    listed = (await client.get("/incidents", params={"type": "ML_ANOMALY"})).json()
    assert listed["count"] == 0


async def test_state_survives_a_restart_without_forgetting_or_relearning(
    fast_settings: Settings, engine: AsyncEngine
) -> None:
    frame = samples(minutes_ago(120), 110)
    # a short burst after the restart, so that the scores compared are not all 0
    frame.loc[frame.index[90:93], "cpu_usage_percent"] = 99.0
    frame.loc[frame.index[90:93], "error_rate"] = 5.0
    first, second = frame.iloc[:70], frame.iloc[70:]
    async with app_client(create_app(fast_settings, engine=engine)):
        await store(engine, first, "r")
        await wait_scored(engine, "r", 70)
    async with engine.connect() as conn:
        saved = (
            await conn.execute(
                sa.select(anomaly_stream_state).where(anomaly_stream_state.c.host == "r")
            )
        ).one()
    assert HostStream.from_bytes(saved.state).n.max() == 70
    async with app_client(create_app(fast_settings, engine=engine)) as client:
        await store(engine, second, "r")
        await wait_scored(engine, "r", 110)
        count = (await client.get("/anomaly-scores", params={"host": "r", "limit": 500})).json()
    assert count["count"] == 110  # the first 70 were not scored again
    got = [s["score"] for s in await stored_scores(engine, "r")]
    assert got == pytest.approx(reference_scores(frame), abs=1e-9)
    assert max(got[70:]) > 0.0  # past probation: the comparison means something


async def test_idle_hosts_are_evicted_and_reloaded_from_the_database(
    fast_settings: Settings, engine: AsyncEngine
) -> None:
    cfg = fast_settings.model_copy(update={"anomaly_idle_minutes": 0.002})
    app = create_app(cfg, engine=engine)
    frame = samples(minutes_ago(120), 100)
    async with app_client(app):
        svc: AnomalyService = app.state.anomaly
        await store(engine, frame.iloc[:60], "idle")
        await wait_scored(engine, "idle", 60)

        async def evicted() -> bool:
            return svc.scoring.streams.get("idle") is None

        await wait_for(evicted)
        assert svc.scoring.streams.evicted >= 1
        await store(engine, frame.iloc[60:], "idle")
        await wait_scored(engine, "idle", 100)
    got = [s["score"] for s in await stored_scores(engine, "idle")]
    assert got == pytest.approx(reference_scores(frame), abs=1e-9)


async def test_an_out_of_order_batch_leaves_scoring_running_for_every_host(
    fast_settings: Settings, engine: AsyncEngine
) -> None:
    start = minutes_ago(120)
    a, b = samples(start, 100), samples(start, 100)
    async with app_client(create_app(fast_settings, engine=engine)) as client:
        await store(engine, a.iloc[:50], "a")
        await store(engine, b.iloc[:50], "b")
        await wait_scored(engine, "a", 50)
        # One batch of host a, older than what it already sent (and overlapping it).
        await store(engine, a.iloc[10:20], "a")
        await store(engine, b.iloc[50:70], "b")
        await wait_scored(engine, "b", 70)
        await store(engine, a.iloc[50:70], "a")
        await wait_scored(engine, "a", 70)
    async with engine.connect() as conn:
        late = (
            await conn.execute(
                sa.select(anomaly_stream_state.c.late).where(anomaly_stream_state.c.host == "a")
            )
        ).scalar_one()
    assert late == 10
    # After a restart both hosts go on.
    async with app_client(create_app(fast_settings, engine=engine)) as client:
        await store(engine, a.iloc[70:], "a")
        await store(engine, b.iloc[70:], "b")
        await wait_scored(engine, "a", 100)
        await wait_scored(engine, "b", 100)
        health = await client.get("/health")
    assert health.status_code == 200
    assert await scored_count(engine, "a") == 100  # the 10 late ones skipped, not scored


# -- predict ---------------------------------------------------------------------------


async def test_predict_for_a_host_uses_its_detectors_and_fills_only_fresh_metrics(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    _app, client = running
    frame = samples(minutes_ago(120), 90)  # ends half an hour ago
    await store(engine, frame, "p")
    await wait_scored(engine, "p", 90)
    newest = frame["timestamp"].iloc[-1]
    at = (newest + timedelta(seconds=30)).isoformat()
    body = {"cpu_usage_percent": 25.0, "host": "p", "timestamp": at}
    first = (await client.post("/predict/anomaly", json=body)).json()
    again = (await client.post("/predict/anomaly", json=body)).json()
    assert first == again  # stateless
    assert first["host"] == "p" and first["models"]["per_metric"] is True
    assert first["model_id"] is None and first["forest_score"] is None
    assert first["learning"] is False
    assert set(first["filled_metrics"]) == set(METRIC_NAMES) - {"cpu_usage_percent"}
    assert pd.Timestamp(first["filled_from"]) == newest
    assert first["missing_metrics"] == []
    assert all(set(t) == READING_KEYS for t in first["top_metrics"])
    # Ten minutes later the newest sample is too old to fill from: scored as missing.
    later = (newest + timedelta(minutes=10)).isoformat()
    stale = (await client.post("/predict/anomaly", json={**body, "timestamp": later})).json()
    assert stale["filled_metrics"] == [] and stale["filled_from"] is None
    assert set(stale["missing_metrics"]) == set(METRIC_NAMES) - {"cpu_usage_percent"}
    assert [t["metric"] for t in stale["top_metrics"]] == ["cpu_usage_percent"]
    # Nothing was learned from the predictions.
    svc: AnomalyService = _app.state.anomaly
    stream = svc.scoring.streams.get("p")
    assert stream is not None and stream.n.max() == 90


async def test_predict_for_an_unknown_host_learns_nothing_and_says_so(
    running: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = running
    body = (await client.post("/predict/anomaly", json={**SPIKE, "host": "nobody"})).json()
    assert body["models"] == {
        "per_metric": False,
        "forest_model_id": None,
        "forest_model_version": None,
    }
    assert body["score"] == 0.0 and body["learning"] is True and body["is_anomaly"] is False


# -- forests per host --------------------------------------------------------------------


async def test_a_forest_is_trained_for_a_host_with_enough_history_and_only_scores_it(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    app, client = running
    svc: AnomalyService = app.state.anomaly
    await store_history(engine, host="auto")
    await store(engine, samples(minutes_ago(300), 40), "small")
    assert await svc.forests.check() == "auto"
    active = svc.models.get(host="auto")
    assert active is not None and active.record.host == "auto"
    assert active.record.parameters["contamination"] == AUTO_CONTAMINATION == 0.003
    # a labelled history trains on its normal rows, at the contamination they leave
    assert active.record.parameters["incident_budget"] is None
    assert svc.models.get(host="small") is None
    assert await svc.forests.check() is None  # not due again before ML_ANOMALY_RETRAIN_HOURS
    # back after a day: the forest abstains for its look-back and smoothing (81 minutes),
    # then scores the host's samples again
    later = minutes_ago(100)
    await store(engine, samples(later, 100), "auto")
    await store(engine, samples(later, 10), "small")

    async def auto_scored_by_forest() -> bool:
        rows = await stored_scores(engine, "auto")
        return sum(r["model_id"] == active.id for r in rows) >= 10

    await wait_for(auto_scored_by_forest, timeout=60)
    await wait_scored(engine, "small", 50)
    assert all(r["model_id"] is None for r in await stored_scores(engine, "small"))
    small = (await client.post("/predict/anomaly", json={**SPIKE, "host": "small"})).json()
    assert small["model_id"] is None and small["forest_score"] is None
    auto = (await client.post("/predict/anomaly", json={**SPIKE, "host": "auto"})).json()
    assert auto["model_id"] == active.id and auto["forest_score"] is not None
    assert auto["is_anomaly"] is True
    assert math.isfinite(auto["score"])


async def test_an_unlabelled_host_gets_its_forest_threshold_from_its_own_incident_rate(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    app, _client = running
    svc: AnomalyService = app.state.anomaly
    frame = training_frame().assign(label="normal")  # a real host's history: no labels
    await store(engine, frame, "plain")
    assert await svc.forests.check() == "plain"
    active = svc.models.get(host="plain")
    assert active is not None
    spent = active.record.parameters["incident_budget"]
    assert spent["per_day"] == INCIDENT_BUDGET == 1.0
    assert spent["threshold"] == svc.settings.anomaly_threshold
    assert spent["contamination"] in GRID
    assert set(spent["incidents_per_day"]) == {str(c) for c in GRID}
    within = [float(c) for c, v in spent["incidents_per_day"].items() if v <= INCIDENT_BUDGET]
    assert spent["contamination"] == (max(within) if within else min(GRID))
    assert active.record.parameters["effective_contamination"] == spent["contamination"]
    assert active.record.metrics["threshold"] == active.model.fitted_threshold


async def test_training_a_host_leaves_the_other_hosts_forests_active(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    _app, client = running
    await store_history(engine, host="one")
    await store_history(engine, host="two")
    first = (await train(client, host="one")).json()
    second = (await train(client, host="two")).json()
    assert first["activated"] and second["activated"]
    assert second["previous_model_id"] is None  # no earlier version of host two
    statuses = {m["id"]: m["status"] for m in (await client.get("/models")).json()["models"]}
    assert statuses == {first["model"]["id"]: "active", second["model"]["id"]: "active"}
    hosts = {m["host"] for m in (await client.get("/models")).json()["models"]}
    assert hosts == {"one", "two"}
    # Without a host, the forest trained last scores it, and says so (a minute after the
    # history: after a longer gap the forest would abstain).
    at = (training_frame()["timestamp"].iloc[-1] + timedelta(minutes=1)).isoformat()
    body = (await client.post("/predict/anomaly", json={**SPIKE, "timestamp": at})).json()
    assert body["host"] == "two" and body["model_id"] == second["model"]["id"]
    assert np.isfinite(body["forest_score"])


# -- the quick start on this machine -------------------------------------------------------


async def test_the_quick_start_then_three_minutes_of_this_machine_open_no_incident(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine, fast_settings: Settings
) -> None:
    """The README's quick start (train with use_synthetic), then three minutes of this
    machine's own samples at a one-second interval, read by the collector's own code (psutil)
    and stamped a second apart: no incident, and the spec's example is still flagged."""
    _app, client = running
    assert (await train(client, use_synthetic=True)).status_code == 200
    host = fast_settings.hostname
    start = utcnow().replace(microsecond=0) - timedelta(seconds=180)
    async with httpx.AsyncClient() as http:
        collector = MetricsCollector(fast_settings, http)
        await collector.prime()
        rows = []
        for i in range(180):
            sample = await collector.collect()
            rows.append({**sample, "timestamp": start + timedelta(seconds=i)})
    frame = pd.DataFrame(rows).drop(columns=["host"])
    await store(engine, frame, host)

    async def done() -> bool:
        return await scored_count(engine, host) >= 180

    await wait_for(done, timeout=180)  # after the synthetic month, scored first
    incidents = (await client.get("/incidents", params={"type": "ML_ANOMALY"})).json()
    assert incidents["count"] == 0
    scores = await stored_scores(engine, host)
    assert len(scores) == 180 and not any(s["is_anomaly"] for s in scores)
    example = {
        "cpu_usage_percent": 95.0,
        "memory_usage_mb": 7500,
        "error_rate": 0.25,
        "response_time_p95": 8000,
    }
    flagged = (await client.post("/predict/anomaly", json=example)).json()
    assert flagged["is_anomaly"] and flagged["host"] == "synthetic"
