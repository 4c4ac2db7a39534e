"""Helpers of the analysis tests: an incident with its host's samples and scores stored through
the project's own write paths, and the local LLM server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import repository as anomaly_repo
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES
from shared.clock import utcnow
from shared.db import bulk_insert_samples
from shared.incidents import repository as incidents
from shared.schemas.incidents import IncidentOut
from tests.conftest import served
from tests.trainer.analysis.fake_llm import FakeLLM

HOST = "web-1"
SPIKE_MINUTES = 20


async def store_cpu_incident(engine: AsyncEngine, *, host: str = HOST) -> IncidentOut:
    """Three hours of a host's samples ending now, the last 20 minutes with CPU at ~93 %, their
    anomaly scores, and the ML_ANOMALY incident the spike opened (still open)."""
    return await store_incident(
        engine,
        spike={"cpu_usage_percent": 93.0},
        attributed=("cpu_usage_percent", "response_time_p95"),
        host=host,
    )


async def store_incident(
    engine: AsyncEngine,
    *,
    spike: Mapping[str, float],
    attributed: Sequence[str],
    host: str = HOST,
) -> IncidentOut:
    """Three hours of a host's samples ending now, the last 20 minutes with each metric of
    ``spike`` at about its value (up to 2 % more), their anomaly scores with the detector's
    per-metric readings ranked as in ``attributed``, and the ML_ANOMALY incident the spike
    opened (still open), named after the first of ``spike``."""
    now = utcnow().replace(second=0, microsecond=0)
    start = now - timedelta(hours=3)
    frame = SyntheticDataGenerator(seed=3).generate_full_training_set(days=1, start=start)
    frame = frame.iloc[: 180 + 1].copy()
    during = frame.index[-SPIKE_MINUTES:]
    for metric, value in spike.items():
        frame.loc[during, metric] = value * (1 + (during % 3) / 93)
    rows = [
        (r.timestamp.to_pydatetime(), host, *[getattr(r, m) for m in METRIC_NAMES], "normal")
        for r in frame.itertuples(index=False)
    ]
    first = frame["timestamp"].iloc[-SPIKE_MINUTES].to_pydatetime()
    column = {m: 2 + j for j, m in enumerate(METRIC_NAMES)}  # in a row, after time and host
    named = next(iter(spike))
    async with engine.begin() as conn:
        await bulk_insert_samples(conn, rows)
        scores = [
            anomaly_repo.score_record(
                metrics_id=None,
                model_id=None,
                timestamp=r[0],
                host=host,
                score=0.99995 if r[0] >= first else 0.5,
                threshold=0.999,
                is_anomaly=r[0] >= first,
                severity="high" if r[0] >= first else "low",
                contributions=[
                    {"metric": m, "value": r[column[m]], "likelihood": 0.99995 if k == 0 else 0.9}
                    for k, m in enumerate(attributed)
                ],
            )
            for r in rows
        ]
        await anomaly_repo.insert_scores(conn, scores)
        incident, _ = await incidents.raise_incident(
            conn,
            type="ML_ANOMALY",
            host=host,
            dedup_key=f"ML_ANOMALY:{host}",
            severity="high",
            title=f"Anomalous behaviour on {host} ({named})",
            details={
                "first_seen": first.isoformat(),
                "top_metrics": [{"metric": named}],
                "threshold": 0.999,
                "consecutive": 3,
            },
            now=first + timedelta(minutes=3),
        )
    return incident


@pytest.fixture
async def fake_llm() -> AsyncIterator[tuple[FakeLLM, str]]:
    server = FakeLLM()
    async with served(server.app) as url:
        yield server, url
