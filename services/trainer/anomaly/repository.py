"""All SQL of anomaly detection: training history, new samples to score, stored scores, cursor.

Usage: ``rows = await samples_after(conn, cursor, 5000)``; ``await insert_scores(conn, records)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.trainer.anomaly.features import epoch_seconds
from shared.arrays import FloatArray
from shared.catalogue import METRIC_NAMES
from shared.clock import utc
from shared.db import create_engine, row_dict
from shared.errors import Conflict, NotFound
from shared.schemas.anomaly import AnomalyScoreOut, AnomalyScoreQuery
from shared.severity import SEVERITIES
from shared.tables import anomaly_incident_states as states_table
from shared.tables import anomaly_scores as scores
from shared.tables import anomaly_scoring_cursor as cursors
from shared.tables import anomaly_stream_state as states
from shared.tables import anomaly_thresholds as thresholds
from shared.tables import metrics_history as mh
from shared.tables import ml_models, synthetic_windows

# A metrics_history row: id, timestamp, host, the 14 metrics, label (SAMPLE_COLUMNS order).
SampleRow = tuple[Any, ...]
SAMPLE_COLUMNS = [mh.c.id, mh.c.timestamp, mh.c.host, *(mh.c[m] for m in METRIC_NAMES), mh.c.label]
ID, TIMESTAMP, HOST = 0, 1, 2
_COLUMN_INDEX = {c.name: i for i, c in enumerate(SAMPLE_COLUMNS)}
# Rows fetched per round trip when streaming history: the event loop gets control between.
_PARTITION = 1000


def rows_to_frame(rows: Sequence[SampleRow]) -> pd.DataFrame:
    """Rows in SAMPLE_COLUMNS order as a frame with a UTC 'timestamp' and float metrics."""
    columns = [c.name for c in SAMPLE_COLUMNS]
    frame = pd.DataFrame.from_records(list(rows), columns=columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="mixed")
    for name in METRIC_NAMES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
    return frame


def sample_arrays(
    rows: Sequence[SampleRow], metrics: Sequence[str]
) -> tuple[FloatArray, FloatArray]:
    """Epoch seconds and metric values (rows, metrics; NaN = missing) of sample rows."""
    cols = [_COLUMN_INDEX[m] for m in metrics]
    times = epoch_seconds([utc(r[TIMESTAMP]) for r in rows])
    values = np.array(
        [[np.nan if r[c] is None else float(r[c]) for c in cols] for r in rows],
        dtype=np.float64,
    ).reshape(len(rows), len(cols))
    return times, values


def score_record(
    *,
    metrics_id: int | None,
    model_id: int | None,
    timestamp: datetime,
    host: str,
    score: float,
    threshold: float,
    is_anomaly: bool,
    severity: str,
    contributions: list[dict[str, Any]],
) -> dict[str, Any]:
    """One anomaly_scores row to insert (``insert_scores``)."""
    return {
        "metrics_id": metrics_id,
        "model_id": model_id,
        "timestamp": timestamp,
        "host": host,
        "score": score,
        "raw_score": None,
        "threshold": threshold,
        "is_anomaly": is_anomaly,
        "severity": severity,
        "contributions": contributions,
    }


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
) -> list[SampleRow]:
    """A host's samples in time order, streamed in partitions."""
    query = _range(sa.select(*SAMPLE_COLUMNS).where(mh.c.host == host), start=start, end=end)
    result = await conn.stream(query.order_by(mh.c.timestamp, mh.c.id))
    out: list[SampleRow] = []
    async for part in result.partitions(_PARTITION):
        out.extend(tuple(r) for r in part)
    return out


