"""Background loops with one lifecycle: start, stop, error logging, and when each last succeeded.

Usage: `loop = BackgroundLoop("retention", purge, interval=3600)`, `loop.start()` in the lifespan,
`await loop.stop()` on the way out; `loop.state()` feeds health answers and `/metrics`.
A step returns the seconds until it should run again, or None for the loop's interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.clock import utcnow

log = logging.getLogger("autofix_ml.loops")

Step = Callable[[], Awaitable[float | None]]


@dataclass(frozen=True, slots=True)
class LoopState:
    """What a loop has done: for health answers and metrics."""

    name: str
    running: bool
    runs: int
    failures: int
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class BackgroundLoop:
    """Runs `step` again and again in a task; a failing step is logged and retried later."""

    def __init__(
        self,
        name: str,
        step: Step,
        *,
        interval: float | Callable[[], float],
        retry_after: float = 60.0,
        first_delay: float = 0.0,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self.retry_after = retry_after
        self.first_delay = first_delay
        self.runs = 0
        self.failures = 0
        self.last_success_at: datetime | None = None
        self.last_success_monotonic: float | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return self._interval() if callable(self._interval) else self._interval

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run_once(self) -> float | None:
        """One step now, recorded like a scheduled one; errors propagate to the caller."""
        try:
            delay = await self._step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
            raise
        self._succeeded()
        return delay

    def state(self) -> LoopState:
        return LoopState(
            name=self.name,
            running=self.running,
            runs=self.runs,
            failures=self.failures,
            last_success_at=self.last_success_at,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
        )

    def _succeeded(self) -> None:
        self.runs += 1
        self.last_success_at = utcnow()
        self.last_success_monotonic = time.monotonic()

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        self.last_error_at = utcnow()

    async def _run(self) -> None:
        if self.first_delay > 0:
            await asyncio.sleep(self.first_delay)
        while True:
            try:
                delay = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: a pass failed; retrying", self.name)
                delay = min(self.retry_after, self.interval)
            await asyncio.sleep(self.interval if delay is None else max(0.0, delay))


async def stop_all(loops: Iterable[BackgroundLoop]) -> None:
    """Stop every loop (in the lifespan's `finally`)."""
    await asyncio.gather(*(loop.stop() for loop in loops))
