"""SQL of incident analysis: what an evidence pack is read from, and the stored analyses.

Usage: ``pack = await read_pack(engine, incident_id, now=utcnow())``;
``row = await insert_analysis(conn, values)``; every function runs in the caller's connection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.trainer.analysis import repository_pg
from services.trainer.analysis.evidence import (
    EvidenceItem,
    EvidencePack,
    Samples,
    build_pack,
    incident_window,
    signature,
)
from services.trainer.analysis.items import (
    BREACH_LOOKBACK,
    BREACHES,
    FAILURES,
    FEEDBACK_LEAD,
    FEEDBACK_OPEN,
    FORECAST_AHEAD,
    MODEL_CHANGES,
    MODELS,
    SIMILAR_SCAN,
    breach_item,
    candidate,
    failure_item,
    forecast_item,
    model_item,
    most_similar,
    similar_item,
)
from shared.catalogue import METRIC_NAMES
from shared.clock import utc
from shared.db import row_dict
from shared.errors import NotFound
from shared.schemas.analysis import AnalysisListQuery, AnalysisOut
from shared.tables import (
    METRIC_COLUMNS,
    anomaly_scores,
    failure_predictions,
    forecast_generations,
    incidents,
    llm_analyses,
    metric_forecasts,
    metrics_history,
    ml_models,
)


async def read_incident(conn: AsyncConnection, incident_id: int) -> dict[str, Any]:
    found = (await conn.execute(sa.select(incidents).where(incidents.c.id == incident_id))).first()
    if found is None:
        raise NotFound(f"incident {incident_id} not found")
    return row_dict(found._mapping)


async def read_samples(conn: AsyncConnection, host: str, start: datetime, end: datetime) -> Samples:
    mh = metrics_history
    query = (
        sa.select(mh.c.timestamp, *METRIC_COLUMNS)
        .where(mh.c.host == host, mh.c.timestamp >= start, mh.c.timestamp <= end)
        .order_by(mh.c.timestamp)
    )
    rows = (await conn.execute(query)).all()
    times = np.array([utc(r[0]).timestamp() for r in rows], dtype=np.float64)
    # None (a missing metric) becomes NaN
    table = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), len(METRIC_NAMES))
    return Samples(times, {m: table[:, j] for j, m in enumerate(METRIC_NAMES)})


async def read_scores(
    conn: AsyncConnection, host: str, start: datetime, end: datetime, *, during: datetime
) -> list[dict[str, Any]]:
    s = anomaly_scores
    # the per-metric readings of the window's own scores only: those before are not decoded
    readings = sa.case((s.c.timestamp >= during, s.c.contributions), else_=sa.null())
    query = (
        sa.select(s.c.timestamp, s.c.score, s.c.threshold, s.c.is_anomaly)
        .add_columns(readings.label("contributions"))
        .where(s.c.host == host, s.c.timestamp >= start, s.c.timestamp <= end)
        .order_by(s.c.timestamp, s.c.id)
    )
    return [row_dict(r._mapping) for r in await conn.execute(query)]


async def forecast_items(
    conn: AsyncConnection, host: str, at: datetime, window_start: datetime
) -> list[EvidenceItem]:
    """The host's stored forecasts of the next 24 h (peak and bounds per metric), its predicted
    breaches with their probabilities, and its latest failure predictions."""
    f, g = metric_forecasts, forecast_generations
    query = (
        sa.select(
            f.c.metric,
            sa.func.max(f.c.yhat),
            sa.func.max(f.c.yhat_upper),
            sa.func.min(f.c.target_timestamp),
            sa.func.max(f.c.target_timestamp),
            sa.func.max(f.c.generated_at),
        )
        .join(
            g,
            sa.and_(
                g.c.host == f.c.host, g.c.metric == f.c.metric, g.c.generated_at == f.c.generated_at
            ),
        )
        .where(
            f.c.host == host,
            f.c.target_timestamp >= at,
            f.c.target_timestamp <= at + FORECAST_AHEAD,
        )
        .group_by(f.c.metric)
        .order_by(f.c.metric)
    )
    items = [forecast_item(r) for r in await conn.execute(query)]
    i = incidents
    breaches = (
        sa.select(i.c.id, i.c.metric, i.c.details, i.c.status, i.c.started_at)
        .where(
            i.c.host == host,
            i.c.type == "predicted_breach",
            sa.or_(i.c.status == "open", i.c.started_at >= window_start - BREACH_LOOKBACK),
        )
        .order_by(i.c.started_at.desc())
        .limit(BREACHES)
    )
    items += [breach_item(r) for r in await conn.execute(breaches)]
    fp = failure_predictions
    failures = (
        sa.select(fp.c.id, fp.c.timestamp, fp.c.horizon_minutes, fp.c.failure_probability)
        .add_columns(fp.c.predicted_failure_type)
        .where(fp.c.host == host, fp.c.timestamp <= at)
        .order_by(fp.c.timestamp.desc())
        .limit(FAILURES)
    )
    items += [failure_item(r) for r in await conn.execute(failures)]
    return items


async def past_incidents(conn: AsyncConnection, incident: dict[str, Any]) -> list[dict[str, Any]]:
    """The latest incidents before this one, on any host: the candidates of similarity."""
    i = incidents
    query = (
        sa.select(i.c.id, i.c.host, i.c.type, i.c.metric, i.c.started_at, i.c.resolved_at)
        .add_columns(
            # only the parts of the details used: no decoding of every incident's scores
            i.c.details["top_metrics"].label("top_metrics"),
            i.c.details["resolution"].label("resolution"),
        )
        .where(i.c.id != incident["id"], i.c.started_at <= incident["started_at"])
        .order_by(i.c.started_at.desc(), i.c.id.desc())
        .limit(SIMILAR_SCAN)
    )
    return [candidate(r) for r in await conn.execute(query)]


async def similar_items(
    conn: AsyncConnection, ranked: list[tuple[float, dict[str, Any]]]
) -> list[EvidenceItem]:
    """The similar past incidents with their latest analysis, the feedback on their scores and
    how they were resolved (two queries for all of them)."""
    if not ranked:
        return []
    a, s = llm_analyses, anomaly_scores
    ids = [other["id"] for _sim, other in ranked]
    latest = (
        sa.select(a.c.incident_id, sa.func.max(a.c.id).label("id"))
        .where(a.c.incident_id.in_(ids))
        .group_by(a.c.incident_id)
        .subquery()
    )
    analyses = {
        r.incident_id: (r.category, r.summary)
        for r in await conn.execute(
            sa.select(a.c.incident_id, a.c.category, a.c.summary).join(
                latest, latest.c.id == a.c.id
            )
        )
    }
    per_incident = [
        sa.select(sa.literal(other["id"]).label("incident_id"), s.c.feedback).where(
            s.c.host == other["host"],
            s.c.timestamp >= other["started_at"] - FEEDBACK_LEAD,
            s.c.timestamp <= (other["resolved_at"] or other["started_at"] + FEEDBACK_OPEN),
            s.c.feedback.is_not(None),
        )
        for _sim, other in ranked
    ]
    union = sa.union_all(*per_incident).subquery()
    verdicts: dict[int, dict[str, int]] = {}
    counted = (
        sa.select(union.c.incident_id, union.c.feedback, sa.func.count())
        .group_by(union.c.incident_id, union.c.feedback)
        .order_by(union.c.incident_id, union.c.feedback)
    )
    for incident_id, feedback, n in await conn.execute(counted):
        verdicts.setdefault(int(incident_id), {})[str(feedback)] = int(n)
    return [similar_item(sim, other, analyses, verdicts) for sim, other in ranked]


async def model_items(conn: AsyncConnection, host: str, end: datetime) -> list[EvidenceItem]:
    """Model versions made or activated for the host (or every host) in the week before."""
    m = ml_models
    changed = sa.func.coalesce(m.c.activated_at, m.c.created_at)
    query = (
        sa.select(m.c.id, m.c.name, m.c.model_type, m.c.version, m.c.status, m.c.metric)
        .add_columns(m.c.host, m.c.created_at, m.c.activated_at)
        .where(
            sa.or_(m.c.host == host, m.c.host.is_(None)),
            changed >= end - MODEL_CHANGES,
            changed <= end,
        )
        .order_by(changed.desc())
        .limit(MODELS)
    )
    return [model_item(r) for r in await conn.execute(query)]


async def read_pack(
    engine: AsyncEngine, incident_id: int, *, now: datetime, portable: bool = False
) -> EvidencePack:
    """The evidence pack of an incident, read on one connection: on PostgreSQL in three
    statements on its asyncpg connection (``repository_pg``), elsewhere (or ``portable``) in
    ten short SQLAlchemy queries; the same pack either way (tests/trainer/analysis/
    test_pack_paths.py; figures in bench/RESULTS.md, Issue 13)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql" and not portable:
            raw = await conn.get_raw_connection()
            return await repository_pg.read_pack(raw.driver_connection, incident_id, now=now)
        incident = await read_incident(conn, incident_id)
        window = incident_window(incident, now=now)
        host = incident["host"]
        samples = await read_samples(conn, host, window.before_start, window.after_end)
        scores = await read_scores(conn, host, window.before_start, window.end, during=window.start)
        forecasts = await forecast_items(conn, host, window.end, window.start)
        models = await model_items(conn, host, window.end)
        candidates = await past_incidents(conn, incident)
        pack = build_pack(
            incident, samples=samples, scores=scores, forecasts=forecasts, models=models, now=now
        )
        ranked = most_similar(candidates, signature(incident) | set(list(pack.metrics)[:3]))
        pack.items += await similar_items(conn, ranked)
    return pack


