"""SQL of synthetic data: a generated frame replaces its host's rows in its time window.

Usage: `async with engine.begin() as conn: await store_frame(conn, df, host="synthetic")`;
`await real_samples(conn, host=h, first=a, last=b)` before, to spare a host's real samples.
Each stored frame's window is recorded in synthetic_windows: the host's rows outside every
recorded window are real (collected or pushed).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.clock import utc, utcnow
from shared.db import bulk_insert_samples, frame_records
from shared.tables import metrics_history, synthetic_windows


def frame_window(df: pd.DataFrame) -> tuple[datetime, datetime]:
    """The first and last timestamp of a generated frame."""
    timestamps = pd.DatetimeIndex(df["timestamp"])
    return utc(timestamps.min().to_pydatetime()), utc(timestamps.max().to_pydatetime())


async def real_samples(conn: AsyncConnection, *, host: str, first: datetime, last: datetime) -> int:
    """How many of `host`'s rows in [first, last] lie outside every recorded synthetic window."""
    mh, sw = metrics_history, synthetic_windows
    generated = sa.exists().where(
        sw.c.host == mh.c.host, sw.c.first <= mh.c.timestamp, sw.c.last >= mh.c.timestamp
    )
    query = sa.select(sa.func.count()).where(
        mh.c.host == host, mh.c.timestamp >= first, mh.c.timestamp <= last, ~generated
    )
    return int((await conn.execute(query)).scalar_one())


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
    first, last = frame_window(df)
    await conn.execute(
        delete(metrics_history).where(
            metrics_history.c.host == host,
            metrics_history.c.timestamp >= first,
            metrics_history.c.timestamp <= last,
        )
    )


async def insert_frame(conn: AsyncConnection, df: pd.DataFrame, *, host: str) -> int:
    """Upsert the df's rows under `host` (the engine's bulk path) and record their window
    in synthetic_windows; returns the count."""
    first, last = frame_window(df)
    sqlite = conn.dialect.name == "sqlite"
    records = frame_records(df, host=host, sqlite=sqlite)
    stored = await bulk_insert_samples(conn, records, prepared=True)
    await conn.execute(
        sa.insert(synthetic_windows).values(
            host=host, first=first, last=last, rows=stored, created_at=utcnow()
        )
    )
    return stored
