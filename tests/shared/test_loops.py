"""Background loops: steps run on their schedule, failures are logged, counted and retried."""

from __future__ import annotations

import asyncio

import pytest

from shared.loops import BackgroundLoop, prometheus_text, stop_all


async def test_loop_runs_steps_at_the_delay_each_step_returns() -> None:
    calls: list[float] = []

    async def step() -> float | None:
        calls.append(asyncio.get_running_loop().time())
        return 0.01 if len(calls) < 5 else 3600.0

    loop = BackgroundLoop("fast", step, interval=3600.0)
    loop.start()
    for _ in range(200):
        if len(calls) >= 5:
            break
        await asyncio.sleep(0.01)
    await loop.stop()
    assert len(calls) == 5
    state = loop.state()
    assert state.runs == 5 and state.failures == 0 and not state.running
    assert state.last_success_at is not None and state.last_error is None


async def test_a_failing_step_is_recorded_and_retried_after_retry_after() -> None:
    attempts = 0

    async def flaky() -> float | None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("database away")
        return None

    loop = BackgroundLoop("flaky", flaky, interval=3600.0, retry_after=0.01)
    loop.start()
    for _ in range(200):
        if loop.runs:
            break
        await asyncio.sleep(0.01)
    await stop_all([loop])
    assert attempts == 2
    state = loop.state()
    assert state.failures == 1 and state.runs == 1
    assert state.last_error == "RuntimeError: database away"
    assert state.last_error_at is not None and state.last_success_at is not None
    assert state.last_success_at >= state.last_error_at


async def test_run_once_records_and_propagates() -> None:
    async def broken() -> float | None:
        raise ValueError("bad pass")

    loop = BackgroundLoop("once", broken, interval=lambda: 5.0)
    assert loop.interval == 5.0
    with pytest.raises(ValueError, match="bad pass"):
        await loop.run_once()
    assert loop.failures == 1 and loop.runs == 0 and not loop.running


async def test_stop_cancels_a_step_that_outlasts_the_grace() -> None:
    started = asyncio.Event()

    async def slow() -> float | None:
        started.set()
        await asyncio.sleep(3600)
        return None

    loop = BackgroundLoop("slow", slow, interval=1.0)
    loop.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(loop.stop(grace=0.2), 5)
    assert not loop.running and loop.runs == 0


async def test_stop_lets_a_step_under_way_finish_and_runs_no_other() -> None:
    # Cancelling a step in the middle of a database write can hang its connection (asyncpg's
    # executemany) and the shutdown with it: a step under way finishes first.
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def write() -> float | None:
        started.set()
        await release.wait()
        await asyncio.sleep(0.05)
        finished.append(True)
        return 0.0  # would run again at once

    loop = BackgroundLoop("writer", write, interval=1.0)
    loop.start()
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(loop.stop(grace=10))
    await asyncio.sleep(0.1)
    assert not stopping.done()  # waits for the step
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [True] and loop.runs == 1 and not loop.running


async def test_a_loop_whose_step_waits_for_work_stops_at_once() -> None:
    started = asyncio.Event()

    async def wait_for_work() -> float | None:
        started.set()
        await asyncio.sleep(3600)
        return None

    loop = BackgroundLoop("queue", wait_for_work, interval=0.0, watched=False)
    loop.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(loop.stop(grace=60), 1)
    assert not loop.running


async def test_a_sleeping_loop_stops_at_once() -> None:
    async def quick() -> float | None:
        return None

    loop = BackgroundLoop("idle", quick, interval=3600)
    loop.start()
    for _ in range(100):
        if loop.runs:
            break
        await asyncio.sleep(0.01)
    await asyncio.wait_for(loop.stop(grace=60), 1)
    assert loop.runs == 1 and not loop.running


async def test_a_loop_that_keeps_failing_is_stalled_until_a_pass_succeeds() -> None:
    healthy = False

    async def step() -> float | None:
        if not healthy:
            raise ConnectionError("database away")
        return None

    loop = BackgroundLoop("scoring", step, interval=0.01, retry_after=0.01)
    idle = BackgroundLoop("webhook", step, interval=0.01, watched=False)
    assert not loop.stalled(3, min_seconds=0.0)  # not started: nothing to say
    loop.start()
    idle.start()
    for _ in range(500):
        if loop.failures >= 5 and loop.stalled(3, min_seconds=0.05):
            break
        await asyncio.sleep(0.01)
    assert loop.stalled(3, min_seconds=0.05) and loop.runs == 0
    assert not loop.stalled(3, min_seconds=3600.0)  # the floor holds
    assert not idle.stalled(3, min_seconds=0.0)  # waits for work: never stalled
    text = prometheus_text(
        [loop], service="svc", stall_intervals=3, stall_min_seconds=0.05, gauges=[("x", "X.", 2)]
    ).decode()
    assert 'autofix_loop_stalled{service="svc",loop="scoring"} 1.0' in text
    assert 'autofix_loop_running{service="svc",loop="scoring"} 1.0' in text
    assert "# TYPE autofix_loop_failures_total counter" in text  # as prometheus_client writes it
    assert 'x{service="svc"} 2.0' in text
    assert "autofix_loop_last_success_timestamp_seconds{" not in text  # never succeeded
    healthy = True
    for _ in range(500):
        if loop.runs:
            break
        await asyncio.sleep(0.01)
    assert not loop.stalled(3, min_seconds=0.05)
    state = loop.state()
    assert state.seconds_since_success is not None and state.seconds_since_success < 1
    await stop_all([loop, idle])
    assert loop.stalled(3, min_seconds=0.05)  # its task ended