async def read_history_frame(
    database_url: str, *, host: str, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    """A host's samples as a frame, over a connection of its own (for the training process)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await load_history(conn, host=host, start=start, end=end)
    finally:
        await engine.dispose()
    if not rows:
        raise Conflict(f"no samples of host {host} in the requested range")
    return rows_to_frame(rows)


async def recent_samples(
    conn: AsyncConnection, *, host: str, limit: int, max_id: int | None = None
) -> list[SampleRow]:
    """A host's latest ``limit`` samples (ids up to ``max_id``), oldest first."""
    query = sa.select(*SAMPLE_COLUMNS).where(mh.c.host == host)
    if max_id is not None:
        query = query.where(mh.c.id <= max_id)
    query = query.order_by(mh.c.timestamp.desc(), mh.c.id.desc()).limit(limit)
    rows = [tuple(r) for r in await conn.execute(query)]
    rows.reverse()
    return rows


async def samples_after(conn: AsyncConnection, after_id: int, limit: int) -> list[SampleRow]:
    """Samples with id > ``after_id``, by id: what the scoring loop has not seen yet."""
    query = sa.select(*SAMPLE_COLUMNS).where(mh.c.id > after_id).order_by(mh.c.id).limit(limit)
    return [tuple(r) for r in await conn.execute(query)]


SCORING_CURSOR = "anomaly-scoring"


async def load_cursor(conn: AsyncConnection) -> int:
    """Where scoring stands: the stored cursor; else (a database scored before the cursor was
    kept) after the last scored sample; else 0, so every host is scored from its first sample."""
    query = sa.select(cursors.c.last_id).where(cursors.c.name == SCORING_CURSOR)
    stored = (await conn.execute(query)).scalar_one_or_none()
    if stored is not None:
        return int(stored)
    last = (await conn.execute(sa.select(sa.func.max(scores.c.metrics_id)))).scalar_one()
    return int(last) if last is not None else 0


async def save_cursor(conn: AsyncConnection, last_id: int, *, at: datetime) -> None:
    record = {"name": SCORING_CURSOR, "last_id": last_id, "updated_at": at}
    await _upsert(conn, cursors, [record], key="name")


async def load_stream_state(conn: AsyncConnection, host: str) -> bytes | None:
    """A host's saved streaming detectors (``HostStream.to_bytes``), if any."""
    query = sa.select(states.c.state).where(states.c.host == host)
    blob = (await conn.execute(query)).scalar_one_or_none()
    return bytes(blob) if blob is not None else None


async def save_stream_states(conn: AsyncConnection, records: Sequence[dict[str, Any]]) -> None:
    """Insert or replace hosts' states: dicts of host, state, last_ts, late, updated_at."""
    if records:
        await _upsert(conn, states, list(records), key="host")


async def hosts_with_history(conn: AsyncConnection, *, min_samples: int) -> list[tuple[str, int]]:
    """Hosts with at least ``min_samples`` samples, and their counts, most first."""
    n = sa.func.count().label("n")
    query = sa.select(mh.c.host, n).group_by(mh.c.host).having(sa.func.count() >= min_samples)
    rows = await conn.execute(query.order_by(sa.desc("n"), mh.c.host))
    return [(str(r[0]), int(r[1])) for r in rows]


async def live_samples(conn: AsyncConnection, ids: set[int]) -> set[int]:
    """Which of ``ids`` are still stored; on PostgreSQL held (FOR KEY SHARE) until the
    transaction ends, so a concurrent delete waits for it (SQLite's writers take turns)."""
    if not ids:
        return set()
    query = sa.select(mh.c.id).where(mh.c.id.in_(ids)).with_for_update(read=True, key_share=True)
    return set((await conn.execute(query)).scalars())


async def insert_scores(conn: AsyncConnection, records: Sequence[dict[str, Any]]) -> None:
    """Store a batch of ``score_record`` rows (one executemany).

    A score whose sample is gone meanwhile (a regeneration replaced the host's window) keeps
    no reference to it, as if the sample had been deleted after the score was stored.
    """
    if not records:
        return
    ids = {r["metrics_id"] for r in records if r.get("metrics_id") is not None}
    gone = ids - await live_samples(conn, ids)
    if gone:
        records = [{**r, "metrics_id": None} if r.get("metrics_id") in gone else r for r in records]
    await conn.execute(sa.insert(scores), list(records))


async def list_scores(conn: AsyncConnection, query: AnomalyScoreQuery) -> list[AnomalyScoreOut]:
    """Stored scores matching ``query``, newest first."""
    select = sa.select(scores).order_by(scores.c.timestamp.desc(), scores.c.id.desc())
    if query.host is not None:
        select = select.where(scores.c.host == query.host)
    if query.start is not None:
        select = select.where(scores.c.timestamp >= query.start)
    if query.end is not None:
        select = select.where(scores.c.timestamp <= query.end)
    if query.min_severity is not None:
        allowed = SEVERITIES[SEVERITIES.index(query.min_severity) :]
        select = select.where(scores.c.severity.in_(allowed))
    if query.anomalies_only:
        select = select.where(scores.c.is_anomaly.is_(True))
    rows = await conn.execute(select.limit(query.limit))
    return [_score(r._mapping) for r in rows]


async def get_score(conn: AsyncConnection, score_id: int) -> AnomalyScoreOut:
    row = (await conn.execute(sa.select(scores).where(scores.c.id == score_id))).first()
    if row is None:
        raise NotFound(f"anomaly score {score_id} not found")
    return _score(row._mapping)


async def set_feedback(
    conn: AsyncConnection, score_id: int, *, feedback: str, at: datetime
) -> None:
    await conn.execute(
        sa.update(scores).where(scores.c.id == score_id).values(feedback=feedback, feedback_at=at)
    )


async def locked_model_metrics(conn: AsyncConnection, model_id: int) -> dict[str, Any]:
    """A model's stored figures, its row locked until the transaction ends (PostgreSQL), so
    feedback from two processes moves the threshold one after the other."""
    query = sa.select(ml_models.c.metrics).where(ml_models.c.id == model_id).with_for_update()
    metrics = (await conn.execute(query)).scalar_one_or_none()
    if metrics is None:
        raise NotFound(f"model {model_id} not found")
    return dict(metrics)


async def scoring_progress(conn: AsyncConnection) -> tuple[datetime | None, datetime | None]:
    """Times of the newest stored sample and of the newest sample the scoring loop scored."""
    sample = (await conn.execute(sa.select(sa.func.max(mh.c.timestamp)))).scalar_one()
    query = sa.select(sa.func.max(scores.c.timestamp)).where(scores.c.metrics_id.is_not(None))
    scored = (await conn.execute(query)).scalar_one()
    return (utc(sample) if sample else None), (utc(scored) if scored else None)


# -- per-host thresholds and feedback ---------------------------------------------------


async def host_thresholds(conn: AsyncConnection) -> dict[str, float]:
    """Every host's own threshold (hosts absent use ML_ANOMALY_THRESHOLD): one read per pass."""
    rows = await conn.execute(sa.select(thresholds.c.host, thresholds.c.threshold))
    return {str(host): float(value) for host, value in rows}


async def list_thresholds(conn: AsyncConnection, host: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(thresholds).order_by(thresholds.c.host)
    if host is not None:
        query = query.where(thresholds.c.host == host)
    return [row_dict(r._mapping) for r in await conn.execute(query)]


async def locked_threshold(conn: AsyncConnection, host: str) -> dict[str, Any] | None:
    """A host's threshold row, locked until the transaction ends (PostgreSQL), or None."""
    query = sa.select(thresholds).where(thresholds.c.host == host).with_for_update()
    row = (await conn.execute(query)).first()
    return row_dict(row._mapping) if row else None


async def save_threshold(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Insert or replace a host's threshold row (``values`` holds every column)."""
    await _upsert(conn, thresholds, values, key="host")


async def host_recent_scores(conn: AsyncConnection, host: str, *, limit: int) -> list[float]:
    """A host's latest ``limit`` scores (any order): what its threshold range is learned from."""
    query = (
        sa.select(scores.c.score)
        .where(scores.c.host == host)
        .order_by(scores.c.timestamp.desc())
        .limit(limit)
    )
    return [float(v) for v in (await conn.execute(query)).scalars()]


async def host_verdicts(
    conn: AsyncConnection, host: str, *, limit: int = 10_000
) -> list[tuple[float, str]]:
    """(score, feedback) of a host's judged scores, newest first."""
    query = (
        sa.select(scores.c.score, scores.c.feedback)
        .where(scores.c.host == host, scores.c.feedback.is_not(None))
        .order_by(scores.c.timestamp.desc())
        .limit(limit)
    )
    return [(float(s), str(f)) for s, f in await conn.execute(query)]


# -- ML_ANOMALY incident state --------------------------------------------------------------


async def incident_states(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    """Every stored state (hosts in an episode only), locked until the transaction ends."""
    query = sa.select(states_table.c.dedup_key, states_table.c.state).with_for_update()
    return {str(key): dict(state) for key, state in await conn.execute(query)}


async def save_incident_states(
    conn: AsyncConnection, states: dict[str, tuple[str, dict[str, Any]]], *, now: datetime
) -> None:
    """Store each key's (host, state), in one statement."""
    rows = [
        {"dedup_key": key, "host": host, "state": state, "updated_at": now}
        for key, (host, state) in states.items()
    ]
    await _upsert(conn, states_table, rows, key="dedup_key")


async def delete_incident_states(conn: AsyncConnection, keys: Sequence[str]) -> None:
    if keys:
        await conn.execute(sa.delete(states_table).where(states_table.c.dedup_key.in_(keys)))


async def _upsert(
    conn: AsyncConnection,
    table: sa.Table,
    rows: dict[str, Any] | list[dict[str, Any]],
    *,
    key: str,
) -> None:
    """Insert rows, replacing those whose ``key`` exists (one executemany for a list)."""
    rows = [rows] if isinstance(rows, dict) else rows
    if not rows:
        return
    insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    stmt = insert(table)
    update = {k: stmt.excluded[k] for k in rows[0] if k != key}
    await conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=update), rows)


def _score(mapping: Any) -> AnomalyScoreOut:
    return AnomalyScoreOut.model_validate(row_dict(mapping))


def _range(query: Any, *, start: datetime | None, end: datetime | None) -> Any:
    if start is not None:
        query = query.where(mh.c.timestamp >= start)
    if end is not None:
        query = query.where(mh.c.timestamp <= end)
    return query


async def generated_windows(
    conn: AsyncConnection, hosts: Sequence[str], *, after: datetime
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Each host's windows of stored synthetic data that end after ``after``: its rows inside
    them were generated, not observed (``synthetic_windows``)."""
    sw = synthetic_windows
    query = sa.select(sw.c.host, sw.c.first, sw.c.last).where(
        sw.c.host.in_(list(hosts)), sw.c.last >= after
    )
    out: dict[str, list[tuple[datetime, datetime]]] = {}
    for host, first, last in await conn.execute(query):
        out.setdefault(str(host), []).append((utc(first), utc(last)))
    return out
