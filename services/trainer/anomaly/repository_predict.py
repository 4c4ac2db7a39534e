"""The one read of ``POST /predict/anomaly``: a host's newest fresh sample and its own threshold.

Usage: ``sample, own = await predict_reads(conn, host="web-1", not_before=t0, not_after=t1)``,
or in the service ``reader = PredictReader(engine)``, ``await reader.read(host=..., ...)`` and
``await reader.close()`` on the way out.

One prebuilt statement, one round trip. It goes to the driver directly, compiled once by
SQLAlchemy with its own parameter and timestamp conversions: on SQLite through the adapted
cursor a read costs five hops to aiosqlite's thread, here one (about 0.25 ms against 0.12 ms
on the 2-core machine, bench/RESULTS.md, issue 9). ``PredictReader`` keeps a few connections
for these reads: taking one from the pool per request added a checkout, the reset's
rollback at the return and, on PostgreSQL, the pre-ping, each a round trip (two to three
times the read itself). No transaction is ever open on them, so every read sees the latest
committed samples.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.trainer.anomaly.repository import SAMPLE_COLUMNS, SampleRow
from shared.tables import anomaly_thresholds as thresholds
from shared.tables import metrics_history as mh

_LATEST = (
    sa.select(*SAMPLE_COLUMNS)
    .where(
        mh.c.host == sa.bindparam("host"),
        mh.c.timestamp >= sa.bindparam("not_before"),
        mh.c.timestamp <= sa.bindparam("not_after"),
    )
    .order_by(mh.c.timestamp.desc(), mh.c.id.desc())
    .limit(1)
    .subquery("latest")
)
_OWN = sa.select(thresholds.c.threshold).where(thresholds.c.host == sa.bindparam("host"))
_ONE = sa.select(sa.literal_column("1").label("one")).subquery("one")  # the row joined to
PREDICT_READ = sa.select(_OWN.scalar_subquery().label("own"), *_LATEST.c).select_from(
    _ONE.outerjoin(_LATEST, sa.true())
)
_TIMESTAMP_AT = 2  # the sample's timestamp in a row of PREDICT_READ (after own and id)
_TIMES = ("not_before", "not_after")


async def predict_reads(
    conn: AsyncConnection, *, host: str, not_before: datetime, not_after: datetime
) -> tuple[SampleRow | None, float | None]:
    """A host's newest sample stored between the two times, if any (``SAMPLE_COLUMNS``
    order), and its own threshold, if feedback set one."""
    params = {"host": host, "not_before": not_before, "not_after": not_after}
    return _answer(await _raw_read(conn, params))


def _answer(row: list[Any]) -> tuple[SampleRow | None, float | None]:
    own = None if row[0] is None else float(row[0])
    return (None if row[1] is None else tuple(row[1:])), own


class PredictReader:
    """``predict_reads`` on a few connections kept for them (``connections``), taken from the
    engine's pool as the reads need them and given back by ``close``. A read that fails drops
    its connection (a later read takes a new one), so a database restart costs the reads in
    flight, which the caller answers as the database being unavailable.

    On a SQLite file the read runs on the event loop, on a connection of its own that never
    waits for a lock (``timeout=0``, no transaction): a WAL read of one indexed row takes
    tens of microseconds, less than handing it to aiosqlite's thread, whose wake-ups made
    the service's threads take turns on the GIL on every request (a fifth of the trainer's
    time at 50 connections). Should the file be busy, the read goes the aiosqlite way."""

    def __init__(self, engine: AsyncEngine, *, connections: int = 4) -> None:
        self.engine = engine
        self._idle: list[AsyncConnection] = []
        self._slots = asyncio.Semaphore(connections)
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._path = database if database and database != ":memory:" else None
        self._direct: sqlite3.Connection | None = None

    async def read(
        self, *, host: str, not_before: datetime, not_after: datetime
    ) -> tuple[SampleRow | None, float | None]:
        params = {"host": host, "not_before": not_before, "not_after": not_after}
        if self._path is not None:
            row = self._direct_read(params)
            if row is not None:
                return _answer(row)
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self.engine.connect()
            try:
                row = await _raw_read(conn, params)
            except BaseException:
                await _drop(conn)
                raise
            self._idle.append(conn)
        return _answer(row)

    def _direct_read(self, params: dict[str, Any]) -> list[Any] | None:
        """The read on the loop's own SQLite connection; None if the file is busy."""
        dialect = self.engine.dialect
        sql, args = _arguments(dialect, params)
        try:
            if self._direct is None:
                uri = Path(self._path or "").resolve().as_uri() + "?mode=rw"  # never creates it
                self._direct = sqlite3.connect(
                    uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
                )
                self._direct.execute("PRAGMA query_only=ON")
            row = list(self._direct.execute(sql, args).fetchall()[0])
        except sqlite3.OperationalError:
            return None  # locked, or the file went away: the pooled way says which
        return _converted(dialect, row)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await _drop(conn)
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()


async def _drop(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
    finally:
        await conn.close()


_Compiled = tuple[
    str, list[str], dict[str, Any], Callable[..., Any] | None, Callable[..., Any] | None
]
_COMPILED: dict[tuple[str, str], _Compiled] = {}  # by dialect and driver: one entry each


def _compiled(dialect: Dialect) -> _Compiled:
    """The statement as SQLAlchemy renders it for ``dialect``: text, parameter order, fixed
    parameters (the limit), and the timestamp's bind and result conversions."""
    key = (dialect.name, dialect.driver)
    found = _COMPILED.get(key)
    if found is not None:
        return found
    compiled = PREDICT_READ.compile(dialect=dialect)
    fixed = dict(compiled.construct_params({"host": None, "not_before": None, "not_after": None}))
    timestamp = mh.c.timestamp.type.dialect_impl(dialect)
    bind: Callable[..., Any] | None = timestamp.bind_processor(dialect)
    result: Callable[..., Any] | None = timestamp.result_processor(dialect, None)
    found = _COMPILED[key] = (
        compiled.string,
        list(compiled.positiontup or ()),
        fixed,
        bind,
        result,
    )
    return found


def _arguments(dialect: Dialect, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """The statement's text for ``dialect`` and its positional arguments, converted."""
    sql, order, fixed, bind, _result = _compiled(dialect)
    values = {**fixed, **params}
    if bind is not None:
        for name in _TIMES:
            values[name] = bind(values[name])
    return sql, [values[n] for n in order]


def _converted(dialect: Dialect, row: list[Any]) -> list[Any]:
    result = _compiled(dialect)[4]
    if result is not None and row[_TIMESTAMP_AT] is not None:
        row[_TIMESTAMP_AT] = result(row[_TIMESTAMP_AT])
    return row


async def _raw_read(conn: AsyncConnection, params: dict[str, Any]) -> list[Any]:
    """The statement on the driver's own connection (aiosqlite or asyncpg): one round trip."""
    sql, args = _arguments(conn.dialect, params)
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if conn.dialect.name == "sqlite":
        row = list((await driver.execute_fetchall(sql, args))[0])
    else:
        row = list(await driver.fetchrow(sql, *args))
    return _converted(conn.dialect, row)
