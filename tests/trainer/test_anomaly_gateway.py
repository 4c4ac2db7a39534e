"""Anomaly detection through the gateway, with the services on real loopback ports."""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared.settings import Settings
from tests.api.test_gateway import stack
from tests.trainer.anomaly.test_anomaly_service import FOUR, SPIKE


async def test_train_and_predict_through_the_gateway(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        before = await s.gateway.post("/api/ml/predict/anomaly", json=FOUR)
        assert before.status_code == 409 and "train" in before.json()["detail"]
        # Four synthetic days ending now, as the quick start makes them: the sample predicted
        # follows the history (after a gap longer than the forest's look-back, an hour, the
        # forest judges a sample on its levels alone, and the per-metric layer, which the
        # scoring loop warms, is off in these settings).
        frame = SyntheticDataGenerator(seed=1).generate_full_training_set(4)
        async with engine.begin() as conn:
            await store_frame(conn, frame, host="train-host")
        trained = await s.gateway.post("/api/ml/train/anomaly-detector", json={"n_estimators": 30})
        assert trained.status_code == 200, trained.text
        model_id = trained.json()["model"]["id"]
        response = await s.gateway.post("/api/ml/predict/anomaly", json=SPIKE)
        assert response.status_code == 200, response.text
        body = response.json()
        # No host named: the host whose forest was trained last, named in the answer.
        assert body["model_id"] == model_id and body["is_anomaly"], json.dumps(body)
        assert body["host"] == "train-host"
        assert len(body["top_metrics"]) <= 3
        bad = await s.gateway.post("/api/ml/predict/anomaly", json={"cpu_usage_percent": 120})
        assert bad.status_code == 422
        assert [e["field"] for e in bad.json()["detail"]] == ["body.cpu_usage_percent"]
        rollback = await s.gateway.post(f"/api/ml/models/{model_id}/activate")
        assert rollback.status_code == 200
        assert (await s.gateway.post("/api/ml/models/424242/activate")).status_code == 404
        schema = (await s.gateway.get("/api/openapi.json")).json()
        for path in (
            "/api/ml/train/anomaly-detector",
            "/api/ml/predict/anomaly",
            "/api/ml/anomaly-scores",
            "/api/ml/anomaly-scores/{score_id}/feedback",
            "/api/ml/models/{model_id}/activate",
        ):
            assert path in schema["paths"]


async def test_predict_is_503_naming_the_trainer_when_it_is_down(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine, without="trainer") as s:
        response = await s.gateway.post("/api/ml/predict/anomaly", json=FOUR)
    assert response.status_code == 503
    assert "trainer" in response.json()["detail"]
