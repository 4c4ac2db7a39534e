"""The metric catalogue: the 14 metrics every sample carries, their units, bounds and alert thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricGroup = Literal["system", "application", "derived"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    group: MetricGroup
    unit: str
    description: str
    is_percent: bool = False
    non_negative: bool = True
    is_integer: bool = False
    # Default alert threshold for forecast breach alerts; None means "no default threshold".
    threshold: float | None = None


METRICS: tuple[Metric, ...] = (
    Metric(
        "cpu_usage_percent",
        "system",
        "%",
        "Overall CPU utilisation",
        is_percent=True,
        threshold=85.0,
    ),
    Metric("memory_usage_mb", "system", "MB", "RAM in use"),
    Metric(
        "memory_usage_percent",
        "system",
        "%",
        "RAM in use as a share of the total",
        is_percent=True,
        threshold=90.0,
    ),
    Metric("disk_usage_percent", "system", "%", "Disk space used", is_percent=True, threshold=90.0),
    Metric("disk_io_read_mb", "system", "MB", "Disk read in the interval"),
    Metric("disk_io_write_mb", "system", "MB", "Disk written in the interval"),
    Metric(
        "active_requests",
        "application",
        "requests",
        "Concurrent HTTP requests",
        is_integer=True,
        threshold=500.0,
    ),
    Metric("error_rate", "application", "errors/s", "Errors per second", threshold=0.1),
    Metric("response_time_p50", "application", "ms", "Median latency", threshold=1000.0),
    Metric("response_time_p95", "application", "ms", "95th percentile latency", threshold=2000.0),
    Metric("response_time_p99", "application", "ms", "99th percentile latency", threshold=5000.0),
    Metric(
        "cpu_rate_of_change",
        "derived",
        "%/min",
        "CPU percentage points change per minute",
        non_negative=False,
    ),
    Metric(
        "memory_rate_of_change",
        "derived",
        "%/min",
        "Memory percentage points change per minute",
        non_negative=False,
    ),
    Metric(
        "error_rate_trend",
        "derived",
        "errors/s per min",
        "Error rate change per minute",
        non_negative=False,
    ),
)

METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
METRICS_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
SYSTEM_METRICS = tuple(m.name for m in METRICS if m.group == "system")
APPLICATION_METRICS = tuple(m.name for m in METRICS if m.group == "application")
DERIVED_METRICS = tuple(m.name for m in METRICS if m.group == "derived")

LABELS: tuple[str, ...] = ("normal", "cpu_spike", "memory_leak", "error_storm")


def get_metric(name: str) -> Metric:
    """Look a metric up by name; raises KeyError listing the valid names."""
    try:
        return METRICS_BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}"
        ) from None
