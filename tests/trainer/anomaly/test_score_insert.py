"""Storing scores while a regeneration may delete their samples: a score keeps its sample or,
if the sample is already gone, no reference; never a foreign-key error that fails the pass."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import repository as repo
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared.clock import utcnow
from shared.tables import anomaly_scores, metrics_history


async def _sample_ids(engine: AsyncEngine, host: str) -> list[int]:
    frame = SyntheticDataGenerator(seed=3).generate_full_training_set(1).head(10)
    async with engine.begin() as conn:
        await store_frame(conn, frame, host=host)
    async with engine.connect() as conn:
        query = sa.select(metrics_history.c.id).where(metrics_history.c.host == host)
        return sorted((await conn.execute(query)).scalars())


def _record(metrics_id: int, host: str) -> dict[str, object]:
    return repo.score_record(
        metrics_id=metrics_id,
        model_id=None,
        timestamp=utcnow(),
        host=host,
        score=0.5,
        threshold=0.999,
        is_anomaly=False,
        severity="low",
        contributions=[],
    )


async def test_a_score_of_a_sample_deleted_before_it_is_stored_keeps_no_reference(
    engine: AsyncEngine,
) -> None:
    first, second, *_ = await _sample_ids(engine, "gone")
    async with engine.begin() as conn:
        await conn.execute(sa.delete(metrics_history).where(metrics_history.c.id == first))
    async with engine.begin() as conn:
        await repo.insert_scores(conn, [_record(first, "gone"), _record(second, "gone")])
    async with engine.connect() as conn:
        query = sa.select(anomaly_scores.c.metrics_id).where(anomaly_scores.c.host == "gone")
        stored = sorted((await conn.execute(query)).scalars(), key=lambda v: (v is not None, v))
    assert stored == [None, second]


async def test_a_sample_checked_for_its_score_cannot_be_deleted_until_the_score_commits(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writers take turns on the file's one write lock")
    [sample, *_] = await _sample_ids(engine, "held")
    async with engine.begin() as scoring:
        assert await repo.live_samples(scoring, {sample, -1}) == {sample}
        # A regeneration's delete of that sample, from the check on, waits for the scoring
        # to commit: the score inserted next still finds its sample.
        async with engine.connect() as other:
            await other.execute(sa.text("SET lock_timeout = '300ms'"))
            with pytest.raises(DBAPIError, match="lock"):
                await other.execute(
                    sa.delete(metrics_history).where(metrics_history.c.id == sample)
                )
            await other.rollback()
        await repo.insert_scores(scoring, [_record(sample, "held")])
    async with engine.begin() as conn:
        await conn.execute(sa.delete(metrics_history).where(metrics_history.c.id == sample))
    async with engine.connect() as conn:
        query = sa.select(anomaly_scores.c.metrics_id).where(anomaly_scores.c.host == "held")
        assert list((await conn.execute(query)).scalars()) == [None]  # stored, then unlinked
