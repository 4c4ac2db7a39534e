"""POST /metrics/ingest: valid batches are stored, invalid ones are refused whole with the field named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.app import create_app
from shared.catalogue import METRIC_NAMES
from shared.settings import Settings
from tests.conftest import app_client

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def full_sample(i: int, *, host: str = "web-1") -> dict[str, Any]:
    """A sample with every metric set, distinct per `i`."""
    sample: dict[str, Any] = {
        "timestamp": (BASE + timedelta(minutes=i)).isoformat(),
        "host": host,
        "label": "cpu_spike" if i % 2 else "normal",
    }
    for k, name in enumerate(METRIC_NAMES):
        sample[name] = round(10.0 + i + k / 7.0, 6)
    sample["active_requests"] = 20 + i
    sample["cpu_rate_of_change"] = -1.25 - i  # derived rates may be negative
    return sample


async def ingest(client: httpx.AsyncClient, samples: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/metrics/ingest", json={"samples": samples})


async def exported(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/metrics/export")
    assert response.status_code == 200
    samples: list[dict[str, Any]] = response.json()["samples"]
    return samples


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [item["field"] for item in response.json()["detail"]]


async def test_ingest_stores_every_field_of_every_sample(settings: Settings, engine: AsyncEngine):
    samples = [full_sample(i) for i in range(3)]
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await ingest(client, samples)
        assert response.status_code == 201
        assert response.json() == {"accepted": 3}
        rows = await exported(client)

    assert len(rows) == 3
    for sent, row in zip(samples, rows, strict=True):
        assert datetime.fromisoformat(row["timestamp"]) == datetime.fromisoformat(sent["timestamp"])
        assert row["host"] == sent["host"]
        assert row["label"] == sent["label"]
        for name in METRIC_NAMES:
            assert row[name] == pytest.approx(sent[name], rel=1e-12), name


async def test_host_defaults_to_the_collector_and_timestamp_to_now(
    settings: Settings, engine: AsyncEngine
):
    async with app_client(create_app(settings, engine=engine)) as client:
        before = datetime.now(UTC).replace(microsecond=0)
        response = await ingest(client, [{"cpu_usage_percent": 12.5}])
        after = datetime.now(UTC)
        assert response.status_code == 201
        [row] = await exported(client)

    assert row["host"] == settings.hostname == "test-host"
    assert before <= datetime.fromisoformat(row["timestamp"]) <= after
    assert row["label"] == "normal"
    assert row["cpu_usage_percent"] == 12.5
    assert all(row[name] is None for name in METRIC_NAMES if name != "cpu_usage_percent")


@pytest.mark.parametrize(
    "text",
    [
        BASE.replace(tzinfo=None).isoformat(),  # no offset: UTC
        BASE.astimezone(timezone(timedelta(hours=-5))).isoformat(),
        BASE.isoformat().replace("+00:00", "Z"),
    ],
    ids=["naive", "offset", "zulu"],
)
async def test_timestamps_are_stored_as_the_same_utc_instant(
    settings: Settings, engine: AsyncEngine, text: str
):
    async with app_client(create_app(settings, engine=engine)) as client:
        assert (await ingest(client, [{"timestamp": text, "disk_usage_percent": 1}])).is_success
        [row] = await exported(client)
    assert datetime.fromisoformat(row["timestamp"]) == BASE
    assert datetime.fromisoformat(row["timestamp"]).utcoffset() == timedelta(0)


FUTURE = (datetime.now(UTC) + timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        pytest.param({"cpu_percent": 5.0}, "body.samples.0.cpu_percent", id="unknown-field"),
        pytest.param({"memory_usage_mb": -1.0}, "body.samples.0.memory_usage_mb", id="negative"),
        pytest.param({"error_rate": -0.01}, "body.samples.0.error_rate", id="negative-rate"),
        pytest.param(
            {"disk_usage_percent": 100.5}, "body.samples.0.disk_usage_percent", id="over-100"
        ),
        pytest.param(
            {"cpu_usage_percent": -0.5}, "body.samples.0.cpu_usage_percent", id="negative-percent"
        ),
        pytest.param({"timestamp": FUTURE}, "body.samples.0.timestamp", id="future-timestamp"),
        pytest.param({"timestamp": "yesterday"}, "body.samples.0.timestamp", id="bad-timestamp"),
        pytest.param({"active_requests": 2.5}, "body.samples.0.active_requests", id="fractional"),
    ],
)
async def test_invalid_sample_is_422_naming_the_field(
    settings: Settings, engine: AsyncEngine, sample: dict[str, Any], field: str
):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await ingest(client, [sample])
        assert fields(response) == [field]
        assert await exported(client) == []


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("metric", ["cpu_usage_percent", "response_time_p99"])
async def test_nan_and_infinity_are_422(
    settings: Settings, engine: AsyncEngine, literal: str, metric: str
):
    # JSON encoders refuse these values, so the body is written by hand.
    body = f'{{"samples": [{{"host": "web-1", "{metric}": {literal}}}]}}'
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.post(
            "/metrics/ingest", content=body, headers={"content-type": "application/json"}
        )
        assert fields(response) == [f"body.samples.0.{metric}"]
        assert await exported(client) == []


async def test_empty_batch_is_422(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        assert fields(await ingest(client, [])) == ["body.samples"]
        assert fields(await client.post("/metrics/ingest", json={})) == ["body.samples"]


async def test_422_does_not_echo_the_submitted_value(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await ingest(client, [{"memory_usage_mb": -987654.321}])
    assert response.status_code == 422
    assert "987654" not in response.text


async def test_one_bad_sample_rejects_the_whole_batch(settings: Settings, engine: AsyncEngine):
    stored = [full_sample(i, host="kept") for i in range(2)]
    batch = [full_sample(10 + i, host="batch") for i in range(6)]
    batch[4]["memory_usage_percent"] = 101.0
    async with app_client(create_app(settings, engine=engine)) as client:
        assert (await ingest(client, stored)).status_code == 201
        before = await exported(client)

        assert fields(await ingest(client, batch)) == ["body.samples.4.memory_usage_percent"]
        after = await exported(client)

    assert len(before) == 2
    assert after == before


async def test_every_bad_sample_of_a_batch_is_named(settings: Settings, engine: AsyncEngine):
    batch = [full_sample(i) for i in range(4)]
    batch[1]["cpu_usage_percent"] = 150.0
    batch[3]["unexpected"] = 1
    async with app_client(create_app(settings, engine=engine)) as client:
        named = fields(await ingest(client, batch))
    assert sorted(named) == ["body.samples.1.cpu_usage_percent", "body.samples.3.unexpected"]


async def test_raw_body_that_is_not_json_is_422(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.post(
            "/metrics/ingest", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert json.loads(response.text)["detail"]
        assert await exported(client) == []
