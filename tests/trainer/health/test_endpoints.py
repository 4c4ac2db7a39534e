"""The trainer's health check and /metrics: database, background loops, scoring lag; degraded
when the database is away, a loop keeps failing, or scoring falls behind."""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import repository as repo
from services.trainer.app import create_app
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared.clock import utcnow
from shared.db import create_engine
from shared.settings import Settings
from shared.tables import metrics_history
from tests.conftest import app_client


async def test_health(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("status", "service", "database", "active_models", "problems")} == {
        "status": "healthy",
        "service": "trainer",
        "database": True,
        "active_models": 0,
        "problems": [],
    }
    loops = {loop["name"]: loop for loop in body["loops"]}
    assert {"anomaly-scoring", "anomaly-score-writer"} <= set(loops)
    assert loops["anomaly-scoring"]["running"] and not loops["anomaly-scoring"]["stalled"]
    assert body["scoring"]["lag_seconds"] is None  # nothing scored yet
    assert body["scoring"]["lag_limit_seconds"] == settings.scoring_lag_limit


@pytest.mark.usefixtures("settle_sqlite_workers")
async def test_health_without_a_database_is_degraded(tmp_path: Path):
    folder = tmp_path / "db"
    url = f"sqlite+aiosqlite:///{folder / 'trainer.db'}"
    engine = create_engine(url)
    shutil.rmtree(folder)  # create_engine made the folder; without it SQLite cannot open the file
    try:
        async with app_client(create_app(Settings(database_url=url), engine=engine)) as client:
            response = await client.get("/health")
    finally:
        await engine.dispose()
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["active_models"]) == ("degraded", False, 0)
    assert body["problems"][0] == "database unreachable"


async def wait_until(client: httpx.AsyncClient, check: Any) -> dict[str, Any]:
    for _ in range(400):
        body: dict[str, Any] = (await client.get("/health")).json()
        if check(body):
            return body
        await asyncio.sleep(0.025)
    raise AssertionError(f"health never matched: {body}")


@pytest.mark.postgres
async def test_a_scoring_loop_that_keeps_failing_makes_health_degraded(pg_url: str) -> None:
    engine = create_engine(pg_url)
    fast = Settings(
        database_url=pg_url,
        ml_enabled=False,
        scoring_interval=0.02,
        loop_stall_intervals=3.0,
        loop_stall_min_seconds=0.2,
    )
    try:
        async with app_client(create_app(fast, engine=engine)) as client:
            await wait_until(client, lambda b: b["status"] == "healthy")
            # The table each scoring pass reads goes away (as a broken migration would).
            async with engine.begin() as conn:
                await conn.execute(sa.text("ALTER TABLE ml_models RENAME TO ml_models_away"))
            try:
                body = await wait_until(
                    client, lambda b: any(x["stalled"] and x["failures"] >= 3 for x in b["loops"])
                )
                metrics = (await client.get("/metrics")).text
            finally:
                async with engine.begin() as conn:
                    await conn.execute(sa.text("ALTER TABLE ml_models_away RENAME TO ml_models"))
            recovered = await wait_until(client, lambda b: b["status"] == "healthy")
    finally:
        await engine.dispose()
    scoring = next(loop for loop in body["loops"] if loop["name"] == "anomaly-scoring")
    assert scoring["stalled"] and scoring["failures"] >= 3
    assert "ml_models" in scoring["last_error"]
    assert any(p.startswith("loop anomaly-scoring stalled") for p in body["problems"])
    assert body["database"] is True  # the database answers; the loop does not get through
    assert 'autofix_loop_stalled{service="trainer",loop="anomaly-scoring"} 1.0' in metrics
    assert not any(loop["stalled"] for loop in recovered["loops"])


async def test_scoring_lag_beyond_the_limit_is_degraded_and_measured(
    settings: Settings, engine: AsyncEngine
) -> None:
    start = utcnow().replace(microsecond=0) - timedelta(hours=2)
    frame = SyntheticDataGenerator(seed=3).generate_full_training_set(1, start=start).iloc[:61]
    async with engine.begin() as conn:
        await store_frame(conn, frame, host="late")
        first = (await conn.execute(sa.select(sa.func.min(metrics_history.c.id)))).scalar_one()
        # Only the first sample is scored: scoring trails the newest sample by an hour.
        record = repo.score_record(
            metrics_id=int(first),
            model_id=None,
            timestamp=start,
            host="late",
            score=0.5,
            threshold=0.999,
            is_anomaly=False,
            severity="low",
            contributions=[],
        )
        await repo.insert_scores(conn, [record])
        # ... and the scoring cursor says the rest was passed over: nothing left to score.
        last = (await conn.execute(sa.select(sa.func.max(metrics_history.c.id)))).scalar_one()
        await repo.save_cursor(conn, int(last), at=utcnow())
    async with app_client(create_app(settings, engine=engine)) as client:
        body = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
    assert body["status"] == "degraded"
    assert body["scoring"]["lag_seconds"] == pytest.approx(3600)
    assert any(p.startswith("scoring lags 3600 s") for p in body["problems"])
    assert 'autofix_scoring_lag_seconds{service="trainer"} 3600.0' in metrics
    assert 'autofix_loop_running{service="trainer",loop="anomaly-scoring"}' in metrics
    assert "# TYPE autofix_loop_runs_total counter" in metrics
