"""Worker pools for CPU-bound work, made in a lifespan and handed to the code that needs them.

Usage: `pool = process_pool(2)` in the lifespan, `await run_in(pool, fit, frame)` in a service,
`pool.shutdown(...)` on the way out. Processes are spawned, never forked, so a worker inherits
no event loop, connection or lock of the service. Each worker dies with the process that made
it (Linux: PR_SET_PDEATHSIG), so a killed service leaves no training run behind.

A process pool mends itself: one whose process died (killed, out of memory) is replaced at the
next job instead of refusing every job after it (BrokenProcessPool), and a job that its pool
stops answering (a dead process or manager thread, or longer than `job_timeout`) is answered
with `PoolUnavailable` (503) at once, the pool replaced; no job waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, ParamSpec, TypeVar

from shared.errors import ServiceUnavailable
from shared.supervisor import die_with_parent

log = logging.getLogger("autofix_ml.workers")

P = ParamSpec("P")
T = TypeVar("T")

CHECK_EVERY = 1.0  # seconds between the checks that a job's pool is still alive
TRAINING_SLACK = 600.0  # seconds a training may spend outside its process (data, storing)


class PoolUnavailable(ServiceUnavailable):
    """503: the worker pool broke or stopped answering under a job; it has been replaced."""


class ProcessPool(Executor):
    """A ProcessPoolExecutor that replaces itself when it breaks or hangs (see the module)."""

    def __init__(self, make: Callable[[], ProcessPoolExecutor], *, job_timeout: float | None):
        self._make = make
        self.job_timeout = job_timeout
        self.pool = make()
        self.replaced = 0  # pools thrown away broken or hung

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        try:
            return self.pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool as exc:  # its process died while idle: a new one
            self.replace(self.pool, f"its process died ({exc})")
            return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def replace(self, pool: ProcessPoolExecutor, why: str) -> None:
        """Kill `pool`'s processes and put a new pool in its place (once, if it is current)."""
        if pool is not self.pool:
            return
        log.error("replacing the worker pool: %s", why)
        for process in list((pool._processes or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._make()
        self.replaced += 1

    async def run(self, call: Callable[[], T]) -> T:
        """`call()` in the pool, awaited; PoolUnavailable if the pool fails or hangs under it."""
        pool = self.pool
        future = self.submit(call)
        pool = self.pool  # submit may have replaced a broken one
        waiting = asyncio.wrap_future(future)
        loop = asyncio.get_running_loop()
        deadline = None if self.job_timeout is None else loop.time() + self.job_timeout
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=CHECK_EVERY)
                if done:
                    break
                why = _stuck(pool)
                if why is None and deadline is not None and loop.time() > deadline:
                    why = f"a job ran past the pool's {self.job_timeout:g} s"
                if why is not None and not future.done():
                    self.replace(pool, why)
                    raise PoolUnavailable(f"the worker process stopped: {why}; try again")
        except BaseException:
            waiting.cancel()
            raise
        try:
            return waiting.result()
        except BrokenProcessPool as exc:
            self.replace(pool, f"its process died under a job ({exc})")
            raise PoolUnavailable(
                f"the worker process died under the job ({exc}); try again"
            ) from exc


def _stuck(pool: ProcessPoolExecutor) -> str | None:
    """Why `pool` can no longer finish a job it was given, or None while it can."""
    # CPython's own attributes (3.11-3.13); typeshed calls the thread a _ThreadWakeup.
    manager: threading.Thread | None = getattr(pool, "_executor_manager_thread", None)
    if manager is not None and not manager.is_alive():
        return "its manager thread has stopped"
    for pid, process in list((pool._processes or {}).items()):
        if process.exitcode is not None:
            return f"its process {pid} exited with {process.exitcode}"
    return None


def process_pool(
    workers: int,
    *,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    job_timeout: float | None = None,
) -> ProcessPool:
    """A pool of `workers` spawned processes: `process_pool(1, initializer=f, initargs=(1,))`;
    a job still running after `job_timeout` seconds is given up (PoolUnavailable)."""
    make = partial(
        ProcessPoolExecutor,
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
        initargs=(os.getpid(), initializer, initargs),
    )
    return ProcessPool(make, job_timeout=job_timeout)


def _worker_start(
    parent: int, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
) -> None:
    """Every worker's first step: die with the service (SIGKILL), then the pool's initializer."""
    die_with_parent(signal.SIGKILL, parent=parent)
    if initializer is not None:
        initializer(*initargs)


def thread_pool(workers: int, *, name: str) -> ThreadPoolExecutor:
    """A pool of `workers` named threads, for work that releases the GIL (numpy, I/O)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)


async def run_in(
    executor: Executor | None, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run `fn(*args, **kwargs)` on `executor` (None: the loop's default threads) and await it."""
    call = partial(fn, *args, **kwargs) if kwargs else partial(fn, *args)
    if isinstance(executor, ProcessPool):
        return await executor.run(call)
    return await asyncio.get_running_loop().run_in_executor(executor, call)


def shutdown(executor: Executor | None, *, wait: bool = False) -> None:
    """Stop a pool, dropping queued work: `shutdown(pool)` in the lifespan's `finally`."""
    if executor is not None:
        executor.shutdown(wait=wait, cancel_futures=True)


def _import(modules: tuple[str, ...]) -> int:
    for name in modules:
        importlib.import_module(name)
    return os.getpid()


def prewarm(
    executor: Executor, modules: tuple[str, ...], *, delay: float = 0.0
) -> asyncio.Task[int]:
    """Start a pool's process and import `modules` in it, `delay` seconds from now (once the
    service is up, not competing with its start), without waiting for it:
    `prewarm(pool, ("lightgbm",), delay=5)` in a lifespan; cancel the task on the way out."""

    async def warm() -> int:
        await asyncio.sleep(delay)
        return await run_in(executor, _import, modules)

    task = asyncio.create_task(warm(), name="prewarm")

    def done(t: asyncio.Task[int]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.warning("warming the worker process failed: %r", t.exception())

    task.add_done_callback(done)
    return task


@contextlib.asynccontextmanager
async def give_up_after(seconds: float, what: str) -> AsyncIterator[None]:
    """Cancel the block after `seconds` and raise ServiceUnavailable (503) naming `what`:
    `async with give_up_after(3600, "the training"): ...`, so that a step that never returns
    (a lock, a thread, a pool) cannot keep a service busy forever."""
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise  # a timeout of the block's own
        log.error("%s took longer than %g s: given up", what, seconds)
        raise ServiceUnavailable(f"{what} took longer than {seconds:g} s; try again") from None
