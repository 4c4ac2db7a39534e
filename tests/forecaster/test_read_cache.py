"""Fleet reads come from a cache of stored generations: a new generation, written by this
process or another, is what the next read answers; answers keep their schema and values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.forecaster.forecasting import forecast_store as store
from services.forecaster.forecasting.next_hour import next_hour as next_hour_of
from shared.schemas.forecast import ForecastResponse, NextHourResponse
from shared.settings import Settings
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
