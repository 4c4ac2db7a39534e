"""Background loops with one lifecycle: start, stop, error logging, and when each last succeeded.

Usage: `loop = BackgroundLoop("retention", purge, interval=3600)`, `loop.start()` in the lifespan,
`await loop.stop()` on the way out; `loop.state()` feeds health answers and `/metrics`
(`loop.stalled(3, min_seconds=60)`, `prometheus_text(loops, ...)`).
A step returns the seconds until it should run again, or None for the loop's interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.clock import utcnow

log = logging.getLogger("autofix_ml.loops")

Step = Callable[[], Awaitable[float | None]]
STOP_GRACE = 5.0  # seconds a step under way may take to finish when its loop is stopped


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
    seconds_since_success: float | None  # since the last success, else since the start
    interval: float


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
        watched: bool = True,
    ) -> None:
        """``watched=False``: a loop whose step waits for work (a queue) is never stalled."""
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
        self.watched = watched
        self.started_monotonic: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stepping = False  # the task is inside a step (not sleeping)
        self._stopping = False
        self._step_ended: asyncio.Event | None = None

    @property
    def interval(self) -> float:
        return self._interval() if callable(self._interval) else self._interval

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self.started_monotonic = time.monotonic()
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop the loop: a step under way may finish first (up to ``grace`` seconds), then
        the task is cancelled. Cancelling a step in the middle of a database write can leave
        the connection hung for good (asyncpg's pipelined ``executemany``: the server waits
        for the rest of the batch, the client for the server), and the shutdown with it. A
        loop that is not watched (its step waits for work) is cancelled at once."""
        if self._task is not None:
            self._stopping = True
            if self.watched and self._stepping and self._step_ended is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._step_ended.wait()), grace)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            self._stopping = False

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
            seconds_since_success=self.seconds_since_success(),
            interval=self.interval,
        )

    def seconds_since_success(self, now: float | None = None) -> float | None:
        """Seconds since the last successful pass, else since the start (None: never started)."""
        since = self.last_success_monotonic or self.started_monotonic
        if since is None:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - since)

    def stalled(self, intervals: float, *, min_seconds: float) -> bool:
        """Started, watched, and no successful pass for ``intervals`` of its interval (at least
        ``min_seconds``), or its task ended: what makes a health answer degraded."""
        if not self.watched or self.started_monotonic is None:
            return False
        if not self.running:
            return True
        since = self.seconds_since_success()
        return since is not None and since > max(intervals * self.interval, min_seconds)

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
        self._step_ended = asyncio.Event()
        while not self._stopping:
            self._stepping = True
            self._step_ended.clear()
            try:
                delay = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "%s: a pass failed; retrying",
                    self.name,
                    extra={
                        "event": "loop_failed",
                        "fields": {"loop": self.name, "failures": self.failures},
                    },
                )
                delay = min(self.retry_after, self.interval)
            finally:
                self._stepping = False
                self._step_ended.set()
            if self._stopping:
                break
            await asyncio.sleep(self.interval if delay is None else max(0.0, delay))


async def stop_all(loops: Iterable[BackgroundLoop]) -> None:
    """Stop every loop (in the lifespan's `finally`)."""
    await asyncio.gather(*(loop.stop() for loop in loops))


def prometheus_text(
    loops: Iterable[BackgroundLoop],
    *,
    service: str,
    stall_intervals: float,
    stall_min_seconds: float,
    gauges: Iterable[tuple[str, str, float | None]] = (),
) -> bytes:
    """The loops' figures (and extra ``(name, help, value)`` gauges) in Prometheus text format."""
    families: dict[str, tuple[str, str, list[str]]] = {
        "autofix_loop_running": ("gauge", "1 while the loop's task runs.", []),
        "autofix_loop_stalled": ("gauge", "1 when no pass succeeded for too long.", []),
        "autofix_loop_runs_total": ("counter", "Successful passes.", []),
        "autofix_loop_failures_total": ("counter", "Failed passes.", []),
        "autofix_loop_last_success_timestamp_seconds": (
            "gauge",
            "Unix time of the last successful pass.",
            [],
        ),
        "autofix_loop_seconds_since_success": (
            "gauge",
            "Seconds since the last successful pass (else since the start).",
            [],
        ),
    }
    for loop in loops:
        st = loop.state()
        labels = f'{{service="{service}",loop="{st.name}"}}'
        values: dict[str, float | None] = {
            "autofix_loop_running": float(st.running),
            "autofix_loop_stalled": float(
                loop.stalled(stall_intervals, min_seconds=stall_min_seconds)
            ),
            "autofix_loop_runs_total": float(st.runs),
            "autofix_loop_failures_total": float(st.failures),
            "autofix_loop_last_success_timestamp_seconds": (
                st.last_success_at.timestamp() if st.last_success_at else None
            ),
            "autofix_loop_seconds_since_success": st.seconds_since_success,
        }
        for name, value in values.items():
            if value is not None:
                families[name][2].append(f"{name}{labels} {value!r}")
    lines: list[str] = []
    for name, (kind, text, samples) in families.items():
        # Text format 0.0.4: a counter's HELP and TYPE name its samples, _total included.
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples]
    for name, text, value in gauges:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        if value is not None:
            lines.append(f'{name}{{service="{service}"}} {float(value)!r}')
    return ("\n".join(lines) + "\n").encode()
