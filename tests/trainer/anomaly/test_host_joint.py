"""Predict joins a host's two layers as the scoring loop does (``hostscore.combine``): the
answer's score is the largest of the per-metric likelihood, the forest's score on the host's
scale and the two layers' joint p (Fisher's method), and the joint decides it once both layers
are unusual at once (real SQLite and PostgreSQL, the trainer app with its loops running).

The history comes from the synthetic generator relative to the wall clock, so how far the cpu
must rise before the forest finds it unusual depends on the hour; the sweep rises far enough
for any hour and checks every answer, not a band found at one hour.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly.hostscore import forest_on_stream_scale, joint_likelihood
from services.trainer.anomaly.service import AnomalyService
from shared.catalogue import METRIC_NAMES
from shared.settings import Settings
from tests.trainer.anomaly.test_anomaly_service import samples, store, store_history
from tests.trainer.anomaly.test_host_scoring import minutes_ago, running, scored_count

__all__ = ["running"]  # fixture used here

HOST_THRESHOLD = 0.99  # the feedback's lowest: looser than the forest's own (contamination)
STEPS = 120  # the cpu raised step by step from its last value to 100 %


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"scoring_interval": 0.05, "anomaly_threshold": HOST_THRESHOLD}
    )


def layer_scores(answer: dict[str, Any]) -> tuple[float, float, float]:
    """The per-metric likelihood, the forest's score on the host's scale, the joint."""
    s, f = answer["per_metric_score"], answer["forest_score"]
    mapped = forest_on_stream_scale(f, answer["forest_threshold"], HOST_THRESHOLD)
    return s, mapped, joint_likelihood(s, f)


async def test_predict_scores_a_host_with_both_layers_joined(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    app, client = running
    svc: AnomalyService = app.state.anomaly
    await store_history(engine, host="auto")
    assert await svc.forests.check() == "auto"
    # back after a day: past the forest's look-back and smoothing (81 minutes) it scores again
    recent = samples(minutes_ago(100), 100)
    await store(engine, recent, "auto")
    before = -1
    while (n := await scored_count(engine, "auto")) != before:  # the loop has caught up
        before = n
        await asyncio.sleep(0.5)
    last = recent.iloc[-1]
    answers = []
    for i in range(STEPS + 1):
        body = {m: float(last[m]) for m in METRIC_NAMES}
        cpu = float(last["cpu_usage_percent"])
        # cpu + (100 - cpu) * i / STEPS can round past 100 % (a 422 seen once).
        body["cpu_usage_percent"] = min(100.0, (cpu * (STEPS - i) + 100.0 * i) / STEPS)
        response = await client.post("/predict/anomaly", json={**body, "host": "auto"})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    for a in answers:
        assert a["host"] == "auto"
        assert a["threshold"] == HOST_THRESHOLD
        assert a["forest_score"] is not None and a["forest_threshold"] > HOST_THRESHOLD
        layers = layer_scores(a)
        assert a["score"] == pytest.approx(max(layers), abs=1e-12)
        assert a["is_anomaly"] == (a["score"] >= HOST_THRESHOLD)
    # Somewhere on the way up both layers are unusual together and the joint p decides the
    # score: higher than either layer's own (a predict without the join would answer less).
    decided = [a for a in answers if (s := layer_scores(a))[2] > max(s[:2]) + 1e-6]
    trace = [(round(a["per_metric_score"], 6), round(a["forest_score"], 6)) for a in answers]
    assert decided, trace
    # ... and the sweep reaches a sample the host's threshold flags.
    assert answers[-1]["is_anomaly"], trace
