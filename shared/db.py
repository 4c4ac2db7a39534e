"""Engines, timestamps (UTC, aware), result rows as dicts, and each engine's bulk fast path."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from shared.catalogue import METRIC_NAMES, METRICS
from shared.clock import utc

INTEGER_METRICS = frozenset(m.name for m in METRICS if m.is_integer)

SAMPLE_COLUMNS: tuple[str, ...] = ("timestamp", "host", *METRIC_NAMES, "label")


@asynccontextmanager
async def database(url: str, engine: AsyncEngine | None = None) -> AsyncIterator[AsyncEngine]:
    """The engine a service runs on, in its lifespan: `engine` as handed in (a test's, left
    open), else a new one for `url`, disposed on the way out."""
    if engine is not None:
        yield engine
        return
    owned = create_engine(url)
    try:
        yield owned
    finally:
        await owned.dispose()


# SQLite has one write lock per file and its busy handler polls for it, unfairly: under a
# stream of long writes (a year generated, a scoring pass) a short one (activate, feedback)
# could wait past the gateway's timeout. Writers of one process queue here, first come first
# served, so a short write waits for the writes queued before it, no longer.
_WRITE_GATES: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`engine.begin()` for a transaction that writes: `async with write_transaction(e) as c:`.

    On SQLite the process's writers take turns in arrival order; PostgreSQL needs no queue.
    """
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    gate = _WRITE_GATES.get(engine)
    if gate is None:
        gate = _WRITE_GATES[engine] = asyncio.Lock()
    async with gate, engine.begin() as conn:
        yield conn


def is_sqlite(url_or_engine: str | AsyncEngine | AsyncConnection) -> bool:
    if isinstance(url_or_engine, str):
        return make_url(url_or_engine).get_backend_name() == "sqlite"
    return url_or_engine.dialect.name == "sqlite"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url`; SQLite gets WAL, a busy timeout and its folder created."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = _create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("server_settings", {"timezone": "UTC"})
    kwargs["connect_args"] = connect_args
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return _create_async_engine(url, **kwargs)


def row_dict(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """A result row as a dict with every timestamp aware UTC: `row_dict(row._mapping)`."""
    return {k: utc(v) if isinstance(v, datetime) else v for k, v in mapping.items()}


def db_timestamp(value: datetime, *, sqlite: bool) -> datetime | str:
    """A timestamp as the driver stores it: aware for asyncpg, SQLAlchemy's text form for SQLite."""
    value = utc(value)
    if sqlite:
        # SQLAlchemy's own text form; isoformat pads the year, strftime("%Y") may not.
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def prepare_rows(
    rows: Iterable[Sequence[Any]], *, sqlite: bool, columns: Sequence[str] = SAMPLE_COLUMNS
) -> list[tuple[Any, ...]]:
    """Rows as the driver stores them: timestamps converted, integers rounded, NaN as NULL."""
    ts_index = columns.index("timestamp")
    int_indexes = [i for i, c in enumerate(columns) if c in INTEGER_METRICS]
    records: list[tuple[Any, ...]] = []
    for row in rows:
        record = [_clean(v) for v in row]
        record[ts_index] = db_timestamp(record[ts_index], sqlite=sqlite)
        for i in int_indexes:
            if record[i] is not None:
                record[i] = int(round(record[i]))
        records.append(tuple(record))
    return records


def frame_records(frame: pd.DataFrame, *, host: str, sqlite: bool) -> Iterator[tuple[Any, ...]]:
    """A frame's samples (timestamp, the metrics, label) as driver-ready rows, column-wise.

    Vectorised per column, then zipped lazily, so the database can start on the first rows
    while the rest are still being built.
    """
    stamps = pd.DatetimeIndex(frame["timestamp"])
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    timestamps: list[Any]
    if sqlite:
        text = np.datetime_as_string(stamps.tz_convert(None).to_numpy(), unit="us")
        timestamps = np.char.replace(text, "T", " ").tolist()
    else:
        timestamps = stamps.to_pydatetime().tolist()
    values: list[list[Any]] = []
    for name in METRIC_NAMES:
        if name not in frame:
            values.append([None] * len(frame))
            continue
        column = frame[name].to_numpy(dtype=np.float64)
        missing = np.isnan(column)
        if name in INTEGER_METRICS:
            cells: list[Any] = np.rint(np.nan_to_num(column)).astype(np.int64).tolist()
        else:
            cells = column.tolist()
        if missing.any():
            for i in np.flatnonzero(missing).tolist():
                cells[i] = None
        values.append(cells)
    labels = frame["label"].astype(str).tolist() if "label" in frame else ["normal"] * len(frame)
    return zip(timestamps, [host] * len(frame), *values, labels, strict=True)


async def bulk_insert_samples(
    conn: AsyncConnection,
    rows: Iterable[Sequence[Any]],
    *,
    columns: Sequence[str] = SAMPLE_COLUMNS,
    prepared: bool = False,
) -> int:
    """Upsert sample rows (in `columns` order) on the engine's fast path; returns the count.

    A row whose (host, timestamp) is stored already replaces the stored values (same id), so
    a retried push or a regenerated window never duplicates a sample. PostgreSQL: binary COPY
    into a temporary table, then one INSERT ... ON CONFLICT. SQLite: the driver's
    `executemany` of INSERT ... ON CONFLICT. `prepared=True` means the rows are already
    driver-ready (`frame_records`); otherwise they go through `prepare_rows`. Runs inside the
    caller's transaction.
    """
    sqlite = conn.dialect.name == "sqlite"
    records: Iterable[Sequence[Any]] = (
        rows if prepared else prepare_rows(rows, sqlite=sqlite, columns=columns)
    )
    counted = _Counted(records)
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    column_sql = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in SAMPLE_KEY)
    conflict = f'ON CONFLICT (host, "timestamp") DO UPDATE SET {updates}'
    if sqlite:
        placeholders = ", ".join("?" for _ in columns)
        await driver.executemany(
            f"INSERT INTO metrics_history ({column_sql}) VALUES ({placeholders}) {conflict}",
            counted,
        )
        return counted.count
    # Through SQLAlchemy, so the COPY below runs inside the caller's transaction (begun here).
    await conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {_INCOMING} ON COMMIT DROP AS "
        f"SELECT {column_sql} FROM metrics_history WITH NO DATA"
    )
    await driver.copy_records_to_table(_INCOMING, records=counted.aiter(), columns=list(columns))
    # The last of several rows for one (host, timestamp) in a batch wins, as it would in order.
    await conn.exec_driver_sql(
        f"INSERT INTO metrics_history ({column_sql}) "
        f'SELECT DISTINCT ON (host, "timestamp") {column_sql} FROM {_INCOMING} '
        f'ORDER BY host, "timestamp", ctid DESC {conflict}'
    )
    await conn.exec_driver_sql(f"DELETE FROM {_INCOMING}")
    return counted.count


# metrics_history's natural key (a unique index): one sample per host and time.
SAMPLE_KEY = frozenset({"host", "timestamp"})
_INCOMING = "incoming_samples"


class _Counted:
    """Passes rows through, counting them (the iterator is consumed by the driver)."""

    def __init__(self, rows: Iterable[Sequence[Any]]) -> None:
        self._rows = iter(rows)
        self.count = 0

    def __iter__(self) -> Iterator[Sequence[Any]]:
        return self

    def __next__(self) -> Sequence[Any]:
        row = next(self._rows)
        self.count += 1
        return row

    async def aiter(self) -> AsyncIterator[Sequence[Any]]:
        for row in self:
            yield row


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False
