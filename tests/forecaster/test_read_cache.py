"""Fleet reads come from a cache of stored generations: a new generation, written by this
process or another, is what the next read answers; answers keep their schema and values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.forecaster.forecasting import forecast_store as store
from services.forecaster.forecasting import reads
from services.forecaster.forecasting.breach import thresholds
from services.forecaster.forecasting.next_hour import next_hour as next_hour_of
from services.forecaster.forecasting.read_cache import ReadCache
from shared.clock import utc, utcnow
from shared.schemas.forecast import (
    AlertsQuery,
    AlertsResponse,
    ForecastResponse,
    NextHourResponse,
)
from shared.settings import Settings
from shared.tables import metrics_history, ml_models
from tests.forecaster.test_fleet import CPU, MEMORY, store_host
from tests.forecaster.test_service import forecaster, train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:prophet")


def generations(body: dict[str, object], key: str = "forecasts") -> dict[tuple[str, str], str]:
    items = body[key]
    assert isinstance(items, list)
    return {
        (item["host"], item["metric"]): item.get("generated_at") or body["generated_at"]
        for item in items
    }


async def test_a_new_generation_from_another_process_is_seen_by_the_next_read(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Two forecaster instances on one database, each with its own cache: the reader answers
    from its cache, the writer refreshes and trains, the reader's next read shows it."""
    settings = settings.model_copy(update={"forecast_thresholds": {CPU: 80.0}})
    await store_host(engine, "alpha", days=3)
    await store_host(engine, "beta", days=3)
    async with (
        forecaster(settings, engine) as (writer, _w),
        forecaster(settings, engine) as (reader, reader_app),
    ):
        first = await train(writer, host="alpha", metrics=[CPU, MEMORY])
        before = (await reader.get("/forecast", params={"hours_ahead": 2})).json()
        before_alerts = (await reader.get("/forecast/alerts")).json()
        assert len(reader_app.state.read_cache.entries) == 2  # what the reader now holds

        refreshed = await writer.post("/forecast/refresh")
        assert refreshed.status_code == 200, refreshed.text
        after = (await reader.get("/forecast", params={"hours_ahead": 2})).json()
        after_next = (await reader.get("/forecast/next-hour")).json()

        second = await train(writer, host="beta", metrics=[CPU])
        fleet = (await reader.get("/forecast", params={"hours_ahead": 2, "metric": CPU})).json()
        fleet_next = (await reader.get("/forecast/next-hour")).json()
        fleet_alerts = (await reader.get("/forecast/alerts")).json()
        retrained = await train(writer, host="alpha", metrics=[CPU])
        alpha = (await reader.get("/forecast", params={"host": "alpha", "metric": CPU})).json()

    stamps = {datetime.fromisoformat(v) for v in generations(before).values()}
    assert stamps == {datetime.fromisoformat(first["generated_at"])}
    assert before_alerts["hosts"] == ["alpha"]
    newer = set(generations(after).values())
    assert len(newer) == 1 and newer != set(generations(before).values())
    assert set(generations(after_next, "metrics").values()) == newer
    assert after_next["generated_at"] in newer

    assert fleet["hosts"] == ["alpha", "beta"]
    assert [(f["host"], f["metric"]) for f in fleet["forecasts"]] == [("alpha", CPU), ("beta", CPU)]
    assert fleet["forecasts"][1]["model_id"] == second["models"][0]["model_id"]
    assert fleet_next["hosts"] == ["alpha", "beta"]
    assert fleet_alerts["hosts"] == ["alpha", "beta"]

    [model] = retrained["models"]
    [series] = alpha["forecasts"]
    assert (series["model_id"], series["model_version"]) == (model["model_id"], model["version"])
    assert datetime.fromisoformat(series["generated_at"]) == datetime.fromisoformat(
        retrained["generated_at"]
    )


