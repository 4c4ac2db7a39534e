"""The evidence pack is the same whichever way it is read: PostgreSQL's three-statement path
(``repository_pg``), the portable ten-query path on PostgreSQL, and SQLite, all seeded with the
same data: samples with a missing metric, scores with feedback, open and resolved incidents of
two hosts (two started at the same minute), an analysis, forecasts, a predicted breach, a
failure prediction and model changes."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.analysis import repository as repo
from services.trainer.analysis.evidence import EvidencePack
from services.trainer.analysis.service import AnalysisService
from services.trainer.anomaly import repository as anomaly_repo
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES
from shared.clock import utcnow
from shared.db import bulk_insert_samples, create_engine
from shared.errors import NotFound
from shared.incidents import repository as incidents
from shared.incidents.notifier import Notifier
from shared.settings import Settings
from shared.tables import (
    anomaly_scores,
    failure_predictions,
    forecast_generations,
    metadata,
    metric_forecasts,
    metrics_history,
    ml_models,
)
from tests.conftest import truncate_all

pytestmark = pytest.mark.postgres


async def _host(engine: AsyncEngine, host: str, seed: int, now: datetime, *, metric: str) -> int:
    """Three hours of ``host``'s samples and scores ending at ``now``, the last 20 minutes with
    ``metric`` high and flagged, and the ML_ANOMALY incident they opened; its id."""
    start = now - timedelta(hours=3)
    frame = SyntheticDataGenerator(seed=seed).generate_full_training_set(days=1, start=start)
    frame = frame.iloc[:181].copy()
    frame.loc[frame.index[-20:], metric] = 93.0 + (frame.index[-20:] % 3)
    rows = [
        (r.timestamp.to_pydatetime(), host, *[getattr(r, m) for m in METRIC_NAMES], "normal")
        for r in frame.itertuples(index=False)
    ]
    first = rows[-20][0]
    async with engine.begin() as conn:
        await bulk_insert_samples(conn, rows)
        await anomaly_repo.insert_scores(
            conn,
            [
                anomaly_repo.score_record(
                    metrics_id=None,
                    model_id=None,
                    timestamp=r[0],
                    host=host,
                    score=0.99995 if r[0] >= first else 0.3 + (k % 7) / 10,
                    threshold=0.999,
                    is_anomaly=r[0] >= first,
                    severity="high" if r[0] >= first else "low",
                    contributions=[
                        {"metric": metric, "value": 93.0, "likelihood": 0.99995},
                        {"metric": "response_time_p95", "value": r[11], "likelihood": 0.9},
                    ],
                )
                for k, r in enumerate(rows)
            ],
        )
        incident, _ = await incidents.raise_incident(
            conn,
            type="ML_ANOMALY",
            host=host,
            dedup_key=f"ML_ANOMALY:{host}",
            severity="high",
            title=f"Anomalous behaviour on {host} ({metric})",
            details={"first_seen": first.isoformat(), "top_metrics": [{"metric": metric}]},
            now=first + timedelta(minutes=3),
        )
    return incident.id


async def seed(engine: AsyncEngine, now: datetime) -> list[int]:
    ids = [
        await _host(engine, "web-1", 3, now, metric="cpu_usage_percent"),
        await _host(engine, "web-2", 4, now, metric="cpu_usage_percent"),
        await _host(engine, "web-3", 5, now - timedelta(hours=1), metric="memory_usage_percent"),
    ]
    s, mh = anomaly_scores, metrics_history
    async with engine.begin() as conn:
        # web-2's incident is over, with feedback on its scores; web-1 lost a metric a while
        await incidents.resolve_incident(conn, incident_id=ids[1], reason="scaled out", now=now)
        await incidents.resolve_incident(conn, incident_id=ids[2], reason="restarted", now=now)
        flagged = sa.select(s.c.id).where(s.c.host == "web-2", s.c.is_anomaly).limit(3)
        for k, (score_id,) in enumerate((await conn.execute(flagged)).all()):
            verdict = "false_positive" if k == 2 else "true_positive"
            await anomaly_repo.set_feedback(conn, score_id, feedback=verdict, at=now)
        await conn.execute(
            sa.update(mh)
            .where(mh.c.host == "web-1", mh.c.timestamp >= now - timedelta(minutes=90))
            .where(mh.c.timestamp < now - timedelta(minutes=10))
            .values(memory_usage_mb=None)
        )
        old, _ = await incidents.raise_incident(
            conn,
            type="ML_ANOMALY",
            host="web-1",
            dedup_key="ML_ANOMALY:web-1:old",
            severity="medium",
            title="Anomalous behaviour on web-1 (cpu_usage_percent)",
            details={"top_metrics": [{"metric": "cpu_usage_percent"}, {"metric": "error_rate"}]},
            now=now - timedelta(days=2),
        )
        await incidents.resolve_incident(
            conn, incident_id=old.id, reason="rolled back", now=now - timedelta(days=2)
        )
        breach, _ = await incidents.raise_incident(
            conn,
            type="predicted_breach",
            host="web-1",
            dedup_key="predicted_breach:web-1:disk_usage_percent",
            severity="medium",
            metric="disk_usage_percent",
            title="disk_usage_percent on web-1 forecast to cross 90",
            details={"threshold": 90.0, "probability": 0.8123, "at": now.isoformat()}
            | {"predicted_value": 93.25},
            now=now - timedelta(hours=2),
        )
        ids += [old.id, breach.id]
        generated = now - timedelta(minutes=30)
        points = [
            {"host": "web-1", "metric": m, "generated_at": generated}
            | {"target_timestamp": now + timedelta(hours=k), "yhat": 50.0 + k / 3}
            | {"yhat_lower": 40.0 + k, "yhat_upper": 60.0 + k / 7}
            for m in ("cpu_usage_percent", "disk_usage_percent")
            for k in range(1, 30)
        ]
        await conn.execute(sa.insert(metric_forecasts), points)
        await conn.execute(
            sa.insert(forecast_generations),
            [
                {"host": "web-1", "metric": m, "generated_at": generated}
                for m in ("cpu_usage_percent", "disk_usage_percent")
            ],
        )
        await conn.execute(
            sa.insert(failure_predictions),
            [
                {"host": "web-1", "timestamp": now - timedelta(minutes=m), "horizon_minutes": 30}
                | {"failure_probability": 0.1 + m / 100, "predicted_failure_type": "oom"}
                | {"will_fail": m < 20}
                for m in (5, 15, 25, 35)
            ],
        )
        for host, version in (("web-1", 1), ("web-1", 2), (None, 1)):
            await conn.execute(
                sa.insert(ml_models).values(
                    name="anomaly_detector",
                    model_type="isolation_forest",
                    version=version,
                    status="active" if version == 2 else "retired",
                    host=host,
                    created_at=now - timedelta(days=3, hours=version),
                    activated_at=now - timedelta(days=1, hours=version) if host else None,
                )
            )
    return ids


async def _packs(
    engine: AsyncEngine, ids: list[int], now: datetime, *, portable: bool
) -> dict[int, tuple[object, ...]]:
    out: dict[int, tuple[object, ...]] = {}
    for incident_id in ids:
        pack = await repo.read_pack(engine, incident_id, now=now, portable=portable)
        out[incident_id] = _content(pack)
    return out


def _content(pack: EvidencePack) -> tuple[object, ...]:
    return (pack.to_json(), list(pack.metrics), pack.attribution, pack.window)


async def test_both_paths_and_both_databases_give_the_same_packs(
    sqlite_url: str, pg_url: str
) -> None:
    now = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=5)
    read_at = now + timedelta(minutes=1)
    engines = {name: create_engine(url) for name, url in (("sqlite", sqlite_url), ("pg", pg_url))}
    try:
        ids: dict[str, list[int]] = {}
        for name, engine in engines.items():
            await truncate_all(engine)
            if name == "pg":  # ids from 1 as on the emptied SQLite file: the packs hold ids
                async with engine.begin() as conn:
                    tables = ", ".join(t.name for t in metadata.sorted_tables)
                    await conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            ids[name] = await seed(engine, now)
            settings = Settings(database_url=sqlite_url if name == "sqlite" else pg_url)
            settings = settings.model_copy(update={"analysis_auto": False})
            service = AnalysisService(settings, engine, Notifier(settings, engine))
            await service.analyze(ids[name][1], provider="rules")  # web-2's, a similar one
            await service.stop()
        assert ids["sqlite"] == ids["pg"]
        fast = await _packs(engines["pg"], ids["pg"], read_at, portable=False)
        portable = await _packs(engines["pg"], ids["pg"], read_at, portable=True)
        lite = await _packs(engines["sqlite"], ids["sqlite"], read_at, portable=False)
        assert fast == portable
        assert lite == portable
        kinds = {i["kind"] for p in fast.values() for i in p[0]["items"]}
        assert kinds == {
            "incident",
            "metric",
            "anomaly_scores",
            "attribution",
            "forecast",
            "predicted_breach",
            "failure_prediction",
            "model_change",
            "similar_incident",
        }
        web1 = {i["id"]: i for i in fast[ids["pg"][0]][0]["items"]}
        similar = web1[f"similar:{ids['pg'][1]}"]
        assert similar["feedback"] == {"true_positive": 2, "false_positive": 1}
        assert similar["analysis_category"] is not None
    finally:
        for engine in engines.values():
            await truncate_all(engine)
            await engine.dispose()


async def test_an_unknown_incident_is_not_found_on_either_path(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        for portable in (False, True):
            with pytest.raises(NotFound, match="incident 424242 not found"):
                await repo.read_pack(engine, 424242, now=utcnow(), portable=portable)
    finally:
        await engine.dispose()
