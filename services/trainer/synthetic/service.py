"""Generating synthetic data and storing it: for the endpoint, the CLI and scripts.

Usage: `await generate(engine, request)` in a request; `await save_frame(url, df, host=h)` or the
blocking `save_to_database(df)` outside one.
"""

from __future__ import annotations

import asyncio
import time

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.synthetic.generator import SyntheticDataGenerator, label_distribution
from services.trainer.synthetic.repository import (
    delete_window,
    frame_window,
    insert_frame,
    real_samples,
    store_frame,
)
from shared.db import create_engine, write_transaction
from shared.errors import Conflict
from shared.keyed_locks import KeyedLocks
from shared.schemas.synthetic import GenerateSyntheticRequest, GenerateSyntheticResponse

# Generations for one host run one after the other (another process: the database's lock in
# `store_frame`), so two calls never interleave their delete and insert.
HOST_LOCKS = KeyedLocks()


async def generate(
    engine: AsyncEngine, request: GenerateSyntheticRequest
) -> GenerateSyntheticResponse:
    """Generate `request.days` of data (off the event loop) and store it under `request.host`."""
    started = time.perf_counter()
    async with HOST_LOCKS.hold(request.host):
        generator = SyntheticDataGenerator(seed=request.seed)
        frame = await asyncio.to_thread(generator.generate_full_training_set, request.days)
        generated = time.perf_counter()
        if not request.overwrite:
            await refuse_real_samples(engine, frame, host=request.host)
        count = await store(engine, frame, host=request.host)
    stored = time.perf_counter()
    return GenerateSyntheticResponse(
        count=count,
        label_distribution=label_distribution(frame),
        host=request.host,
        start=frame["timestamp"].iloc[0].to_pydatetime(),
        end=frame["timestamp"].iloc[-1].to_pydatetime(),
        generation_seconds=generated - started,
        storage_seconds=stored - generated,
        seconds=stored - started,
    )


async def refuse_real_samples(engine: AsyncEngine, frame: pd.DataFrame, *, host: str) -> None:
    """Conflict when `host` holds real (collected or pushed) samples in the frame's window."""
    first, last = frame_window(frame)
    async with engine.connect() as conn:
        real = await real_samples(conn, host=host, first=first, last=last)
    if real:
        raise Conflict(
            f"host {host!r} holds {real} real (collected or pushed) samples between "
            f"{first.isoformat()} and {last.isoformat()}: generating would replace them. "
            "Pick another host, or pass overwrite=true to replace them."
        )


# SQLite: a generated frame is written this many rows per transaction, so a short write
# (activate, feedback, a batch of scores) waits for one chunk, not for a year of samples.
SQLITE_CHUNK_ROWS = 10_000


async def store(engine: AsyncEngine, df: pd.DataFrame, *, host: str) -> int:
    """Replace `host`'s rows in the df's window with the df's: one transaction on PostgreSQL.

    On SQLite (one write lock for the whole file) the window is emptied first, then filled
    chunk by chunk: for the seconds that takes, a reader may see the window part-filled.
    The caller holds the host's lock (`HOST_LOCKS`).
    """
    if engine.dialect.name != "sqlite" or len(df) <= SQLITE_CHUNK_ROWS:
        async with write_transaction(engine) as conn:
            return await store_frame(conn, df, host=host)
    async with write_transaction(engine) as conn:
        await delete_window(conn, df, host=host)
    count = 0
    for start in range(0, len(df), SQLITE_CHUNK_ROWS):
        async with write_transaction(engine) as conn:
            count += await insert_frame(conn, df.iloc[start : start + SQLITE_CHUNK_ROWS], host=host)
    return count


async def save_frame(database_url: str, df: pd.DataFrame, *, host: str) -> int:
    """Store `df` under `host` in the database at `database_url` (`store`)."""
    engine = create_engine(database_url)
    try:
        async with HOST_LOCKS.hold(host):
            return await store(engine, df, host=host)
    finally:
        await engine.dispose()


def save_to_database(
    df: pd.DataFrame, *, database_url: str | None = None, host: str = "synthetic"
) -> int:
    """Blocking `save_frame` (runs its own event loop); DATABASE_URL when no URL is given."""
    if database_url is None:
        from shared.settings import get_settings

        database_url = get_settings().database_url
    return asyncio.run(save_frame(database_url, df, host=host))
