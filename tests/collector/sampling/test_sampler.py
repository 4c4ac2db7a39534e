"""Taking a sample: psutil, a scrape of a real metrics endpoint, the rates of change."""

from __future__ import annotations

import asyncio
import logging
import math

import httpx
import pytest
from fastapi import FastAPI, Response

from services.api.metrics.middleware import RequestMetrics
from services.collector.sampling.sampler import MetricsCollector, derived_rates
from shared.catalogue import APPLICATION_METRICS, METRIC_NAMES, SYSTEM_METRICS
from shared.settings import Settings
from tests.conftest import served


def test_derived_rates_are_per_minute_changes():
    prev = {"cpu_usage_percent": 10.0, "memory_usage_percent": 50.0, "error_rate": 0.1}
    cur = {"cpu_usage_percent": 40.0, "memory_usage_percent": 47.0, "error_rate": 0.4}
    assert derived_rates(prev, cur, minutes=0.5) == pytest.approx(
        {"cpu_rate_of_change": 60.0, "memory_rate_of_change": -6.0, "error_rate_trend": 0.6}
    )


def test_derived_rates_of_the_first_sample_are_zero_and_of_missing_values_null():
    cur = {"cpu_usage_percent": 40.0, "memory_usage_percent": 47.0, "error_rate": None}
    assert derived_rates(None, cur, minutes=None) == {
        "cpu_rate_of_change": 0.0,
        "memory_rate_of_change": 0.0,
        "error_rate_trend": 0.0,
    }
    prev = {"cpu_usage_percent": 40.0, "memory_usage_percent": 47.0, "error_rate": 0.2}
    assert derived_rates(prev, cur, minutes=1.0)["error_rate_trend"] is None


def metrics_app(metrics: RequestMetrics, *, status: int = 200) -> FastAPI:
    """A tiny app serving `metrics` in Prometheus text format, as the gateway does."""
    app = FastAPI()

    @app.get("/metrics")
    async def endpoint() -> Response:
        response = metrics.render()
        response.status_code = status
        return response

    return app


def collector_settings(scrape_url: str) -> Settings:
    return Settings(hostname="sampler-host", scrape_url=scrape_url, scrape_timeout=2.0)


def assert_sane_system_metrics(sample: dict[str, object]) -> None:
    for name in ("cpu_usage_percent", "memory_usage_percent", "disk_usage_percent"):
        value = sample[name]
        assert isinstance(value, float) and 0.0 <= value <= 100.0, name
    memory = sample["memory_usage_mb"]
    assert isinstance(memory, float) and memory > 0
    for name in ("disk_io_read_mb", "disk_io_write_mb"):
        value = sample[name]
        assert value is None or (isinstance(value, float) and value >= 0), name


async def test_collect_reads_the_system_and_a_real_metrics_endpoint():
    metrics = RequestMetrics()
    metrics.errors.labels("/a", "serving").inc(100)
    for _ in range(20):
        metrics.latency.labels("/a", "serving").observe(0.003)
    async with served(metrics_app(metrics)) as url, httpx.AsyncClient() as client:
        collector = MetricsCollector(collector_settings(f"{url}/metrics"), client)
        await collector.prime()
        metrics.in_progress.labels("serving").inc(2)
        metrics.errors.labels("/a", "serving").inc(4)
        for _ in range(10):
            metrics.latency.labels("/b", "serving").observe(0.7)
        sample = await collector.collect()

    assert set(sample) == {"timestamp", "host", "label", *METRIC_NAMES}
    assert sample["host"] == "sampler-host"
    assert sample["label"] == "normal"
    assert sample["timestamp"].tzinfo is not None
    assert_sane_system_metrics(sample)
    assert sample["active_requests"] == 2
    assert sample["error_rate"] > 0  # 4 errors over the time since prime()
    assert sample["response_time_p50"] == pytest.approx(750.0)
    assert sample["response_time_p99"] == pytest.approx(995.0)
    assert sample["cpu_rate_of_change"] == 0.0  # first sample: no previous one


