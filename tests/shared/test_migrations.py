"""The Alembic migrations on both engines: tables, views, indexes, up and down, in step with models."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url

from shared.db import create_engine
from shared.migrate import downgrade, upgrade
from shared.tables import metadata

TABLES = {
    "metrics_history",
    "anomaly_scores",
    "ml_models",
    "failure_predictions",
    "metric_forecasts",
    "anomaly_thresholds",
    "anomaly_incident_states",
    "llm_analyses",
    "incidents",
    "anomaly_stream_state",
    "anomaly_scoring_cursor",
    "api_keys",
    "synthetic_windows",
}
VIEWS = {"recent_metrics", "active_ml_models"}


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (not migrated)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
        return
    admin: str = request.getfixturevalue("pg_admin_url")
    name = f"autofix_mig_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _inspect(url: str) -> tuple[set[str], set[str], set[str], list[object]]:
    engine = create_engine(url)
    async with engine.connect() as conn:

        def read(sync_conn: sa.Connection) -> tuple[set[str], set[str], set[str], list[object]]:
            inspector = sa.inspect(sync_conn)
            tables = set(inspector.get_table_names())
            views = set(inspector.get_view_names())
            indexes = set()
            if "metrics_history" in tables:
                indexes = {i["name"] for i in inspector.get_indexes("metrics_history") if i["name"]}
            diff = compare_metadata(MigrationContext.configure(sync_conn), metadata)
            return tables, views, indexes, diff

        result = await conn.run_sync(read)
    await engine.dispose()
    return result


def test_upgrade_creates_schema_in_step_with_models_and_downgrade_removes_it(
    fresh_url: str,
) -> None:
    upgrade(fresh_url)
    tables, views, indexes, diff = asyncio.run(_inspect(fresh_url))
    assert TABLES <= tables
    assert VIEWS <= views
    assert {"idx_metrics_timestamp", "idx_metrics_label", "idx_metrics_host_timestamp"} <= indexes
    # Views are reflected as tables by autogenerate; everything else must match the models.
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name in VIEWS)] == []  # type: ignore[index]
    downgrade(fresh_url)
    tables, views, _, _ = asyncio.run(_inspect(fresh_url))
    assert tables & TABLES == set()
    assert views == set()


def test_recent_metrics_view_shows_only_the_last_day(fresh_url: str) -> None:
    from datetime import timedelta

    from shared.clock import utcnow
    from shared.db import bulk_insert_samples

    upgrade(fresh_url)

    async def run() -> list[str]:
        engine = create_engine(fresh_url)
        now = utcnow()
        async with engine.begin() as conn:
            rows = [
                (now - timedelta(hours=h), host, *([1.0] * 14), "normal")
                for h, host in ((1, "fresh"), (23, "day-old"), (25, "stale"), (200, "old"))
            ]
            await bulk_insert_samples(conn, rows)
        async with engine.connect() as conn:
            hosts = [r[0] for r in await conn.execute(sa.text("SELECT host FROM recent_metrics"))]
        await engine.dispose()
        return sorted(hosts)

    assert asyncio.run(run()) == ["day-old", "fresh"]


def test_migration_0005_records_the_synthetic_host_as_generated(fresh_url: str) -> None:
    """Rows of the host "synthetic" from before become one window; other hosts stay real."""
    from datetime import timedelta

    import sqlalchemy as sa

    from services.trainer.synthetic.repository import real_samples
    from shared.catalogue import METRIC_NAMES
    from shared.clock import utcnow
    from shared.tables import metrics_history

    upgrade(fresh_url, "0004_forecast")
    now = utcnow()

    async def fill() -> None:
        engine = create_engine(fresh_url)
        async with engine.begin() as conn:
            # a plain insert: the upsert of today's code needs the unique index of 0006
            rows = [
                {"timestamp": now - timedelta(hours=h), "host": host, "label": "normal"}
                | dict.fromkeys(METRIC_NAMES, 1.0)
                for h in (1, 2, 3)
                for host in ("synthetic", "web-1")
            ]
            await conn.execute(sa.insert(metrics_history), rows)
        await engine.dispose()

    async def real(host: str) -> int:
        engine = create_engine(fresh_url)
        async with engine.connect() as conn:
            found = await real_samples(conn, host=host, first=now - timedelta(days=1), last=now)
        await engine.dispose()
        return found

    asyncio.run(fill())
    upgrade(fresh_url)
    assert asyncio.run(real("synthetic")) == 0
    assert asyncio.run(real("web-1")) == 3
