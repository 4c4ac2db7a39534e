"""SQL of the collector: store samples, statistics, export streams, retention."""

from __future__ import annotations

import asyncio
import csv
import io
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.catalogue import METRIC_NAMES
from shared.db import SAMPLE_COLUMNS, bulk_insert_samples, db_timestamp, utc, utcnow
from shared.tables import metrics_history as mh

ExportFormat = Literal["json", "csv"]


@dataclass(frozen=True, slots=True)
class SampleFilter:
    host: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def clauses(self) -> list[sa.ColumnElement[bool]]:
        out: list[sa.ColumnElement[bool]] = []
        if self.host is not None:
            out.append(mh.c.host == self.host)
        if self.start is not None:
            out.append(mh.c.timestamp >= self.start)
        if self.end is not None:
            out.append(mh.c.timestamp <= self.end)
        return out


async def insert_samples(conn: AsyncConnection, samples: Sequence[dict[str, Any]]) -> int:
    rows = ([s.get(c) for c in SAMPLE_COLUMNS] for s in samples)
    return await bulk_insert_samples(conn, rows)


async def summary(conn: AsyncConnection) -> tuple[int, datetime | None, datetime | None]:
    """Row count, oldest and newest timestamp of all stored samples."""
    row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(mh.c.timestamp), sa.func.max(mh.c.timestamp))
        )
    ).one()
    oldest = utc(row[1]) if row[1] is not None else None
    newest = utc(row[2]) if row[2] is not None else None
    return int(row[0]), oldest, newest


async def _aggregate_metrics(
    engine: AsyncEngine, flt: SampleFilter, names: Sequence[str]
) -> list[Any]:
    """count(*), first and last timestamp, then count/mean/std/min/max inputs for `names`."""
    postgres = engine.dialect.name == "postgresql"
    columns: list[Any] = [sa.func.count(), sa.func.min(mh.c.timestamp), sa.func.max(mh.c.timestamp)]
    for name in names:
        col = mh.c[name]
        if postgres:
            columns += [
                sa.func.count(col),
                sa.func.avg(col),
                sa.func.stddev_samp(col),
                sa.func.min(col),
                sa.func.max(col),
            ]
        else:  # SQLite has no stddev: sums of squares, finished in Python
            columns += [
                sa.func.count(col),
                sa.func.total(col),
                sa.func.total(col * col),
                sa.func.min(col),
                sa.func.max(col),
            ]
    async with engine.connect() as conn:
        return list((await conn.execute(sa.select(*columns).where(*flt.clauses()))).one())


async def _group_counts(engine: AsyncEngine, flt: SampleFilter, column: str) -> list[Any]:
    col = mh.c[column]
    query = sa.select(col, sa.func.count()).where(*flt.clauses()).group_by(col)
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


def _summary(postgres: bool, count: int, a: Any, b: Any, mn: Any, mx: Any) -> dict[str, Any]:
    if not count:
        return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
    if postgres:
        mean, std = float(a), float(b) if b is not None else 0.0
    else:
        mean = float(a) / count
        var = max(float(b) - float(a) * float(a) / count, 0.0) / (count - 1) if count > 1 else 0.0
        std = math.sqrt(var)
    return {"mean": mean, "std": std, "min": float(mn), "max": float(mx), "count": int(count)}


async def statistics(engine: AsyncEngine, flt: SampleFilter) -> dict[str, Any]:
    """The spec's statistics, computed in SQL: one aggregate scan, with the label and host
    counts queried concurrently on their own connections (each can use its index)."""
    postgres = engine.dialect.name == "postgresql"
    # The aggregates are CPU-bound in the database: two scans over half the metrics each run
    # on two cores (two PostgreSQL backends, or two SQLite connections in their own threads).
    half = len(METRIC_NAMES) // 2
    first, second, labels, hosts = await asyncio.gather(
        _aggregate_metrics(engine, flt, METRIC_NAMES[:half]),
        _aggregate_metrics(engine, flt, METRIC_NAMES[half:]),
        _group_counts(engine, flt, "label"),
        _group_counts(engine, flt, "host")
        if flt.host is None
        else asyncio.sleep(0, [(flt.host, 1)]),
    )
    row = first + second[3:]
    total = int(row[0])
    start = utc(row[1]) if row[1] is not None else None
    end = utc(row[2]) if row[2] is not None else None
    metrics = {
        name: _summary(postgres, *row[3 + 5 * i : 8 + 5 * i]) for i, name in enumerate(METRIC_NAMES)
    }
    duration = (end - start).total_seconds() / 3600.0 if start and end else 0.0
    return {
        "total_samples": total,
        "metrics": metrics,
        "data_duration_hours": duration,
        "label_distribution": {k: int(v) for k, v in sorted(labels, key=lambda kv: -kv[1])},
        "hosts": sorted(h for h, n in hosts if n) if total else [],
        "start": start,
        "end": end,
    }


async def delete_older_than(conn: AsyncConnection, days: float) -> int:
    cutoff = utcnow() - timedelta(days=days)
    result = await conn.execute(sa.delete(mh).where(mh.c.timestamp < cutoff))
    return int(result.rowcount or 0)


# ---------------------------------------------------------------- export

EXPORT_COLUMNS: tuple[str, ...] = ("timestamp", "host", *METRIC_NAMES, "label")
_CHUNK_ROWS = 5000


