"""Per-host state is bounded in memory: the least recently used saved detectors leave first
(ML_ANOMALY_MAX_HOSTS) and are loaded again from the database unchanged; predictions for host
names that have no stored state keep nothing. Real SQLite and PostgreSQL, the trainer app with
its loops running."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import repository as anomaly_repo
from services.trainer.anomaly.hostscore import StreamCache
from services.trainer.anomaly.service import AnomalyService
from services.trainer.anomaly.streaming import HostStream
from services.trainer.app import create_app
from shared.settings import Settings
from tests.conftest import app_client
from tests.trainer.anomaly.test_anomaly_service import SPIKE, samples, store
from tests.trainer.anomaly.test_host_scoring import (
    minutes_ago,
    reference_scores,
    stored_scores,
    wait_scored,
)

METRICS = ("cpu_usage_percent",)


def test_the_least_recently_used_saved_host_leaves_first_and_a_changed_one_never() -> None:
    cache = StreamCache(METRICS, idle_seconds=3600, max_hosts=2)
    a, b, c = (HostStream(METRICS) for _ in range(3))
    cache.put("a", a, now=0)
    cache.put("b", b, now=0)
    cache.touch("a", a, now=1)  # a learned samples, not yet saved
    assert cache.get("b") is b  # b is now the most recently used
    cache.put("c", c, now=2)
    # Over the bound by one: the least recently used saved host is b (a is unsaved).
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    assert cache.take_dirty() == {"a": a}
    assert cache.get("c") is c  # c used last: a is the least recently used now
    cache.put("b", b, now=3)
    assert cache.get("a") is None and len(cache) == 2
    assert cache.evict_idle(now=3) == ["b", "a"]  # every host dropped, reported once
    assert cache.evict_idle(now=4) == []
    # A stream dropped while a scoring pass held it is held again when it learns.
    cache.touch("a", a, now=5)
    assert cache.get("a") is a and "a" in cache.take_dirty()
    assert cache.evicted == 2


def test_no_bound_keeps_every_host() -> None:
    cache = StreamCache(METRICS, idle_seconds=3600, max_hosts=0)
    for i in range(50):
        cache.put(f"h{i}", HostStream(METRICS), now=0)
    assert len(cache) == 50 and cache.evict_idle(now=1) == []


async def test_hosts_past_the_bound_are_scored_as_if_always_held(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Five hosts, two held: each is dropped and loaded again between its batches, and its
    scores are those of one detector fed every sample in order."""
    cfg = settings.model_copy(update={"scoring_interval": 0.05, "anomaly_max_hosts": 2})
    app = create_app(cfg, engine=engine)
    frame = samples(minutes_ago(120), 110)
    hosts = [f"bounded-{i}" for i in range(5)]
    async with app_client(app):
        svc: AnomalyService = app.state.anomaly
        for part in (frame.iloc[:40], frame.iloc[40:80], frame.iloc[80:]):
            for host in hosts:
                await store(engine, part, host)
                await wait_scored(engine, host, part.index[-1] + 1)
                assert len(svc.scoring.streams) <= 2
        assert svc.scoring.streams.evicted >= 8
    expected = reference_scores(frame)
    for host in hosts:
        got = [s["score"] for s in await stored_scores(engine, host)]
        assert got == pytest.approx(expected, abs=1e-9), host
        async with engine.connect() as conn:
            blob = await anomaly_repo.load_stream_state(conn, host)
        assert blob is not None
        assert HostStream.from_bytes(blob).n.max() == len(frame)  # every sample learned once


async def test_predictions_for_2000_new_host_names_keep_no_state(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Was about 30 KB kept per new host name (issue 11). Memory is traced over the last 500
    names only (tracing slows every allocation); the caches are checked after all 2,000."""
    if engine.dialect.name != "sqlite":
        pytest.skip("memory of the trainer's caches: one database suffices")
    app = create_app(settings, engine=engine)
    async with app_client(app) as client:
        svc: AnomalyService = app.state.anomaly

        async def predict(name: str) -> None:
            answer = await client.post("/predict/anomaly", json={**SPIKE, "host": name})
            assert answer.status_code == 200

        for i in range(1500):
            await predict(f"n-{i}")
        await svc.writer.flush()  # the scores are stored, not held
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(1500, 2000):
                await predict(f"n-{i}")
            await svc.writer.flush()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(svc.scoring.streams) == 0
        assert svc.predict_histories == {} and svc.scoring.forest_histories == {}
    assert grown / 500 < 1024, f"{grown / 500:.0f} bytes per host name"
