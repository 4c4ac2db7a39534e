"""Worker pools for CPU-bound work, made in a lifespan and handed to the code that needs them.

Usage: `pool = process_pool(2)` in the lifespan, `await run_in(pool, fit, frame)` in a service,
`pool.shutdown(...)` on the way out. Processes are spawned, never forked, so a worker inherits
no event loop, connection or lock of the service. Each worker dies with the process that made
it (Linux: PR_SET_PDEATHSIG), so a killed service leaves no training run behind.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from typing import Any, ParamSpec, TypeVar

from shared.supervisor import die_with_parent

log = logging.getLogger("autofix_ml.workers")

P = ParamSpec("P")
T = TypeVar("T")


def process_pool(
    workers: int,
    *,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes: `process_pool(1, initializer=f, initargs=(1,))`."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
        initargs=(os.getpid(), initializer, initargs),
    )


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
    executor: ProcessPoolExecutor, modules: tuple[str, ...], *, delay: float = 0.0
) -> asyncio.Task[int]:
    """Start a pool's process and import `modules` in it, `delay` seconds from now (once the
    service is up, not competing with its start), without waiting for it:
    `prewarm(pool, ("lightgbm",), delay=5)` in a lifespan; cancel the task on the way out."""

    async def warm() -> int:
        await asyncio.sleep(delay)
        return await asyncio.get_running_loop().run_in_executor(executor, _import, modules)

    task = asyncio.create_task(warm(), name="prewarm")

    def done(t: asyncio.Task[int]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.warning("warming the worker process failed: %r", t.exception())

    task.add_done_callback(done)
    return task
