"""Predict joins a host's two layers as the scoring loop does: a sample the forest finds
unusual at the host's threshold but not at its own is flagged through the two layers' joint p
(Fisher's method), and the answer's score is that joint likelihood (real SQLite and
PostgreSQL, the trainer app with its loops running)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly.hostscore import joint_likelihood
from services.trainer.anomaly.service import AnomalyService
from shared.catalogue import METRIC_NAMES
from shared.settings import Settings
from tests.trainer.anomaly.test_anomaly_service import samples, store, store_history
from tests.trainer.anomaly.test_host_scoring import minutes_ago, running, scored_count

__all__ = ["running"]  # fixture used here

HOST_THRESHOLD = 0.99  # the feedback's lowest: looser than the forest's own (contamination)


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"scoring_interval": 0.05, "anomaly_threshold": HOST_THRESHOLD}
    )


async def test_the_forest_counts_at_the_hosts_threshold_through_the_joint_p(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    app, client = running
    svc: AnomalyService = app.state.anomaly
    await store_history(engine, host="auto")
    assert await svc.forests.check() == "auto"
    recent = samples(minutes_ago(30), 30)
    await store(engine, recent, "auto")
    before = -1
    while (n := await scored_count(engine, "auto")) != before:  # the loop has caught up
        before = n
        await asyncio.sleep(0.5)
    last = recent.iloc[-1]
    answers = []
    for i in range(31):  # the cpu raised step by step: the forest's score rises
        body = {m: float(last[m]) for m in METRIC_NAMES}
        body["cpu_usage_percent"] = float(last["cpu_usage_percent"]) * (1.0 + i / 100)
        response = await client.post("/predict/anomaly", json={**body, "host": "auto"})
        assert response.status_code == 200
        answers.append(response.json())
    for a in answers:
        assert a["threshold"] == HOST_THRESHOLD
        assert a["is_anomaly"] == (a["score"] >= HOST_THRESHOLD)
        assert a["score"] >= a["per_metric_score"]
    joint_only = [
        a
        for a in answers
        if a["is_anomaly"]
        and a["per_metric_score"] < HOST_THRESHOLD
        and a["forest_score"] < a["forest_threshold"]
    ]
    assert joint_only, [(a["per_metric_score"], a["forest_score"]) for a in answers]
    for a in joint_only:
        assert a["forest_threshold"] > HOST_THRESHOLD  # flagged by neither layer alone
        assert a["score"] == pytest.approx(
            joint_likelihood(a["per_metric_score"], a["forest_score"]), abs=1e-12
        )
