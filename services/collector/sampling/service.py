"""The sampling runtime: take a sample, buffer it, write the buffer; the loop that does it.

Usage: `sampling = SamplingService(settings, engine, MetricsCollector(settings, client))`,
`loop = sampling_loop(sampling)`, `loop.start()`; `await sampling.flush()` on the way out.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.samples import repository
from services.collector.sampling.buffer import SampleBuffer
from services.collector.sampling.sampler import MetricsCollector
from shared.clock import utcnow
from shared.loops import BackgroundLoop
from shared.observability import Sample, queue_sample
from shared.settings import Settings
from shared.storage import StorageState, storage_full

log = logging.getLogger("autofix_ml.collector")


class SamplingService:
    """Samples this host into a bounded buffer and writes the buffer to metrics_history."""

    def __init__(
        self, settings: Settings, engine: AsyncEngine, collector: MetricsCollector
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.collector = collector
        self.buffer = SampleBuffer(settings.buffer_size)
        self.storage = StorageState()  # the app's, once served (a full database is reported)
        self.last_collection_at: datetime | None = None
        self.samples_written = 0
        self._next_at: float | None = None  # monotonic time of the next scheduled sample

    @property
    def active(self) -> bool:
        if not self.settings.ml_enabled or self.last_collection_at is None:
            return False
        age = (utcnow() - self.last_collection_at).total_seconds()
        return age <= 2 * self.settings.collection_interval + 5

    async def samples(self) -> list[Sample]:
        """The buffer and what became of the samples, for /metrics."""
        return [
            Sample(
                "autofix_samples_buffered",
                float(len(self.buffer)),
                help="Samples waiting for the database.",
            ),
            Sample(
                "autofix_samples_dropped_total",
                float(self.buffer.dropped),
                kind="counter",
                help="Samples dropped because the buffer was full (the database away too long).",
            ),
            Sample(
                "autofix_samples_written_total",
                float(self.samples_written),
                kind="counter",
                help="Samples written to metrics_history by the sampling loop.",
            ),
            queue_sample("sample_buffer", len(self.buffer)),
        ]

    async def collect_once(self) -> dict[str, Any]:
        sample = await self.collector.collect()
        self.buffer.extend([sample])
        self.last_collection_at = utcnow()
        await self.flush()
        return sample

    async def flush(self) -> int:
        """Write every buffered sample; on failure keep them for the next attempt."""
        if not len(self.buffer):
            return 0
        samples = self.buffer.drain()
        try:
            async with self.engine.begin() as conn:
                written = await repository.insert_samples(conn, samples)
        except Exception as exc:  # noqa: BLE001 - any database failure: keep the samples
            self.buffer.requeue(samples)
            if storage_full(exc):
                self.storage.record(exc)
            log.warning(
                "database unavailable (%s); %d samples buffered",
                type(exc).__name__,
                len(self.buffer),
            )
            return 0
        self.samples_written += written
        return written

    async def step(self) -> float:
        """One pass of the loop; returns the seconds until the next sample is due.

        The first pass takes the baselines and schedules the first sample soon (CPU needs a
        short baseline); then one sample every interval, skipping rather than bursting when
        the loop fell behind (a suspended machine).
        """
        interval = self.settings.collection_interval
        if self._next_at is None:
            log.info(
                "MetricsCollector started (every %ss, host %s)", interval, self.settings.hostname
            )
            await self.collector.prime()
            self._next_at = time.monotonic() + min(1.0, interval)
            return max(0.0, self._next_at - time.monotonic())
        self._next_at += interval
        if self._next_at < time.monotonic():
            self._next_at = time.monotonic() + interval
        await self.collect_once()
        return max(0.0, self._next_at - time.monotonic())


def sampling_loop(sampling: SamplingService) -> BackgroundLoop:
    """The loop that samples every ML_COLLECTION_INTERVAL seconds."""
    interval = sampling.settings.collection_interval
    return BackgroundLoop("sampling", sampling.step, interval=interval, retry_after=interval)
