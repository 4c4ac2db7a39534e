"""The trainer's failure prediction over HTTP: train, predict, the scoring loop, incidents.

Real SQLite and PostgreSQL; data through the generator and store_frame; a real webhook
receiver on loopback. Models are small (few rounds, short synthetic histories)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app
from services.trainer.failure import artifact
from services.trainer.failure.definition import FailureDefinition
from services.trainer.failure.features import FeatureSpec
from services.trainer.failure.model import TrainParams, history_from_frame, train
from services.trainer.failure.service import FailureService
from services.trainer.failure.training import MODEL_NAME, MODEL_TYPE
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared import registry
from shared.clock import utcnow
from shared.settings import Settings
from shared.tables import failure_predictions, metrics_history, ml_models
from shared.workers import run_in
from tests.conftest import app_client, served
from tests.shared.incidents.conftest import Receiver

FAST = {"use_synthetic": True, "synthetic_days": 14, "num_boost_round": 30}


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"failure_scoring_interval": 0.05, "scoring_interval": 0.5})


@pytest.fixture
async def client(fast_settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(fast_settings, engine=engine)) as c:
        yield c


# Both the model's data and the leak replayed to it are generated from a fixed time (the
# replay is then shifted to end now): the model's figures do not depend on the hour.
FIXED_START = datetime(2026, 1, 5, tzinfo=UTC)


@lru_cache(maxsize=1)
def model_blob() -> bytes:
    """A small model trained in process on two synthetic weeks (seed 42), without the time of
    day among its features: the leak it is shown is replayed at whatever hour the test runs,
    and two weeks of synthetic scenarios at random hours would teach it a calendar."""
    frame = SyntheticDataGenerator(seed=42).generate_full_training_set(14, start=FIXED_START)
    history = history_from_frame(frame)
    definition = FailureDefinition()
    model = train(
        [history],
        definition=definition,
        spec=FeatureSpec.for_metrics(history.metrics, definition.conditions, time_of_day=False),
        params=TrainParams(num_boost_round=30),
    )
    return artifact.dump(model)


async def install(engine: AsyncEngine, host: str | None) -> int:
    """Store and activate the small model for ``host`` (None: the fleet model)."""
    blob = model_blob()
    now = utcnow()
    async with engine.begin() as conn:
        record = await registry.insert_model(
            conn,
            name=MODEL_NAME,
            model_type=MODEL_TYPE,
            artifact=blob,
            artifact_format=artifact.ARTIFACT_FORMAT,
            parameters={"host": host},
            metrics={},
            host=host,
            training_start=now - timedelta(days=14),
            training_end=now,
            sample_count=14 * 1440,
        )
        await registry.activate(conn, record.id)
    return record.id


@lru_cache(maxsize=1)
def leak_replay() -> tuple[pd.DataFrame, int, int]:
    """Synthetic rows around a memory leak of the model's own training weeks (seed 42: these
    tests are of the service's mechanics, the model's quality is the benchmark's), shifted to
    end a minute ago: the frame, the row where the leak starts and the row of its restart."""
    frame = SyntheticDataGenerator(seed=42).generate_full_training_set(14, start=FIXED_START)
    leak = (frame["label"] == "memory_leak").to_numpy()
    first = int(leak.argmax())
    while first < 120:
        first = first + 1 + int(leak[first + 1 :].argmax())  # a leak with 2 h before it
    last = first + int((~leak[first:]).argmax()) - 1  # the restart: its last labelled row
    part = frame.iloc[first - 120 : last + 60].reset_index(drop=True)
    shift = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=1)
    part["timestamp"] = part["timestamp"] + (shift - part["timestamp"].iloc[-1])
    return part, 120, last - first + 120


async def store(engine: AsyncEngine, frame: pd.DataFrame, host: str) -> None:
    async with engine.begin() as conn:
        await store_frame(conn, frame, host=host)


async def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


# -- training ------------------------------------------------------------------------


async def test_training_on_synthetic_data_stores_an_active_version_with_its_evaluation(
    client: httpx.AsyncClient, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="autofix_ml.events")
    response = await client.post("/train/failure-predictor", json=FAST)
    assert response.status_code == 200, response.text
    body = response.json()
    model = body["model"]
    assert body["activated"] is True and model["status"] == "active"
    assert (model["name"], model["model_type"], model["host"]) == (
        "failure_predictor",
        "lightgbm",
        "synthetic",
    )
    assert body["synthetic_generated"] == 14 * 1440 and body["hosts"] == ["synthetic"]
    assert model["sample_count"] == pytest.approx(14 * 1440 * 0.8, abs=2)
    evaluation = model["metrics"]["evaluation"]
    assert "onset of a failure state" in evaluation["definition"]
    assert set(evaluation["pr_auc"]) == {"15", "30", "60"}
    assert {"trend_breach", "anomaly", "persistence"} == set(evaluation["baselines"])
    assert evaluation["model"]["events"] > 0  # the held-out stretch holds failures
    assert {"precision", "false_per_host_day", "per_kind"} <= set(evaluation["model"])
    # where the time went: the fit and the held-out evaluation (no active version yet)
    assert set(evaluation["seconds"]) == {"train", "evaluate"}
    assert all(v > 0 for v in evaluation["seconds"].values())

    # the scoring loop predicts the host of the new model (its newest sample, 3 horizons)
    async def predicted() -> bool:
        found = (await client.get("/failure-predictions", params={"host": "synthetic"})).json()
        return bool(found["count"] == 3)

    await wait_for(predicted)
    # a host with neither its own model nor a fleet one is told so, by name, and how to train
    other = await client.post("/predict/failure", json={"host": "web-9"})
    assert other.status_code == 409
    assert "web-9" in other.json()["detail"] and "fleet" in other.json()["detail"]
    # a second version is compared with the active one on the same held-out stretch and
    # replaces it unless worse; the host synthetic has its 14 days: trained on again as they
    # are, not generated anew (the same rows, ids and all)
    rows = await synthetic_rows(engine)
    assert rows[0] == 14 * 1440
    again = (await client.post("/train/failure-predictor", json=FAST)).json()
    assert again["synthetic_generated"] == 0 and again["hosts"] == ["synthetic"]
    assert await synthetic_rows(engine) == rows
    assert again["model"]["sample_count"] == model["sample_count"]
    assert again["model"]["training_start"] == model["training_start"]
    assert again["previous_model_id"] == model["id"]
    assert "vs active" in again["reason"]
    assert again["activated"] is again["reason"].startswith("not worse")
    assert caplog.records, "no event logged"
    events = [(r.event, r.fields) for r in caplog.records if hasattr(r, "event")]
    trained = [f["model_id"] for e, f in events if e == "model_trained"]
    assert trained == [model["id"], again["model"]["id"]]
    assert model["id"] in [f["model_id"] for e, f in events if e == "model_activated"]
    assert again["evaluation"]["seconds"]["evaluate_active"] > 0


async def synthetic_rows(engine: AsyncEngine) -> tuple[int, int, int]:
    """The host synthetic's stored samples: their count and their lowest and highest ids."""
    h = metrics_history.c
    query = sa.select(sa.func.count(), sa.func.min(h.id), sa.func.max(h.id))
    async with engine.connect() as conn:
        row = (await conn.execute(query.where(h.host == "synthetic"))).one()
    return int(row[0]), int(row[1]), int(row[2])


