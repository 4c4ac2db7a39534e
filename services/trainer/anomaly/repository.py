"""SQL of the anomaly detector: training history, new samples to score, anomaly scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.catalogue import METRIC_NAMES
from shared.db import utc
from shared.errors import NotFound
from shared.severity import SEVERITIES
from shared.tables import anomaly_scores as scores
from shared.tables import metrics_history as mh

Row = tuple[Any, ...]
SAMPLE_COLUMNS = [mh.c.id, mh.c.timestamp, mh.c.host, *(mh.c[m] for m in METRIC_NAMES), mh.c.label]
# Rows fetched per round trip when streaming history: the event loop gets control between.
_PARTITION = 1000


def rows_to_frame(rows: Sequence[Row]) -> pd.DataFrame:
    """Rows in SAMPLE_COLUMNS order as a frame with a UTC 'timestamp' and float metrics."""
    columns = [c.name for c in SAMPLE_COLUMNS]
    frame = pd.DataFrame.from_records(list(rows), columns=columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="mixed")
    for name in METRIC_NAMES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
    return frame


async def busiest_host(
    conn: AsyncConnection, *, start: datetime | None, end: datetime | None
) -> tuple[str | None, int]:
    """The host with the most samples in the range, and its count."""
    query = sa.select(mh.c.host, sa.func.count().label("n")).group_by(mh.c.host)
    query = _range(query, start=start, end=end)
    row = (await conn.execute(query.order_by(sa.desc("n"), mh.c.host).limit(1))).first()
    return (str(row[0]), int(row[1])) if row else (None, 0)


async def count_samples(
    conn: AsyncConnection, *, host: str, start: datetime | None, end: datetime | None
) -> int:
    query = sa.select(sa.func.count()).select_from(mh).where(mh.c.host == host)
    return int((await conn.execute(_range(query, start=start, end=end))).scalar_one())


async def load_history(
    conn: AsyncConnection, *, host: str, start: datetime | None, end: datetime | None
) -> list[Row]:
    """A host's samples in time order, streamed in partitions (raw rows: build the frame
    off the event loop with ``rows_to_frame``)."""
    query = _range(sa.select(*SAMPLE_COLUMNS).where(mh.c.host == host), start=start, end=end)
    result = await conn.stream(query.order_by(mh.c.timestamp, mh.c.id))
    out: list[Row] = []
    async for part in result.partitions(_PARTITION):
        out.extend(tuple(r) for r in part)
    return out


async def recent_samples(
    conn: AsyncConnection, *, host: str, limit: int, max_id: int | None = None
) -> list[Row]:
    """A host's latest ``limit`` samples (ids up to ``max_id``), oldest first."""
    query = sa.select(*SAMPLE_COLUMNS).where(mh.c.host == host)
    if max_id is not None:
        query = query.where(mh.c.id <= max_id)
    query = query.order_by(mh.c.timestamp.desc(), mh.c.id.desc()).limit(limit)
    rows = [tuple(r) for r in await conn.execute(query)]
    rows.reverse()
    return rows


async def samples_after(conn: AsyncConnection, after_id: int, limit: int) -> list[Row]:
    """Samples with id > ``after_id``, by id: what the scoring loop has not seen yet."""
    query = sa.select(*SAMPLE_COLUMNS).where(mh.c.id > after_id).order_by(mh.c.id).limit(limit)
    return [tuple(r) for r in await conn.execute(query)]


async def max_sample_id(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.max(mh.c.id)))).scalar_one() or 0)


async def last_scored_sample_id(conn: AsyncConnection) -> int | None:
    query = sa.select(sa.func.max(scores.c.metrics_id))
    value = (await conn.execute(query)).scalar_one()
    return int(value) if value is not None else None


async def insert_scores(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Store a batch of scores (one executemany)."""
    if rows:
        await conn.execute(sa.insert(scores), list(rows))


@dataclass(frozen=True, slots=True)
class ScoreFilter:
    host: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    min_severity: str | None = None
    anomalies_only: bool = False


async def list_scores(
    conn: AsyncConnection, flt: ScoreFilter, *, limit: int
) -> list[dict[str, Any]]:
    query = sa.select(scores).order_by(scores.c.timestamp.desc(), scores.c.id.desc())
    if flt.host is not None:
        query = query.where(scores.c.host == flt.host)
    if flt.start is not None:
        query = query.where(scores.c.timestamp >= flt.start)
    if flt.end is not None:
        query = query.where(scores.c.timestamp <= flt.end)
    if flt.min_severity is not None:
        allowed = SEVERITIES[SEVERITIES.index(flt.min_severity) :]
        query = query.where(scores.c.severity.in_(allowed))
    if flt.anomalies_only:
        query = query.where(scores.c.is_anomaly.is_(True))
    return [_score_row(r._mapping) for r in await conn.execute(query.limit(limit))]


async def get_score(conn: AsyncConnection, score_id: int) -> dict[str, Any]:
    row = (await conn.execute(sa.select(scores).where(scores.c.id == score_id))).first()
    if row is None:
        raise NotFound(f"anomaly score {score_id} not found")
    return _score_row(row._mapping)


async def set_feedback(
    conn: AsyncConnection, score_id: int, *, feedback: str, at: datetime
) -> None:
    await conn.execute(
        sa.update(scores).where(scores.c.id == score_id).values(feedback=feedback, feedback_at=at)
    )


def _score_row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("timestamp", "feedback_at", "created_at"):
        if row.get(key) is not None:
            row[key] = utc(row[key])
    return row


def _range(query: Any, *, start: datetime | None, end: datetime | None) -> Any:
    if start is not None:
        query = query.where(mh.c.timestamp >= start)
    if end is not None:
        query = query.where(mh.c.timestamp <= end)
    return query
