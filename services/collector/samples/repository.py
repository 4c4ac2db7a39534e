"""SQL of stored samples: inserts, summary, statistics, retention and the export streams.

Usage: `await statistics(engine, SampleFilter(host="web-1"))`, `export_stream(engine, "csv", flt)`.
"""

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

from services.collector.samples.window import SampleFilter
from shared.catalogue import METRIC_NAMES
from shared.clock import utc, utcnow
from shared.db import SAMPLE_COLUMNS, bulk_insert_samples, db_timestamp
from shared.schemas.samples import MetricSummary, StatsResponse
from shared.tables import metrics_history as mh

ExportFormat = Literal["json", "csv"]


@dataclass(frozen=True, slots=True)
class StoredSamples:
    """How many samples are stored, and the oldest and newest timestamp (None when empty)."""

    count: int
    oldest: datetime | None
    newest: datetime | None


def _clauses(flt: SampleFilter) -> list[sa.ColumnElement[bool]]:
    out: list[sa.ColumnElement[bool]] = []
    if flt.host is not None:
        out.append(mh.c.host == flt.host)
    if flt.start is not None:
        out.append(mh.c.timestamp >= flt.start)
    if flt.end is not None:
        out.append(mh.c.timestamp <= flt.end)
    return out


async def insert_samples(conn: AsyncConnection, samples: Sequence[dict[str, Any]]) -> int:
    rows = ([s.get(c) for c in SAMPLE_COLUMNS] for s in samples)
    return await bulk_insert_samples(conn, rows)


async def summary(conn: AsyncConnection) -> StoredSamples:
    """Row count, oldest and newest timestamp of all stored samples."""
    row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(mh.c.timestamp), sa.func.max(mh.c.timestamp))
        )
    ).one()
    oldest = utc(row[1]) if row[1] is not None else None
    newest = utc(row[2]) if row[2] is not None else None
    return StoredSamples(count=int(row[0]), oldest=oldest, newest=newest)


# Per metric: count, sum, sum of squares, min, max. Sums combine across groups and scans.
_MOMENTS = 5


def _moment_columns(names: Sequence[str], *, postgres: bool) -> list[Any]:
    columns: list[Any] = []
    for name in names:
        col = mh.c[name]
        value = sa.cast(col, sa.Float) if postgres else col
        total = sa.func.sum if postgres else sa.func.total  # SQLite's total() is float
        # PostgreSQL raises an underflow error squaring a magnitude below ~1e-154.
        square = sa.case((sa.func.abs(value) < 1e-150, 0.0), else_=value * value)
        columns += [
            sa.func.count(col),
            total(value),
            total(square if postgres else value * value),
            sa.func.min(col),
            sa.func.max(col),
        ]
    return columns


async def _moments(
    engine: AsyncEngine, flt: SampleFilter, names: Sequence[str], *, grouped: bool
) -> list[Any]:
    """[host, label,] count(*), first and last timestamp, then the moments of `names`."""
    postgres = engine.dialect.name == "postgresql"
    keys: list[Any] = [mh.c.host, mh.c.label] if grouped else []
    query = sa.select(
        *keys,
        sa.func.count(),
        sa.func.min(mh.c.timestamp),
        sa.func.max(mh.c.timestamp),
        *_moment_columns(names, postgres=postgres),
    ).where(*_clauses(flt))
    if grouped:
        query = query.group_by(mh.c.host, mh.c.label)
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def _group_counts(engine: AsyncEngine, flt: SampleFilter, column: str) -> list[Any]:
    col = mh.c[column]
    query = sa.select(col, sa.func.count()).where(*_clauses(flt)).group_by(col)
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


def _summary(count: int, total: float, squares: float, lo: Any, hi: Any) -> MetricSummary:
    if not count:
        return MetricSummary(mean=None, std=None, min=None, max=None, count=0)
    mean = total / count
    var = max(squares - total * total / count, 0.0) / (count - 1) if count > 1 else 0.0
    return MetricSummary(
        mean=mean, std=math.sqrt(var), min=float(lo), max=float(hi), count=int(count)
    )


def _accumulate(acc: dict[str, list[Any]], names: Sequence[str], values: Sequence[Any]) -> None:
    for i, name in enumerate(names):
        count, total, squares, lo, hi = values[_MOMENTS * i : _MOMENTS * (i + 1)]
        if not count:
            continue
        a = acc[name]
        a[0] += int(count)
        a[1] += float(total)
        a[2] += float(squares)
        a[3] = float(lo) if a[3] is None else min(a[3], float(lo))
        a[4] = float(hi) if a[4] is None else max(a[4], float(hi))


async def statistics(engine: AsyncEngine, flt: SampleFilter) -> StatsResponse:
    """The spec's statistics, computed in SQL over concurrent scans (docs/collector.md)."""
    postgres = engine.dialect.name == "postgresql"
    split = 5 if postgres else len(METRIC_NAMES) // 2  # grouping costs PostgreSQL extra
    first_names, second_names = METRIC_NAMES[:split], METRIC_NAMES[split:]
    labels: dict[str, int] = {}
    hosts: set[str] = set()
    if postgres:
        groups, (second,) = await asyncio.gather(
            _moments(engine, flt, first_names, grouped=True),
            _moments(engine, flt, second_names, grouped=False),
        )
        first_rows = [row[2:] for row in groups]
        for host, label, n, *_ in groups:
            labels[label] = labels.get(label, 0) + int(n)
            hosts.add(host)
    else:
        (first,), (second,), label_rows, host_rows = await asyncio.gather(
            _moments(engine, flt, first_names, grouped=False),
            _moments(engine, flt, second_names, grouped=False),
            _group_counts(engine, flt, "label"),
            _group_counts(engine, flt, "host"),
        )
        first_rows = [first]
        labels = {label: int(n) for label, n in label_rows}
        hosts = {host for host, n in host_rows if n}

    acc: dict[str, list[Any]] = {name: [0, 0.0, 0.0, None, None] for name in METRIC_NAMES}
    for row in first_rows:
        _accumulate(acc, first_names, row[3:])
    _accumulate(acc, second_names, second[3:])
    total = int(second[0])
    start = utc(second[1]) if second[1] is not None else None
    end = utc(second[2]) if second[2] is not None else None
    duration = (end - start).total_seconds() / 3600.0 if start and end else 0.0
    return StatsResponse(
        total_samples=total,
        metrics={name: _summary(*acc[name]) for name in METRIC_NAMES},
        data_duration_hours=duration,
        label_distribution=dict(sorted(labels.items(), key=lambda kv: -kv[1])),
        hosts=sorted(hosts),
        start=start,
        end=end,
    )


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
