"""Application metrics from Prometheus text: parsing against real prometheus_client output."""

from __future__ import annotations

import math

import pytest

from services.api.metrics.middleware import RequestMetrics
from services.collector.sampling.prometheus import (
    ScrapeSnapshot,
    application_metrics,
    histogram_quantile,
    parse_prometheus_text,
)

NAMES = {
    "active_metric": "autofix_http_requests_in_progress",
    "errors_metric": "autofix_http_request_errors_total",
    "latency_metric": "autofix_http_request_duration_seconds",
}


def render(metrics: RequestMetrics) -> str:
    return bytes(metrics.render().body).decode()


def parse(metrics: RequestMetrics, at: float) -> ScrapeSnapshot:
    return parse_prometheus_text(render(metrics), at=at, **NAMES)


def test_parse_sums_every_label_set():
    metrics = RequestMetrics()
    metrics.in_progress.labels("serving").inc(3)
    metrics.errors.labels("/a", "serving").inc(3)
    metrics.errors.labels("/b", "serving").inc(2)
    for _ in range(4):
        metrics.latency.labels("/a", "serving").observe(0.003)  # bucket le=0.005
    metrics.latency.labels("/b", "serving").observe(0.2)  # bucket le=0.25
    metrics.latency.labels("/b", "serving").observe(60.0)  # only le=+Inf

    snapshot = parse(metrics, at=12.5)

    assert snapshot.at == 12.5
    assert snapshot.active_requests == 3
    assert snapshot.errors_total == 5  # the _created samples are not counted
    buckets = dict(snapshot.latency_buckets)
    assert [le for le, _ in snapshot.latency_buckets] == sorted(buckets)
    assert buckets[0.0025] == 0
    assert buckets[0.005] == 4
    assert buckets[0.1] == 4
    assert buckets[0.25] == 5
    assert buckets[30.0] == 5
    assert buckets[math.inf] == 6


def test_parse_of_text_without_the_metrics_is_empty():
    snapshot = parse_prometheus_text("# nothing here\nother_metric 1.0\n", at=0.0, **NAMES)
    assert snapshot.active_requests is None
    assert snapshot.errors_total is None
    assert snapshot.latency_buckets == []


def test_parse_with_configured_names():
    metrics = RequestMetrics()
    metrics.requests.labels("GET", "/x", "200", "serving").inc(7)
    snapshot = parse_prometheus_text(
        render(metrics),
        active_metric="autofix_http_requests_in_progress",
        errors_metric="autofix_http_requests_total",  # count every request as an "error"
        latency_metric="no_such_histogram",
        at=0.0,
    )
    assert snapshot.errors_total == 7
    assert snapshot.latency_buckets == []


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.2, 0.05),  # inside the first bucket, interpolated from 0
        (0.4, 0.1),  # rank 40 is the top of the first bucket
        (0.6, 0.15),  # halfway through (0.1, 0.2]
        (0.9, 0.2 + 0.2 * 10 / 16),  # 10 of the 16 samples in (0.2, 0.4]
        (0.99, 0.4),  # rank 99 falls in +Inf: the highest finite bound
    ],
)
def test_histogram_quantile_interpolates_like_prometheus(q, expected):
    buckets = [(0.1, 40.0), (0.2, 80.0), (0.4, 96.0), (math.inf, 100.0)]
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_without_data_is_none():
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_application_metrics_cover_only_the_interval():
    metrics = RequestMetrics()
    for _ in range(100):
        metrics.latency.labels("/fast", "serving").observe(0.003)
    metrics.errors.labels("/a", "serving").inc(10)
    prev = parse(metrics, at=100.0)

    for _ in range(100):
        metrics.latency.labels("/slow", "serving").observe(0.7)  # bucket (0.5, 1.0]
    metrics.errors.labels("/a", "serving").inc(3)
    metrics.errors.labels("/b", "serving").inc(2)
    metrics.in_progress.labels("serving").inc(4)
    cur = parse(metrics, at=110.0)

    out = application_metrics(prev, cur)
    assert out["active_requests"] == 4
    assert out["error_rate"] == pytest.approx(5 / 10.0)
    # Only the 100 slow requests of the interval count, spread evenly over (0.5, 1.0] s.
    assert out["response_time_p50"] == pytest.approx(750.0)
    assert out["response_time_p95"] == pytest.approx(975.0)
    assert out["response_time_p99"] == pytest.approx(995.0)


def test_application_metrics_without_traffic_have_null_latency():
    metrics = RequestMetrics()
    metrics.latency.labels("/a", "serving").observe(0.01)
    snapshot = parse(metrics, at=0.0)
    later = parse(metrics, at=60.0)
    out = application_metrics(snapshot, later)
    assert out["error_rate"] == 0.0
    assert out["response_time_p50"] is None
    assert out["response_time_p99"] is None


def test_application_metrics_after_a_restart_count_from_zero():
    before = RequestMetrics()
    before.errors.labels("/a", "serving").inc(50)
    for _ in range(50):
        before.latency.labels("/a", "serving").observe(0.003)
    prev = parse(before, at=0.0)

    restarted = RequestMetrics()  # counters start again from zero
    restarted.errors.labels("/a", "serving").inc(6)
    for _ in range(10):
        restarted.latency.labels("/a", "serving").observe(0.7)
    out = application_metrics(prev, parse(restarted, at=2.0))

    assert out["error_rate"] == pytest.approx(3.0)
    assert out["response_time_p50"] == pytest.approx(750.0)
