"""Taking one sample: system metrics from psutil, application metrics from a scrape, rates.

Usage: `collector = MetricsCollector(settings, client)`, `await collector.prime()` once, then
`sample = await collector.collect()` each interval.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil

from services.collector.sampling.prometheus import (
    ScrapeSnapshot,
    application_metrics,
    parse_prometheus_text,
)
from shared.settings import Settings

log = logging.getLogger("autofix_ml.collector")

MIB = 1024 * 1024


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
        if not self.settings.scrape_enabled:
            return None  # system metrics only (a node's collector in Kubernetes)
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
            labels=self.settings.scrape_labels,
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
        now = datetime.now(UTC)
        # Milliseconds: two samples of one host never share a time (one is stored per time).
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
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
