"""Background loops: steps run on their schedule, failures are logged, counted and retried."""

from __future__ import annotations

import asyncio

import pytest

from shared.loops import BackgroundLoop, stop_all


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


async def test_stop_cancels_a_step_in_progress() -> None:
    started = asyncio.Event()

    async def slow() -> float | None:
        started.set()
        await asyncio.sleep(3600)
        return None

    loop = BackgroundLoop("slow", slow, interval=1.0)
    loop.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(loop.stop(), 5)
    assert not loop.running and loop.runs == 0