async def test_a_short_synthetic_host_is_generated_again(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    # two days under the host synthetic: under the 7-day minimum, so use_synthetic generates
    start = utcnow().replace(second=0, microsecond=0) - timedelta(days=40)
    await store(
        engine,
        SyntheticDataGenerator(seed=3).generate_full_training_set(2, start=start),
        "synthetic",
    )
    body = (await client.post("/train/failure-predictor", json=FAST)).json()
    assert body["synthetic_generated"] == 14 * 1440 and body["hosts"] == ["synthetic"]
    assert (await synthetic_rows(engine))[0] == 16 * 1440  # the old days are kept ...
    # ... and not trained on: the generated fortnight only, its last 20 % held out
    assert body["model"]["sample_count"] == pytest.approx(14 * 1440 * 0.8, abs=2)


async def test_short_history_needs_use_synthetic_and_bad_fields_are_named(
    client: httpx.AsyncClient,
) -> None:
    refused = await client.post("/train/failure-predictor", json={"host": "nobody"})
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail.startswith("history too short: host nobody has fewer than 10080 samples")
    # use_synthetic is named for what it does: the host synthetic trained, not nobody helped
    assert "use_synthetic=true does not add to a host's samples" in detail
    assert "trains the host 'synthetic' instead" in detail and "30 days generated" in detail
    fleet = await client.post("/train/failure-predictor", json={"synthetic_days": 9})
    assert fleet.status_code == 409
    assert fleet.json()["detail"].startswith("history too short: no host has 10080 samples")
    assert (
        "on its stored samples if it has 7 days of them, else on 9 days generated first"
        in (fleet.json()["detail"])
    )
    bad = await client.post("/train/failure-predictor", json={"horizons": [7]})
    assert bad.status_code == 422 and "horizons" in bad.text
    none = await client.post("/predict/failure", json={"host": "web-1"})
    assert none.status_code == 409 and "train" in none.json()["detail"]


async def test_concurrent_training_is_refused(fast_settings: Settings, engine: AsyncEngine) -> None:
    app = create_app(fast_settings, engine=engine)
    async with app_client(app) as client:
        svc: FailureService = app.state.failure
        first = asyncio.create_task(client.post("/train/failure-predictor", json=FAST))
        await wait_for(lambda: _true(svc.training))
        second = await client.post("/train/failure-predictor", json=FAST)
        assert second.status_code == 409
        assert "already training" in second.json()["detail"]
        health = await client.get("/health")
        assert health.status_code == 200
        assert (await first).status_code == 200
    async with engine.connect() as conn:
        count = sa.select(sa.func.count()).select_from(ml_models)
        assert (await conn.execute(count.where(ml_models.c.name == MODEL_NAME))).scalar() == 1


async def _true(value: bool) -> bool:
    return value


async def test_the_training_process_is_ready_before_the_first_training(
    fast_settings: Settings, engine: AsyncEngine
) -> None:
    app = create_app(fast_settings.model_copy(update={"training_prewarm": True}), engine=engine)
    async with app_client(app) as client:
        warmed = await asyncio.wait_for(app.state.prewarm, 60)
        assert warmed != os.getpid()
        assert (await client.post("/train/failure-predictor", json=FAST)).status_code == 200
        svc: FailureService = app.state.failure
        # The training ran in the process started with the trainer, not in a new one.
        assert await run_in(svc.training_pool, os.getpid) == warmed


async def test_a_training_after_the_training_process_was_killed_runs_in_a_new_one(
    fast_settings: Settings, engine: AsyncEngine
) -> None:
    app = create_app(fast_settings.model_copy(update={"training_prewarm": True}), engine=engine)
    async with app_client(app) as client:
        warmed = await asyncio.wait_for(app.state.prewarm, 60)
        os.kill(warmed, signal.SIGKILL)  # killed while idle (out of memory, an operator)
        while True:  # until reaped: the pool then knows its process is gone
            try:
                os.kill(warmed, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.05)
        answer = await asyncio.wait_for(client.post("/train/failure-predictor", json=FAST), 120)
        assert answer.status_code == 200, answer.text
        svc: FailureService = app.state.failure
        assert await run_in(svc.training_pool, os.getpid) not in (warmed, os.getpid())


# -- prediction ----------------------------------------------------------------------


async def test_predict_the_latest_state_and_a_sample(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    model_id = await install(engine, None)  # the fleet model scores any host
    frame, leak_start, restart = leak_replay()
    await store(engine, frame.iloc[: restart - 10], "leaky")
    latest = await client.post("/predict/failure", json={"host": "leaky"})
    assert latest.status_code == 200, latest.text
    body = latest.json()
    assert body["model_id"] == model_id
    assert [h["horizon_minutes"] for h in body["horizons"]] == [15, 30, 60]
    assert all(0 <= h["probability"] <= 1 for h in body["horizons"])
    assert body["timestamp"].startswith(
        frame["timestamp"].iloc[restart - 11].strftime("%Y-%m-%dT%H:%M")
    )
    assert 55 <= body["samples_used"] <= 61
    # 170+ minutes into a leak, 10 from the restart: the 60-minute horizon is alarmed
    by_h = {h["horizon_minutes"]: h for h in body["horizons"]}
    assert by_h[60]["probability"] > 0.5
    assert body["contributions"] and all(c["text"] for c in body["contributions"])
    assert all(c["contribution"] > 0 and ":" in c["feature"] for c in body["contributions"])
    # one new sample after the stored ones: memory back to normal
    stamp = frame["timestamp"].iloc[restart - 10].isoformat()
    sample = {"timestamp": stamp, "memory_usage_percent": 30.0}
    after = await client.post("/predict/failure", json={"host": "leaky", "sample": sample})
    assert after.status_code == 200, after.text
    moved = {h["horizon_minutes"]: h["probability"] for h in after.json()["horizons"]}
    assert after.json()["timestamp"].startswith(stamp[:16])
    assert moved != {h: v["probability"] for h, v in by_h.items()}
    bad = await client.post(
        "/predict/failure", json={"host": "leaky", "sample": {"cpu_usage_percent": -5}}
    )
    assert bad.status_code == 422 and "cpu_usage_percent" in bad.text


# -- the scoring loop and incidents ----------------------------------------------------


async def test_a_memory_leak_opens_a_predicted_failure_incident_that_resolves_after(
    fast_settings: Settings, engine: AsyncEngine
) -> None:
    receiver = Receiver()
    async with served(receiver.app) as url:
        cfg = fast_settings.model_copy(update={"webhook_url": f"{url}/hook"})
        app = create_app(cfg, engine=engine)
        async with app_client(app) as client:
            model_id = await install(engine, "leaky")
            frame, leak_start, restart = leak_replay()
            await store(engine, frame.iloc[:leak_start], "leaky")

            async def first_prediction() -> list[dict[str, Any]]:
                found = await client.get("/failure-predictions", params={"host": "leaky"})
                return list(found.json()["predictions"])

            (*_,) = rows = await wait_for(first_prediction)
            assert len(rows) == 3 and {r["model_id"] for r in rows} == {model_id}
            # the leak, up to a quarter of an hour before its restart
            await store(engine, frame.iloc[leak_start : restart - 15], "leaky")

            async def open_incidents() -> list[dict[str, Any]]:
                body = (await client.get("/incidents", params={"type": "predicted_failure"})).json()
                return [i for i in body["incidents"] if i["status"] == "open"]

            (incident,) = await wait_for(open_incidents)
            assert incident["dedup_key"] == "predicted_failure:leaky"
            assert "predicted to fail within" in incident["title"]
            assert incident["details"]["model_id"] == model_id
            assert incident["details"]["contributions"]
            assert incident["details"]["probabilities"]["60"] >= 0.5

            async def sent(status: str) -> bool:
                return any(
                    b["id"] == incident["id"] and b["status"] == status for b in receiver.bodies
                )

            assert await wait_for(lambda: sent("open"))
            # it was warned ahead of the restart
            warned = await client.get(
                "/failure-predictions",
                params={"host": "leaky", "min_probability": 0.5, "limit": 10_000},
            )
            first_warning = min(
                p["timestamp"] for p in warned.json()["predictions"] if p["will_fail"]
            )
            restart_at = frame["timestamp"].iloc[restart]
            lead = restart_at - pd.Timestamp(first_warning)
            assert lead >= timedelta(minutes=15)
            # the restart and an hour after it: the probability falls, the incident resolves
            await store(engine, frame.iloc[restart - 15 :], "leaky")

            async def resolved() -> dict[str, Any] | None:
                found = (await client.get(f"/incidents/{incident['id']}")).json()
                return found if found["status"] == "resolved" else None

            await wait_for(resolved)

            assert await wait_for(lambda: sent("resolved"))
            listed = (await client.get("/incidents", params={"type": "predicted_failure"})).json()
            assert listed["count"] == 1
    async with engine.connect() as conn:
        written = sa.select(sa.func.count()).select_from(failure_predictions)
        # every sample from the first scored one on, three horizons each
        assert (await conn.execute(written)).scalar() == 3 * (len(frame) - leak_start + 1)
