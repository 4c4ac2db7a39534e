"""A PostgreSQL outage (a loopback proxy cut and restored, the server itself untouched) loses
nothing: collected samples wait in the buffer, pushed ones get a 503 with Retry-After and are
stored on retry, and every prediction answered 200 has its score stored once the database is
back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.app import create_app as collector_app
from services.trainer.app import create_app as trainer_app
from shared.db import create_engine
from shared.settings import Settings
from shared.tables import anomaly_scores, metrics_history
from tests.conftest import served
from tests.e2e.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

OUTAGE_SECONDS = 6.0


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(pg_url)
    forwarder = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await forwarder.start()
    try:
        yield forwarder
    finally:
        await forwarder.stop()


@pytest.fixture
async def direct(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """The database, reached around the proxy, to count what was stored."""
    engine = create_engine(pg_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def proxied_settings(pg_url: str, proxy: TcpProxy, **changes: object) -> Settings:
    url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
    return Settings(
        database_url=url.render_as_string(hide_password=False),
        hostname=f"outage-{uuid.uuid4().hex[:6]}",
        scrape_url="http://127.0.0.1:9/metrics",
        http_timeout=3.0,
        health_cache_seconds=0.0,
        **changes,
    )


async def until(done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1)):
        if done() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def count(engine: AsyncEngine, table: sa.Table, host: str) -> int:
    query = sa.select(sa.func.count()).select_from(table).where(table.c.host == host)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_collection_and_pushed_ingest_lose_nothing_in_an_outage(
    pg_url: str, proxy: TcpProxy, direct: AsyncEngine
) -> None:
    settings = proxied_settings(pg_url, proxy, ml_enabled=True, collection_interval=1.0)
    pushed_host = f"pushed-{uuid.uuid4().hex[:6]}"
    app = collector_app(settings)
    first = datetime.now(UTC).replace(microsecond=0)
    refused: list[httpx.Response] = []
    accepted = 0

    async def push(client: httpx.AsyncClient, i: int) -> None:
        nonlocal accepted
        sample = {
            "timestamp": (first + timedelta(seconds=i)).isoformat(),
            "host": pushed_host,
            "cpu_usage_percent": float(i % 100),
        }
        while True:  # a client that honours the 503: send the same batch again later
            answer = await client.post("/metrics/ingest", json={"samples": [sample]})
            if answer.status_code == 201:
                accepted += 1
                return
            assert answer.status_code == 503, answer.text
            refused.append(answer)
            await asyncio.sleep(min(float(answer.headers["retry-after"]), 0.5))

    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        sampling = app.state.sampling
        for i in range(10):
            await push(client, i)
            await asyncio.sleep(0.1)
        await proxy.cut()
        cut_at = datetime.now(UTC).replace(microsecond=0)
        during = asyncio.gather(*(push(client, 10 + i) for i in range(10)))
        await asyncio.sleep(OUTAGE_SECONDS / 2)
        health = (await client.get("/health")).json()
        ready = await client.get("/ready")
        await asyncio.sleep(OUTAGE_SECONDS / 2)
        buffered = len(sampling.buffer)
        await proxy.restore()
        restored_at = datetime.now(UTC)
        await asyncio.wait_for(during, 30)
        await until(lambda: not len(sampling.buffer))
        written = sampling.samples_written
        assert len(sampling.buffer) == 0 and sampling.buffer.dropped == 0
        collected = await count(direct, metrics_history, settings.hostname)
        query = sa.select(metrics_history.c.timestamp).where(
            metrics_history.c.host == settings.hostname,
            metrics_history.c.timestamp >= cut_at,
            metrics_history.c.timestamp < restored_at,
        )
        async with direct.connect() as conn:
            taken_in_outage = len((await conn.execute(query)).all())

    assert health["database"] is False and health["status"] == "degraded"
    assert ready.status_code == 503 and "database unreachable" in ready.json()["problems"]
    assert refused and all(r.headers.get("retry-after") for r in refused)
    assert accepted == 20
    assert await count(direct, metrics_history, pushed_host) == 20
    # Every sample taken in the outage was buffered, then written: none lost.
    assert buffered >= OUTAGE_SECONDS / 2
    assert taken_in_outage >= buffered
    assert collected >= written > 0


async def test_every_prediction_answered_is_stored_after_an_outage(
    pg_url: str, proxy: TcpProxy, direct: AsyncEngine
) -> None:
    settings = proxied_settings(pg_url, proxy, ml_enabled=False)
    host = f"predict-{uuid.uuid4().hex[:6]}"
    app = trainer_app(settings)
    answered = 0
    refused = 0

    async def predict(client: httpx.AsyncClient) -> None:
        nonlocal answered, refused
        body = {"host": host, "cpu_usage_percent": 40.0, "error_rate": 0.01}
        answer = await client.post("/predict/anomaly", json=body)
        if answer.status_code == 200:
            answered += 1
        else:
            assert answer.status_code == 503, answer.text
            assert answer.headers.get("retry-after")
            refused += 1

    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        writer = app.state.anomaly.writer
        pending_at_cut = 0
        for _ in range(5):  # until a batch is queued when the database goes away
            await asyncio.gather(*(predict(client) for _ in range(12)))
            await proxy.cut()
            pending_at_cut = len(writer.pending)
            if pending_at_cut:
                break
            await proxy.restore()
        assert pending_at_cut, "no prediction was waiting to be written at the cut"
        started = time.monotonic()
        while time.monotonic() - started < OUTAGE_SECONDS:
            await predict(client)
            await asyncio.sleep(0.25)
        health = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
        await proxy.restore()
        await until(lambda: not (writer.pending or writer.failing))
        assert not writer.pending and writer.dropped == 0
        for _ in range(6):  # and predictions answer again once it is back
            await predict(client)

    assert health["pending_scores"] >= pending_at_cut
    assert any("scores waiting for the database" in p for p in health["problems"])
    assert "autofix_anomaly_scores_pending" in metrics
    assert writer.loop.failures > 0  # batches were refused, and written later
    assert answered >= 12 + 6
    assert await count(direct, anomaly_scores, host) == answered
