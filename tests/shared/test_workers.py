"""Worker pools: spawned processes and named threads, awaited without blocking the loop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from shared.errors import ServiceUnavailable
from shared.workers import (
    PoolUnavailable,
    give_up_after,
    prewarm,
    process_pool,
    run_in,
    shutdown,
    thread_pool,
)


def _pid_and_scaled(value: int, *, factor: int) -> tuple[int, int]:
    return os.getpid(), value * factor


_initialised: list[int] = []


def _remember(value: int) -> None:
    _initialised.append(value)


def _initialised_values() -> list[int]:
    return list(_initialised)


def _loaded(name: str) -> tuple[int, bool]:
    import sys

    return os.getpid(), name in sys.modules


async def test_process_pool_runs_in_another_process_with_its_initializer() -> None:
    pool = process_pool(1, initializer=_remember, initargs=(7,))
    try:
        pid, value = await run_in(pool, _pid_and_scaled, 3, factor=5)
        assert value == 15 and pid != os.getpid()
        assert await run_in(pool, _initialised_values) == [7]
    finally:
        shutdown(pool, wait=True)
    assert _initialised == []  # the initializer ran in the worker, not here


async def test_thread_pool_names_its_threads_and_leaves_the_loop_free() -> None:
    pool = thread_pool(1, name="fit")
    gate = threading.Event()
    try:
        job = asyncio.ensure_future(
            run_in(pool, lambda: (gate.wait(5), threading.current_thread().name))
        )
        await asyncio.sleep(0.01)  # the loop keeps turning while the thread waits
        assert not job.done()
        gate.set()
        _, name = await job
        assert name.startswith("fit")
    finally:
        shutdown(pool)


async def test_run_in_none_uses_the_default_executor() -> None:
    assert await run_in(None, sum, [1, 2, 3]) == 6


async def test_prewarm_starts_the_process_and_imports_before_the_first_job() -> None:
    pool = process_pool(1)
    try:
        warmed = await asyncio.wait_for(prewarm(pool, ("lightgbm",)), 60)
        pid, loaded = await run_in(pool, _loaded, "lightgbm")
        assert (pid, loaded) == (warmed, True)  # the job ran in the warmed process
        assert pid != os.getpid()
    finally:
        shutdown(pool, wait=True)


async def test_a_failed_prewarm_leaves_the_pool_working() -> None:
    pool = process_pool(1)
    try:
        warming = prewarm(pool, ("no_such_module_anywhere",))
        try:
            await asyncio.wait_for(warming, 60)
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("the missing module was imported")
        pid, value = await run_in(pool, _pid_and_scaled, 2, factor=3)
        assert value == 6 and pid != os.getpid()
    finally:
        shutdown(pool, wait=True)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def _gone(pid: int, timeout: float = 30.0) -> None:
    """Wait until `pid` (a child of this process) has been reaped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} still there")


async def test_a_pool_whose_idle_process_was_killed_runs_the_next_job_in_a_new_one() -> None:
    pool = process_pool(1)
    try:
        first = await run_in(pool, os.getpid)
        os.kill(first, signal.SIGKILL)
        await _gone(first)  # reaped: the executor has marked itself broken
        second = await asyncio.wait_for(run_in(pool, os.getpid), 60)
        assert second not in (first, os.getpid())
    finally:
        shutdown(pool, wait=True)


async def test_a_job_whose_process_dies_under_it_is_a_503_and_the_pool_replaced() -> None:
    pool = process_pool(1)
    try:
        first = await run_in(pool, os.getpid)
        with pytest.raises(PoolUnavailable) as caught:
            await asyncio.wait_for(run_in(pool, _die), 60)
        assert caught.value.status_code == 503
        second = await asyncio.wait_for(run_in(pool, os.getpid), 60)
        assert second != first
    finally:
        shutdown(pool, wait=True)


async def test_a_job_past_the_pools_timeout_is_a_503_and_its_process_stopped() -> None:
    pool = process_pool(1, job_timeout=1.0)
    try:
        first = await run_in(pool, os.getpid)
        started = time.monotonic()
        with pytest.raises(PoolUnavailable):
            await asyncio.wait_for(run_in(pool, time.sleep, 60), 30)
        assert time.monotonic() - started < 10
        await _gone(first)
        second = await asyncio.wait_for(run_in(pool, os.getpid), 60)
        assert second != first
    finally:
        shutdown(pool, wait=True)


async def test_give_up_after_answers_503_for_a_step_that_never_returns() -> None:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        async with give_up_after(0.2, "the training"):
            await asyncio.Event().wait()  # never set
    assert caught.value.status_code == 503 and "the training" in str(caught.value.detail)
    assert time.monotonic() - started < 5
    with pytest.raises(TimeoutError):  # a timeout of the block's own is left as it is
        async with give_up_after(60, "the training"):
            await asyncio.wait_for(asyncio.Event().wait(), 0.05)