def _pg_where(flt: SampleFilter) -> tuple[str, list[Any]]:
    parts: list[str] = []
    args: list[Any] = []
    if flt.host is not None:
        args.append(flt.host)
        parts.append(f"host = ${len(args)}")
    if flt.start is not None:
        args.append(flt.start)
        parts.append(f"timestamp >= ${len(args)}")
    if flt.end is not None:
        args.append(flt.end)
        parts.append(f"timestamp <= ${len(args)}")
    return (" WHERE " + " AND ".join(parts)) if parts else "", args


def _pg_export_query(fmt: ExportFormat, flt: SampleFilter) -> tuple[str, list[Any], dict[str, Any]]:
    """The SELECT that asyncpg wraps in COPY ... TO STDOUT, its arguments and COPY options."""
    where, args = _pg_where(flt)
    iso = "to_json(timestamp) #>> '{}'"
    if fmt == "csv":
        cols = ", ".join([f"{iso} AS timestamp", "host", *METRIC_NAMES, "label"])
        select = f"SELECT {cols} FROM metrics_history{where} ORDER BY timestamp, id"
        return select, args, {"format": "csv", "header": True}
    pairs = ", ".join(
        [
            f"'timestamp', {iso}",
            "'host', host",
            *(f"'{m}', {m}" for m in METRIC_NAMES),
            "'label', label",
        ]
    )
    select = f"SELECT json_build_object({pairs}) FROM metrics_history{where} ORDER BY timestamp, id"
    # JSON text holds no raw control characters, so with these separators csv never quotes it.
    return select, args, {"format": "csv", "delimiter": "\x01", "quote": "\x02"}


async def _pg_copy_stream(
    engine: AsyncEngine, fmt: ExportFormat, flt: SampleFilter
) -> AsyncIterator[bytes]:
    """Chunks of COPY ... TO STDOUT, with backpressure through a small queue."""
    query, args, options = _pg_export_query(fmt, flt)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection

        async def sink(chunk: bytes) -> None:
            await queue.put(bytes(chunk))

        async def run() -> None:
            try:
                await driver.copy_from_query(query, *args, output=sink, **options)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            while (chunk := await queue.get()) is not None:
                yield chunk
            await task
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:  # noqa: BLE001 - the client went away; the copy is moot
                    # The connection is mid-COPY: drop it rather than return it to the pool.
                    await conn.invalidate()


async def _pg_json(engine: AsyncEngine, flt: SampleFilter) -> AsyncIterator[bytes]:
    yield b'{"samples":['
    count = 0
    carry = b""
    for_first = True
    async for chunk in _pg_copy_stream(engine, "json", flt):
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        lines, carry = data[:cut], data[cut + 1 :]
        n = lines.count(b"\n") + 1
        count += n
        body = lines.replace(b"\n", b",")
        yield body if for_first else b"," + body
        for_first = False
    yield b'],"count":' + str(count).encode() + b"}"


def _sqlite_iso(value: str) -> str:
    # Stored as 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC.
    if len(value) > 19 and value[20:].strip("0") == "":
        value = value[:19]
    return value[:10] + "T" + value[11:] + "+00:00"


async def _sqlite_rows(
    engine: AsyncEngine, flt: SampleFilter
) -> AsyncIterator[list[tuple[Any, ...]]]:
    parts: list[str] = []
    args: list[Any] = []
    if flt.host is not None:
        parts.append("host = ?")
        args.append(flt.host)
    if flt.start is not None:
        parts.append("timestamp >= ?")
        args.append(db_timestamp(flt.start, sqlite=True))
    if flt.end is not None:
        parts.append("timestamp <= ?")
        args.append(db_timestamp(flt.end, sqlite=True))
    where = (" WHERE " + " AND ".join(parts)) if parts else ""
    cols = ", ".join(f'"{c}"' for c in EXPORT_COLUMNS)
    sql = f"SELECT {cols} FROM metrics_history{where} ORDER BY timestamp, id"
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        cursor = await driver.execute(sql, args)
        try:
            while rows := await cursor.fetchmany(_CHUNK_ROWS):
                yield [(_sqlite_iso(r[0]), *r[1:]) for r in rows]
        finally:
            await cursor.close()


async def _sqlite_csv(engine: AsyncEngine, flt: SampleFilter) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue().encode()
    async for rows in _sqlite_rows(engine, flt):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(rows)
        yield buffer.getvalue().encode()


async def _sqlite_json(engine: AsyncEngine, flt: SampleFilter) -> AsyncIterator[bytes]:
    yield b'{"samples":['
    count = 0
    async for rows in _sqlite_rows(engine, flt):
        body = orjson.dumps([dict(zip(EXPORT_COLUMNS, r, strict=True)) for r in rows])[1:-1]
        yield body if count == 0 else b"," + body
        count += len(rows)
    yield b'],"count":' + str(count).encode() + b"}"


def export_stream(
    engine: AsyncEngine, fmt: ExportFormat, flt: SampleFilter
) -> AsyncIterator[bytes]:
    """The selected samples, oldest first, as CSV or as `{"samples": [...], "count": n}`."""
    if engine.dialect.name == "postgresql":
        return _pg_json(engine, flt) if fmt == "json" else _pg_copy_stream(engine, "csv", flt)
    return _sqlite_json(engine, flt) if fmt == "json" else _sqlite_csv(engine, flt)