async def insert_analysis(conn: AsyncConnection, values: dict[str, Any]) -> AnalysisOut:
    new_id = (
        await conn.execute(sa.insert(llm_analyses).values(**values).returning(llm_analyses.c.id))
    ).scalar_one()
    return await get_analysis(conn, int(new_id))


async def get_analysis(conn: AsyncConnection, analysis_id: int) -> AnalysisOut:
    found = (
        await conn.execute(sa.select(llm_analyses).where(llm_analyses.c.id == analysis_id))
    ).first()
    if found is None:
        raise NotFound(f"analysis {analysis_id} not found")
    return AnalysisOut.model_validate(row_dict(found._mapping))


async def latest_analysis(conn: AsyncConnection, incident_id: int) -> AnalysisOut | None:
    a = llm_analyses
    found = (
        await conn.execute(
            sa.select(a).where(a.c.incident_id == incident_id).order_by(a.c.id.desc()).limit(1)
        )
    ).first()
    return AnalysisOut.model_validate(row_dict(found._mapping)) if found else None


async def list_analyses(conn: AsyncConnection, q: AnalysisListQuery) -> list[AnalysisOut]:
    a = llm_analyses
    query = sa.select(a).order_by(a.c.id.desc())
    if q.incident_id is not None:
        query = query.where(a.c.incident_id == q.incident_id)
    if q.host is not None:
        query = query.join(incidents, incidents.c.id == a.c.incident_id).where(
            incidents.c.host == q.host
        )
    if q.provider is not None:
        query = query.where(a.c.provider == q.provider)
    if q.category is not None:
        query = query.where(a.c.category == q.category)
    if q.fallback is not None:
        query = query.where(a.c.fallback == q.fallback)
    rows = await conn.execute(query.limit(q.limit))
    return [AnalysisOut.model_validate(row_dict(r._mapping)) for r in rows]


async def unanalysed_open_incidents(conn: AsyncConnection, *, limit: int) -> list[int]:
    """Open incidents without any analysis, oldest first (those raised by other services)."""
    i, a = incidents, llm_analyses
    query = (
        sa.select(i.c.id)
        .where(
            i.c.status == "open",
            ~sa.exists().where(a.c.incident_id == i.c.id),
        )
        .order_by(i.c.started_at)
        .limit(limit)
    )
    return [int(r[0]) for r in await conn.execute(query)]
