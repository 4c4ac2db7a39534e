"""The trainer's HTTP API: synthetic data generation."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app
from shared.catalogue import LABELS
from shared.settings import Settings
from shared.tables import metrics_history as mh
from tests.conftest import app_client


async def labels_in_db(engine: AsyncEngine, host: str) -> dict[str, int]:
    query = sa.select(mh.c.label, sa.func.count()).where(mh.c.host == host).group_by(mh.c.label)
    async with engine.connect() as conn:
        return {label: int(n) for label, n in (await conn.execute(query)).all()}


async def generate(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/train/generate-synthetic", json=body)


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [item["field"] for item in response.json()["detail"]]


async def test_generate_synthetic_stores_what_it_reports(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await generate(client, days=1, seed=7, host="synth-a")
    assert response.status_code == 200, response.text
    body = response.json()

    assert body["count"] == 1440
    assert body["host"] == "synth-a"
    assert list(body["label_distribution"]) == list(LABELS)
    assert sum(body["label_distribution"].values()) == 1440
    stored = await labels_in_db(engine, "synth-a")
    assert stored == {k: v for k, v in body["label_distribution"].items() if v}
    start, end = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])
    assert end - start == timedelta(minutes=1439)
    assert body["seconds"] >= body["generation_seconds"] >= 0
    assert body["seconds"] >= body["storage_seconds"] >= 0


async def test_same_seed_stores_the_same_labels(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        first = (await generate(client, days=2, seed=11, host="one")).json()
        second = (await generate(client, days=2, seed=11, host="two")).json()
    assert first["count"] == second["count"] == 2880
    assert await labels_in_db(engine, "one") == await labels_in_db(engine, "two")


async def test_defaults_store_under_the_synthetic_host(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await generate(client, days=1)
    assert response.json()["host"] == "synthetic"
    assert sum((await labels_in_db(engine, "synthetic")).values()) == 1440


@pytest.mark.parametrize("days", [0, -1, 366])
async def test_days_out_of_range_is_422(settings: Settings, engine: AsyncEngine, days: int):
    async with app_client(create_app(settings, engine=engine)) as client:
        assert fields(await generate(client, days=days)) == ["body.days"]
    assert await labels_in_db(engine, "synthetic") == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"days": 1, "rows": 5}, "body.rows"),
        ({"days": "many"}, "body.days"),
        ({"days": 1, "seed": -1}, "body.seed"),
        ({"days": 1, "host": ""}, "body.host"),
    ],
)
async def test_invalid_request_is_422_naming_the_field(
    settings: Settings, engine: AsyncEngine, body: dict[str, Any], field: str
):
    async with app_client(create_app(settings, engine=engine)) as client:
        assert fields(await generate(client, **body)) == [field]


async def test_second_call_for_a_host_replaces_its_rows(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        first = (await generate(client, days=1, seed=1, host="again")).json()
        second = (await generate(client, days=1, seed=2, host="again")).json()
        other = (await generate(client, days=1, seed=1, host="elsewhere")).json()

    # Each call ends at the current minute, so a minute boundary between the calls leaves the
    # first call's oldest rows outside the second's window; none of them are duplicated.
    shift = datetime.fromisoformat(second["start"]) - datetime.fromisoformat(first["start"])
    kept = int(shift / timedelta(minutes=1))
    assert 0 <= kept <= 5
    stored = await labels_in_db(engine, "again")
    assert sum(stored.values()) == 1440 + kept
    if kept == 0:
        assert stored == {k: v for k, v in second["label_distribution"].items() if v}
    assert other["count"] == 1440
    assert sum((await labels_in_db(engine, "elsewhere")).values()) == 1440
