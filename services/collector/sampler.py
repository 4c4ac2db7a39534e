"""Taking one sample: system metrics from psutil, application metrics from a Prometheus endpoint.

Usage: `sample = await MetricsCollector(settings, client).collect()`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from shared.settings import Settings

log = logging.getLogger("autofix_ml.collector")

MIB = 1024 * 1024


@dataclass(slots=True)
class ScrapeSnapshot:
    """The cumulative values read from one scrape."""

    at: float
    active_requests: float | None = None
    errors_total: float | None = None
    # (upper bound, cumulative count) pairs, summed over every label set.
    latency_buckets: list[tuple[float, float]] = field(default_factory=list)


def parse_prometheus_text(
    text: str, *, active_metric: str, errors_metric: str, latency_metric: str, at: float
) -> ScrapeSnapshot:
    """Sum the gauge, the counter and the histogram buckets across all their label sets."""
    snapshot = ScrapeSnapshot(at=at)
    errors_base = errors_metric.removesuffix("_total")
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == active_metric:
            snapshot.active_requests = sum(s.value for s in family.samples)
        elif family.name in (errors_metric, errors_base):
            snapshot.errors_total = sum(
                s.value for s in family.samples if s.name in (errors_metric, errors_base)
            )
        elif family.name == latency_metric:
            for s in family.samples:
                if s.name == f"{latency_metric}_bucket":
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
    snapshot.latency_buckets = sorted(buckets.items())
    return snapshot


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count) buckets; None with no data."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def application_metrics(prev: ScrapeSnapshot, cur: ScrapeSnapshot) -> dict[str, float | None]:
    """Active requests, error rate (errors/s) and latency percentiles (ms) over the interval."""
    elapsed = max(cur.at - prev.at, 1e-9)
    out: dict[str, float | None] = {"active_requests": cur.active_requests}
    if cur.errors_total is not None:
        # A counter that went down means the target restarted: count from zero.
        base = prev.errors_total if prev.errors_total is not None else 0.0
        delta = cur.errors_total - base if cur.errors_total >= base else cur.errors_total
        out["error_rate"] = delta / elapsed
    else:
        out["error_rate"] = None
    prev_counts = dict(prev.latency_buckets)
    deltas = []
    reset = any(count < prev_counts.get(le, 0.0) for le, count in cur.latency_buckets)
    for le, count in cur.latency_buckets:
        deltas.append((le, count if reset else count - prev_counts.get(le, 0.0)))
    for name, q in (
        ("response_time_p50", 0.5),
        ("response_time_p95", 0.95),
        ("response_time_p99", 0.99),
    ):
        value = histogram_quantile(q, deltas)
        out[name] = None if value is None else value * 1000.0
    return out


class MetricsCollector:
    """Builds one sample of the 14 metrics; keeps the previous one for the rates of change."""

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient, *, disk_path: str = "/"
    ) -> None:
        self.settings = settings
        self.client = client
        self.disk_path = disk_path
        self._prev_sample: dict[str, Any] | None = None
        self._prev_at: float | None = None
        self._prev_io: tuple[float, float] | None = None
        self._prev_scrape: ScrapeSnapshot | None = None
        self._scrape_failing = False

    async def prime(self) -> None:
        """Take the baselines (CPU counters, disk IO, the first scrape) so the first sample has rates."""
        psutil.cpu_percent(interval=None)
        self._prev_io = self._disk_io()
        self._prev_scrape = await self._scrape()

    def _disk_io(self) -> tuple[float, float] | None:
        counters = psutil.disk_io_counters()
        if counters is None:
            return None
        return float(counters.read_bytes), float(counters.write_bytes)

    async def _scrape(self) -> ScrapeSnapshot | None:
        url = self.settings.effective_scrape_url()
        try:
            response = await self.client.get(url, timeout=self.settings.scrape_timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            if not self._scrape_failing:
                log.warning("scrape of %s failed (%s); application metrics are null", url, exc)
            self._scrape_failing = True
            return None
        if self._scrape_failing:
            log.info("scrape of %s works again", url)
        self._scrape_failing = False
        return parse_prometheus_text(
            response.text,
            active_metric=self.settings.scrape_active_requests_metric,
            errors_metric=self.settings.scrape_errors_metric,
            latency_metric=self.settings.scrape_latency_metric,
            at=time.monotonic(),
        )

    def system_metrics(self) -> dict[str, float | None]:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(self.disk_path)
        io = self._disk_io()
        read_mb = write_mb = None
        if io is not None and self._prev_io is not None:
            read_mb = max(io[0] - self._prev_io[0], 0.0) / MIB
            write_mb = max(io[1] - self._prev_io[1], 0.0) / MIB
        self._prev_io = io
        return {
            "cpu_usage_percent": psutil.cpu_percent(interval=None),
            "memory_usage_mb": (memory.total - memory.available) / MIB,
            "memory_usage_percent": memory.percent,
            "disk_usage_percent": disk.percent,
            "disk_io_read_mb": read_mb,
            "disk_io_write_mb": write_mb,
        }

    async def collect(self) -> dict[str, Any]:
        """One sample: timestamp, host, the 14 metrics, label 'normal'."""
        now = datetime.now(UTC).replace(microsecond=0)
        sample: dict[str, Any] = {"timestamp": now, "host": self.settings.hostname}
        sample.update(self.system_metrics())
        scrape = await self._scrape()
        if scrape is not None and self._prev_scrape is not None:
            sample.update(application_metrics(self._prev_scrape, scrape))
        else:
            sample.update(
                {
                    "active_requests": scrape.active_requests if scrape else None,
                    "error_rate": None,
                    "response_time_p50": None,
                    "response_time_p95": None,
                    "response_time_p99": None,
                }
            )
        if scrape is not None:
            self._prev_scrape = scrape
        at = time.monotonic()
        minutes = (at - self._prev_at) / 60.0 if self._prev_at is not None else None
        sample.update(derived_rates(self._prev_sample, sample, minutes=minutes))
        sample["label"] = "normal"
        self._prev_sample, self._prev_at = sample, at
        return sample


def _rate(prev: dict[str, Any], cur: dict[str, Any], key: str, minutes: float) -> float | None:
    a, b = prev.get(key), cur.get(key)
    if a is None or b is None:
        return None
    return float((b - a) / minutes)


def derived_rates(
    prev: dict[str, Any] | None, cur: dict[str, Any], *, minutes: float | None
) -> dict[str, float | None]:
    """Rates of change per minute since the previous sample (0 for the first one)."""
    if prev is None or minutes is None:
        return {"cpu_rate_of_change": 0.0, "memory_rate_of_change": 0.0, "error_rate_trend": 0.0}
    minutes = max(minutes, 1e-6)
    return {
        "cpu_rate_of_change": _rate(prev, cur, "cpu_usage_percent", minutes),
        "memory_rate_of_change": _rate(prev, cur, "memory_usage_percent", minutes),
        "error_rate_trend": _rate(prev, cur, "error_rate", minutes),
    }
