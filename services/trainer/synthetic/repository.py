"""SQL of synthetic data: a generated frame replaces its host's rows in its time window.

Usage: `async with engine.begin() as conn: await store_frame(conn, df, host="synthetic")`.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.clock import utc
from shared.db import bulk_insert_samples, frame_records
from shared.tables import metrics_history


async def store_frame(conn: AsyncConnection, df: pd.DataFrame, *, host: str) -> int:
    """Replace `host`'s metrics_history rows in the df's time window with the df's rows.

    Runs inside the caller's transaction; returns the number of rows stored. On PostgreSQL a
    transaction-scoped advisory lock per host serialises generations across processes (on
    SQLite the delete takes the file's one write lock).
    """
    if df.empty:
        return 0
    await delete_window(conn, df, host=host)
    return await insert_frame(conn, df, host=host)


async def delete_window(conn: AsyncConnection, df: pd.DataFrame, *, host: str) -> None:
    """Delete `host`'s rows between the df's first and last timestamp (locking the host)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"generate:{host}"}
        )
    timestamps = pd.DatetimeIndex(df["timestamp"])
    first = utc(timestamps.min().to_pydatetime())
    last = utc(timestamps.max().to_pydatetime())
    await conn.execute(
        delete(metrics_history).where(
            metrics_history.c.host == host,
            metrics_history.c.timestamp >= first,
            metrics_history.c.timestamp <= last,
        )
    )


async def insert_frame(conn: AsyncConnection, df: pd.DataFrame, *, host: str) -> int:
    """Upsert the df's rows under `host` (the engine's bulk path); returns the count."""
    sqlite = conn.dialect.name == "sqlite"
    records = frame_records(df, host=host, sqlite=sqlite)
    return await bulk_insert_samples(conn, records, prepared=True)