async def test_second_sample_has_rates_from_the_first():
    metrics = RequestMetrics()
    async with served(metrics_app(metrics)) as url, httpx.AsyncClient() as client:
        collector = MetricsCollector(collector_settings(f"{url}/metrics"), client)
        await collector.prime()
        first = await collector.collect()
        metrics.errors.labels("/a", "serving").inc(30)
        second = await collector.collect()

    assert first["error_rate"] == 0.0
    assert second["error_rate"] > 0
    # The trend is the error rate's change divided by a positive number of minutes.
    assert second["error_rate_trend"] > 0
    for rate, metric in (
        ("cpu_rate_of_change", "cpu_usage_percent"),
        ("memory_rate_of_change", "memory_usage_percent"),
    ):
        change = second[metric] - first[metric]
        assert math.copysign(1, second[rate]) == math.copysign(1, change) or change == 0
        assert (second[rate] == 0) == (change == 0)


@pytest.mark.parametrize("target", ["refused", "500"])
async def test_scrape_failure_gives_null_application_metrics(target, caplog):
    caplog.set_level(logging.WARNING, logger="autofix_ml.collector")
    async with (
        served(metrics_app(RequestMetrics(), status=500)) as url,
        httpx.AsyncClient() as client,
    ):
        scrape_url = "http://127.0.0.1:9/metrics" if target == "refused" else f"{url}/metrics"
        collector = MetricsCollector(collector_settings(scrape_url), client)
        await collector.prime()
        first = await collector.collect()
        second = await collector.collect()

    for sample in (first, second):
        assert_sane_system_metrics(sample)
        assert all(sample[name] is None for name in APPLICATION_METRICS)
        assert all(sample[name] is not None for name in SYSTEM_METRICS if "io" not in name)
    assert second["error_rate_trend"] is None
    warnings = [r for r in caplog.records if "scrape of" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not at every sample


async def test_scrape_recovers_after_a_failure():
    metrics = RequestMetrics()
    app = metrics_app(metrics)
    async with served(app) as url, httpx.AsyncClient() as client:
        settings = collector_settings("http://127.0.0.1:9/metrics")
        collector = MetricsCollector(settings, client)
        await collector.prime()
        down = await collector.collect()
        settings.scrape_url = f"{url}/metrics"
        metrics.in_progress.labels("serving").inc(1)
        up = await collector.collect()
    assert down["active_requests"] is None
    assert up["active_requests"] == 1


async def test_a_slow_training_call_does_not_raise_the_scraped_p95():
    """The gateway in front of a trainer whose training answers after 1.5 s: the collector
    records the serving routes' latency only; without the label filter it would see 1.5 s."""
    from services.api.app import create_app as create_gateway

    slow_trainer = FastAPI()

    @slow_trainer.post("/train/anomaly-detector")
    async def train() -> Response:
        await asyncio.sleep(1.5)
        return Response('{"detail": "history too short"}', 409, media_type="application/json")

    @slow_trainer.get("/models")
    async def models() -> dict[str, object]:
        return {"models": [], "count": 0}

    async with served(slow_trainer) as trainer_url:
        # No database behind this gateway: keys off (with keys on it would fail closed, 401).
        gateway = create_gateway(Settings(trainer_url=trainer_url, http_timeout=5.0, auth="off"))
        async with served(gateway) as url, httpx.AsyncClient(base_url=url) as client:
            serving = MetricsCollector(collector_settings(f"{url}/metrics"), client)
            everything = MetricsCollector(
                collector_settings(f"{url}/metrics").model_copy(update={"scrape_labels": {}}),
                client,
            )
            await serving.prime()
            await everything.prime()
            trained = await client.post("/api/ml/train/anomaly-detector", json={})
            for _ in range(5):
                assert (await client.get("/api/ml/models")).status_code == 200
            with_filter = await serving.collect()
            without = await everything.collect()
    assert trained.status_code == 409
    assert with_filter["response_time_p95"] is not None
    assert with_filter["response_time_p95"] < 250.0  # the five reads of /models
    assert without["response_time_p95"] >= 1000.0  # the training call, had it counted
