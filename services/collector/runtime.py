"""The collector's background work: the sampling loop, the write buffer, retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector import repository
from services.collector.sampler import MetricsCollector
from shared.db import utcnow
from shared.settings import Settings

log = logging.getLogger("autofix_ml.collector")


class SampleBuffer:
    """Samples waiting for the database; bounded, oldest dropped first, drops counted."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[dict[str, Any]] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def extend(self, samples: Sequence[dict[str, Any]]) -> None:
        self._items.extend(samples)
        self._trim()

    def requeue(self, samples: Sequence[dict[str, Any]]) -> None:
        """Put back samples that failed to write, ahead of newer ones."""
        self._items.extendleft(reversed(samples))
        self._trim()

    def _trim(self) -> None:
        while len(self._items) > self.capacity:
            self._items.popleft()
            self.dropped += 1

    def drain(self) -> list[dict[str, Any]]:
        items = list(self._items)
        self._items.clear()
        return items


class CollectorRuntime:
    def __init__(
        self, settings: Settings, engine: AsyncEngine, collector: MetricsCollector
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.collector = collector
        self.buffer = SampleBuffer(settings.buffer_size)
        self.last_collection_at: datetime | None = None
        self.samples_written = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.settings.ml_enabled:
            self._tasks.append(asyncio.create_task(self._sampling_loop(), name="sampling"))
        else:
            log.info("MetricsCollector disabled (ML_ENABLED=false)")
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.flush()

    @property
    def active(self) -> bool:
        if not self.settings.ml_enabled or self.last_collection_at is None:
            return False
        age = (utcnow() - self.last_collection_at).total_seconds()
        return age <= 2 * self.settings.collection_interval + 5

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
            log.warning(
                "database unavailable (%s); %d samples buffered",
                type(exc).__name__,
                len(self.buffer),
            )
            return 0
        self.samples_written += written
        return written

    async def _sampling_loop(self) -> None:
        interval = self.settings.collection_interval
        log.info("MetricsCollector started (every %ss, host %s)", interval, self.settings.hostname)
        await self.collector.prime()
        # The first sample comes soon (CPU needs a short baseline), then one every interval.
        next_at = time.monotonic() + min(1.0, interval)
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            if next_at < time.monotonic():  # fell behind (suspended?): skip, don't burst
                next_at = time.monotonic() + interval
            try:
                await self.collect_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("collection failed")

    async def _retention_loop(self) -> None:
        while True:
            try:
                async with self.engine.begin() as conn:
                    deleted = await repository.delete_older_than(conn, self.settings.retention_days)
                if deleted:
                    log.info(
                        "retention: deleted %d samples older than %s days",
                        deleted,
                        self.settings.retention_days,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.warning("retention run failed: %s", exc)
            await asyncio.sleep(self.settings.retention_check_seconds)
