"""Every service's /metrics, scraped over real HTTP from the real services: the series the
README promises, token-free and key-free, and counters that follow what happened."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.incidents.repository import raise_incident
from shared.logs import JsonFormatter, PlainFormatter, event
from shared.loops import BackgroundLoop
from shared.settings import Settings
from tests.monitoring import TOKEN, families, monitored_stack, sample_value, scrape
from tests.trainer.anomaly.test_anomaly_service import store_history

# Family names as the parser gives them (counters without _total).
EVERY_SERVICE = {
    "autofix_up",
    "autofix_process_start_time_seconds",
    "autofix_http_requests",
    "autofix_http_request_errors",
    "autofix_http_request_duration_seconds",
    "autofix_http_requests_in_progress",
    "autofix_incidents_opened",
    "autofix_incidents_resolved",
    "autofix_models_trained",
    "autofix_training_duration_seconds",
    "autofix_loop_running",
    "autofix_loop_stalled",
    "autofix_loop_runs",
    "autofix_loop_failures",
    "autofix_loop_last_success_timestamp_seconds",
    "autofix_loop_seconds_since_success",
    "autofix_db_pool_size",
    "autofix_db_pool_checked_out",
}
PER_SERVICE = {
    "api": set(),
    "collector": {
        "autofix_samples_buffered",
        "autofix_samples_dropped",
        "autofix_samples_written",
        "autofix_queue_depth",
    },
    "trainer": {
        "autofix_scoring_lag_seconds",
        "autofix_scoring_newest_sample_timestamp_seconds",
        "autofix_scoring_newest_scored_timestamp_seconds",
        "autofix_anomaly_scores_pending",
        "autofix_anomaly_scores_dropped",
        "autofix_webhook_deliveries",
        "autofix_queue_depth",
    },
    "forecaster": {"autofix_webhook_deliveries", "autofix_queue_depth"},
}
QUEUES = {"collector": {"sample_buffer"}, "trainer": {"webhook", "score_writes"}}
LOOPS = {"collector": {"retention"}, "trainer": {"anomaly-scoring", "webhook"}}


async def test_every_service_serves_its_series_without_token_or_key(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with monitored_stack(settings, engine) as stack, httpx.AsyncClient(timeout=30) as client:
        texts = {name: await scrape(client, url) for name, url in stack.urls.items()}
    for name, text in texts.items():
        found = families(text)
        missing = (EVERY_SERVICE | PER_SERVICE[name]) - found.keys()
        assert not missing, (name, sorted(missing))
        assert sample_value(text, "autofix_up", service=name) == 1.0
        queues = {dict(labels)["queue"] for labels in found.get("autofix_queue_depth", set())}
        assert QUEUES.get(name, set()) <= queues, (name, queues)
        loops = {dict(labels).get("loop") for labels in found["autofix_loop_running"]}
        assert LOOPS.get(name, set()) <= loops, (name, loops)
    for name in ("trainer", "forecaster"):
        outcomes = {dict(x)["outcome"] for x in families(texts[name])["autofix_webhook_deliveries"]}
        assert outcomes == {"sent", "failed", "dropped"}


async def test_requests_incidents_and_deliveries_are_counted(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with monitored_stack(settings, engine) as stack, httpx.AsyncClient(timeout=30) as client:
        before = await scrape(client, stack.urls["trainer"])
        opened_before = sample_value(before, "autofix_incidents_opened_total", type="ML_ANOMALY")
        resolved_before = sample_value(
            before, "autofix_incidents_resolved_total", type="ML_ANOMALY"
        )
        async with engine.begin() as conn:
            incident, _ = await raise_incident(
                conn,
                type="ML_ANOMALY",
                host="web-1",
                dedup_key="observability-test",
                severity="high",
                title="test incident",
            )
        resolved = await client.post(
            f"{stack.urls['api']}/api/ml/incidents/{incident.id}/resolve",
            headers={"Authorization": f"Bearer {stack.key}"},
        )
        assert resolved.status_code == 200, resolved.text
        refused = await client.get(stack.urls["trainer"] + "/incidents")  # no internal token
        assert refused.status_code == 401
        for _ in range(100):  # the webhook is sent from a background loop
            if stack.webhook_calls:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the loop counts after the receiver answered
        trainer = await scrape(client, stack.urls["trainer"])
        gateway = await scrape(client, stack.urls["api"])
    assert opened_before is not None and resolved_before is not None
    assert sample_value(trainer, "autofix_incidents_opened_total", type="ML_ANOMALY") == (
        opened_before + 1
    )
    assert sample_value(trainer, "autofix_incidents_resolved_total", type="ML_ANOMALY") == (
        resolved_before + 1
    )
    assert stack.webhook_calls, "the webhook receiver got nothing"
    assert sample_value(trainer, "autofix_webhook_deliveries_total", outcome="sent") == 1.0
    assert (
        sample_value(
            trainer,
            "autofix_http_requests_total",
            route="/incidents/{incident_id}/resolve",
            status="200",
        )
        == 1.0
    )
    assert sample_value(trainer, "autofix_http_requests_total", status="401") == 1.0
    assert (
        sample_value(
            gateway,
            "autofix_http_requests_total",
            route="/api/ml/incidents/{incident_id}/resolve",
            status="200",
        )
        == 1.0
    )
    assert TOKEN not in trainer


def _record(logger: logging.Logger) -> logging.LogRecord:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        event(logger, "model_activated", "model %s activated", 7, model_id=7, host="web-1")
    finally:
        logger.removeHandler(handler)
    return records[0]


def test_json_log_lines_carry_the_event_and_its_fields() -> None:
    record = _record(logging.getLogger("autofix_ml.test_observability"))
    body = json.loads(JsonFormatter().format(record))
    assert body["event"] == "model_activated"
    assert body["message"] == "model 7 activated"
    assert body["model_id"] == 7 and body["host"] == "web-1"
    assert body["level"] == "info" and body["time"].endswith("+00:00")


def test_plain_log_lines_append_the_fields() -> None:
    record = _record(logging.getLogger("autofix_ml.test_observability"))
    line = PlainFormatter().format(record)
    assert line.endswith("model 7 activated event=model_activated model_id=7 host=web-1")


async def test_a_failing_loop_pass_logs_a_loop_failed_event() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    async def step() -> float | None:
        raise RuntimeError("database away")

    logger = logging.getLogger("autofix_ml.loops")
    handler = Keep()
    logger.addHandler(handler)
    loop = BackgroundLoop("scoring-test", step, interval=60.0)
    try:
        loop.start()
        for _ in range(200):
            if records:
                break
            await asyncio.sleep(0.01)
    finally:
        await loop.stop()
        logger.removeHandler(handler)
    body = json.loads(JsonFormatter().format(records[0]))
    assert body["event"] == "loop_failed" and body["loop"] == "scoring-test"
    assert body["level"] == "error" and "RuntimeError: database away" in body["exception"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_trainings_activations_and_rollbacks_are_counted_and_logged(
    settings: Settings, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="autofix_ml.events")
    family = {"family": "anomaly_detector"}
    async with monitored_stack(settings, engine) as stack, httpx.AsyncClient(timeout=120) as client:
        gateway = stack.urls["api"] + "/api/ml"
        headers = {"Authorization": f"Bearer {stack.key}"}
        before = await scrape(client, stack.urls["trainer"])
        await store_history(engine)
        ids = []
        for _ in range(2):
            trained = await client.post(
                gateway + "/train/anomaly-detector",
                json={"n_estimators": 30, "force": True},
                headers=headers,
            )
            assert trained.status_code == 200, trained.text
            ids.append(trained.json()["model"]["id"])
        back = await client.post(f"{gateway}/models/{ids[0]}/activate", headers=headers)
        assert back.status_code == 200, back.text
        after = await scrape(client, stack.urls["trainer"])

    def delta(name: str) -> float:
        return (sample_value(after, name, **family) or 0) - (
            sample_value(before, name, **family) or 0
        )

    assert delta("autofix_models_trained_total") == 2
    assert delta("autofix_training_duration_seconds_count") == 2
    assert delta("autofix_training_duration_seconds_sum") > 0
    events = [(r.event, r.fields) for r in caplog.records if hasattr(r, "event")]
    assert [f["model_id"] for e, f in events if e == "model_trained"] == ids
    assert ("model_activated", ids[1]) in [(e, f["model_id"]) for e, f in events]
    rolled = [f for e, f in events if e == "model_rolled_back"]
    assert len(rolled) == 1 and rolled[0]["model_id"] == ids[0]
    assert rolled[0]["previous_model_id"] == ids[1] and rolled[0]["reason"] == "by hand"