async def test_cached_answers_match_the_stored_points_and_the_schemas(
    settings: Settings, engine: AsyncEngine
) -> None:
    await store_host(engine, "alpha", days=3)
    async with forecaster(settings, engine) as (client, _app):
        await train(client, host="alpha", metrics=[CPU, MEMORY])
        answers = [await client.get("/forecast", params={"hours_ahead": 3}) for _ in range(2)]
        nexts = [await client.get("/forecast/next-hour") for _ in range(2)]

    for response in answers:
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "application/json"
        )
    body = ForecastResponse.model_validate_json(answers[1].content)
    assert body.host == "alpha" and body.hours_ahead == 3 and body.step_minutes == 15.0
    async with engine.connect() as conn:
        stored = await store.read_forecasts(
            conn,
            after=body.forecasts[0].points[0].timestamp - timedelta(seconds=1),
            until=body.forecasts[0].points[-1].timestamp,
        )
    assert [(s.host, s.metric) for s in stored] == [(f.host, f.metric) for f in body.forecasts]
    for series, answered in zip(stored, body.forecasts, strict=True):
        assert answered.generated_at == series.generated_at
        assert [p.timestamp for p in answered.points] == series.times
        assert [p.yhat for p in answered.points] == series.yhat
        assert [p.yhat_lower for p in answered.points] == series.lower
        assert [p.yhat_upper for p in answered.points] == series.upper
        assert len(answered.points) == 3 * 4
    assert b'"timestamp":"' in answers[1].content and b'Z","yhat"' in answers[1].content

    hour = NextHourResponse.model_validate_json(nexts[1].content)
    assert [i.metric for i in hour.metrics] == [CPU, MEMORY]
    async with engine.connect() as conn:
        stored = await store.read_forecasts(
            conn,
            after=hour.metrics[0].at - timedelta(hours=1),
            until=hour.metrics[0].at + timedelta(minutes=30),
        )
    for series, item in zip(stored, hour.metrics, strict=True):
        expected = next_hour_of(series.prediction(), at=item.at, current_value=item.current_value)
        assert item.yhat == pytest.approx(expected.yhat, rel=1e-12)
        assert item.yhat_lower == pytest.approx(expected.yhat_lower, rel=1e-12)
        assert item.yhat_upper == pytest.approx(expected.yhat_upper, rel=1e-12)
        assert item.change == pytest.approx(expected.change, rel=1e-12)


async def write(engine: AsyncEngine, host: str, at: datetime) -> None:
    async with engine.begin() as conn:
        await store.write_forecasts(
            conn,
            host=host,
            metric=CPU,
            model_id=None,  # type: ignore[arg-type]
            generated_at=at,
            timestamps=[at + timedelta(minutes=15)],
            yhat=[1.0],
            lower=[0.0],
            upper=[2.0],
        )


async def test_the_fingerprint_changes_with_every_generation_written_even_out_of_order(
    engine: AsyncEngine,
) -> None:
    """A generation made earlier but committed after a newer one (two processes) leaves the
    newest generated_at and the count as they were: the fingerprint still changes."""
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    await write(engine, "a", start + timedelta(hours=2))
    await write(engine, "b", start)
    seen = []
    async with engine.connect() as conn:
        seen.append(await store.fingerprint(conn, "forecaster"))
    await write(engine, "b", start + timedelta(hours=1))  # older than a's, newer than b's
    async with engine.connect() as conn:
        seen.append(await store.fingerprint(conn, "forecaster"))
        seen.append(await store.fingerprint(conn, "forecaster"))
    assert seen[0][:2] == (2, seen[1][1]) and seen[1][0] == 2  # count and newest: the same
    assert seen[1] != seen[0]
    assert seen[2] == seen[1]  # nothing written: the same


async def test_next_hour_is_kept_for_its_minute_and_remade_on_a_new_sample_or_generation(
    settings: Settings, engine: AsyncEngine
) -> None:
    """The next-hour answer is built once per minute and samples: a read in the same minute
    with the same newest samples gets the same bytes; a new sample, a sample changed in place,
    the next minute or a generation written by another process makes a new answer."""
    await store_host(engine, "alpha", days=3)
    cache = ReadCache(thresholds())
    async with forecaster(settings, engine) as (writer, _app):
        await train(writer, host="alpha", metrics=[CPU, MEMORY])
        minute = utcnow().replace(second=0, microsecond=0)

        async def read(at: datetime) -> bytes:
            async with engine.connect() as conn:
                return await reads.next_hour(conn, cache, host=None, step_minutes=15.0, now=at)

        first = await read(minute + timedelta(seconds=5))
        again = await read(minute + timedelta(seconds=50))
        async with engine.begin() as conn:
            newest = (
                await conn.execute(
                    sa.select(sa.func.max(metrics_history.c.timestamp)).where(
                        metrics_history.c.host == "alpha"
                    )
                )
            ).scalar_one()
            stamp = utc(newest) + timedelta(minutes=1)
            await conn.execute(
                sa.insert(metrics_history).values(
                    host="alpha", timestamp=stamp, **{CPU: 12.5, MEMORY: 40.0}
                )
            )
        sampled = await read(minute + timedelta(seconds=55))
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(metrics_history)
                .where(metrics_history.c.host == "alpha", metrics_history.c.timestamp == stamp)
                .values(**{CPU: 13.5})
            )
        changed = await read(minute + timedelta(seconds=58))
        later = await read(minute + timedelta(minutes=1, seconds=1))
        refreshed = await writer.post("/forecast/refresh")
        assert refreshed.status_code == 200, refreshed.text
        regenerated = await read(minute + timedelta(minutes=1, seconds=2))

    assert again is first  # kept: the same minute, the same samples
    body = NextHourResponse.model_validate_json(first)
    assert {i.at for i in body.metrics} == {minute + timedelta(hours=1)}
    assert [i.metric for i in body.metrics] == [CPU, MEMORY]

    def current(raw: bytes) -> dict[str, tuple[float | None, datetime | None]]:
        items = NextHourResponse.model_validate_json(raw).metrics
        return {i.metric: (i.current_value, i.current_at) for i in items}

    assert current(sampled) == {CPU: (12.5, stamp), MEMORY: (40.0, stamp)}
    assert current(changed)[CPU] == (13.5, stamp)
    moved = NextHourResponse.model_validate_json(later)
    assert {i.at for i in moved.metrics} == {minute + timedelta(hours=1, minutes=1)}
    fresh = NextHourResponse.model_validate_json(regenerated)
    assert fresh.generated_at is not None and moved.generated_at is not None
    assert fresh.generated_at > moved.generated_at
    # Every answer's values are those of the one-series computation at its `at`.
    async with engine.connect() as conn:
        stored = await store.read_forecasts(
            conn, after=minute, until=minute + timedelta(hours=2), host="alpha"
        )
    for series, item in zip(stored, fresh.metrics, strict=True):
        expected = next_hour_of(series.prediction(), at=item.at, current_value=item.current_value)
        assert item.yhat == pytest.approx(expected.yhat, rel=1e-12)
        assert item.yhat_lower == pytest.approx(expected.yhat_lower, rel=1e-12)
        assert item.yhat_upper == pytest.approx(expected.yhat_upper, rel=1e-12)
        assert item.change == pytest.approx(expected.change, rel=1e-9)
        assert item.direction == expected.direction


async def test_alerts_without_a_breachable_series_are_kept_until_a_generation_reaches_one(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A fleet with no series at or above its threshold is answered from bytes kept per
    settle; a generation reaching the threshold, written by another process, is listed by
    the next read."""
    await store_host(engine, "alpha", days=3)
    cache = ReadCache(thresholds({CPU: 95.0}))
    async with forecaster(settings, engine) as (writer, _app):
        await train(writer, host="alpha", metrics=[CPU])
    now = utcnow()

    async def read() -> bytes:
        async with engine.connect() as conn:
            return await reads.alerts(conn, cache, AlertsQuery(hours_ahead=24), now=now)

    quiet = await read()
    assert await read() is quiet  # kept
    assert AlertsResponse.model_validate_json(quiet).count == 0
    async with engine.begin() as conn:
        model_id = (
            await conn.execute(
                sa.select(ml_models.c.id).where(
                    ml_models.c.host == "alpha", ml_models.c.status == "active"
                )
            )
        ).scalar_one()
        generated = now + timedelta(seconds=1)
        await store.write_forecasts(
            conn,
            host="alpha",
            metric=CPU,
            model_id=model_id,
            generated_at=generated,
            timestamps=[now + timedelta(minutes=15 * k) for k in range(1, 9)],
            yhat=[50.0, 60.0, 70.0, 80.0, 90.0, 96.0, 97.0, 90.0],
            lower=[40.0, 50.0, 60.0, 70.0, 80.0, 86.0, 87.0, 80.0],
            upper=[60.0, 70.0, 80.0, 90.0, 100.0, 100.0, 100.0, 100.0],
        )
    loud = AlertsResponse.model_validate_json(await read())
    [alert] = loud.alerts
    assert (alert.host, alert.metric, alert.threshold) == ("alpha", CPU, 95.0)
    assert alert.yhat_crossing_at == now + timedelta(minutes=90)
    assert alert.upper_crossing_at == now + timedelta(minutes=75)
    assert alert.generated_at == generated and alert.severity == "high"
