"""GET /metrics/export: exactly the stored rows, oldest first, as JSON or CSV, streamed."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.app import create_app
from services.trainer.synthetic.generator import SyntheticDataGenerator, label_distribution
from services.trainer.synthetic.repository import store_frame
from shared.catalogue import METRIC_NAMES, METRICS_BY_NAME
from shared.settings import Settings
from tests.conftest import app_client, served

COLUMNS = ["timestamp", "host", *METRIC_NAMES, "label"]
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)


def sample(when: datetime, host: str, i: int) -> dict[str, Any]:
    """A sample with awkward floats (not exactly representable in decimal) and one null."""
    row: dict[str, Any] = {"timestamp": when.isoformat(), "host": host, "label": "normal"}
    for k, name in enumerate(METRIC_NAMES):
        if METRICS_BY_NAME[name].is_integer:
            row[name] = 100 + i
        elif METRICS_BY_NAME[name].is_percent:
            row[name] = (i * 7 + k) % 97 + 1 / 3
        elif METRICS_BY_NAME[name].non_negative:
            row[name] = (i + 1) * 1234.5678901234567 / (k + 3)
        else:
            row[name] = -(i + 0.1) / 7
    row["disk_io_write_mb"] = None
    if i % 3 == 0:
        row["label"] = "memory_leak"
    return row


# Sent out of order, across three days and two hosts; includes the edges of day 1.
SAMPLES = [
    sample(
        DAY0 + timedelta(days=1, hours=23, minutes=59, seconds=59, microseconds=500_000), "a", 0
    ),
    sample(DAY0 + timedelta(hours=3), "b", 1),
    sample(DAY0 + timedelta(days=2), "a", 2),  # midnight after day 1
    sample(DAY0 + timedelta(days=1), "b", 3),  # midnight starting day 1
    sample(DAY0 + timedelta(days=1, hours=12, microseconds=250), "a", 4),
    sample(DAY0 + timedelta(days=2, hours=6), "b", 5),
    sample(DAY0 + timedelta(hours=1), "a", 6),
]


def when(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["timestamp"])


def ordered(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(samples, key=when)


def parse_csv(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    """CSV rows with empty cells as None and numbers as numbers."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    rows = []
    for cells in reader:
        row: dict[str, Any] = dict(zip(header, cells, strict=True))
        for name in METRIC_NAMES:
            row[name] = None if row[name] == "" else float(row[name])
        rows.append(row)
    return header, rows


def assert_same_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert set(got) == set(COLUMNS)
        assert when(got) == when(want)
        assert when(got).utcoffset() == timedelta(0)
        assert got["host"] == want["host"]
        assert got["label"] == want["label"]
        for name in METRIC_NAMES:
            if want[name] is None:
                assert got[name] is None, name
            else:
                assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-9), name


async def export_json(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/metrics/export", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = json.loads(response.content)
    assert set(body) == {"samples", "count"}
    assert body["count"] == len(body["samples"])
    samples: list[dict[str, Any]] = body["samples"]
    return samples


async def export_csv(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/metrics/export", params={"format": "csv", **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    header, rows = parse_csv(response.text)
    assert header == COLUMNS
    return rows


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine):
    """The collector app with SAMPLES pushed through the ingest endpoint."""
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.post("/metrics/ingest", json={"samples": SAMPLES})
        assert response.status_code == 201, response.text
        yield client


@pytest.mark.parametrize("export", [export_json, export_csv], ids=["json", "csv"])
async def test_export_is_every_row_in_time_order(client, export):
    assert_same_rows(await export(client), ordered(SAMPLES))


@pytest.mark.parametrize("export", [export_json, export_csv], ids=["json", "csv"])
async def test_host_filter(client, export):
    assert_same_rows(
        await export(client, host="b"), ordered([s for s in SAMPLES if s["host"] == "b"])
    )


@pytest.mark.parametrize("export", [export_json, export_csv], ids=["json", "csv"])
async def test_date_only_range_covers_the_whole_day(client, export):
    day1 = (DAY0 + timedelta(days=1)).date().isoformat()
    expected = [s for s in SAMPLES if when(s).date().isoformat() == day1]
    assert len(expected) == 3  # midnight, noon and the last half second of the day
    assert_same_rows(await export(client, start_date=day1, end_date=day1), ordered(expected))


@pytest.mark.parametrize("export", [export_json, export_csv], ids=["json", "csv"])
async def test_datetime_range_and_host_combine(client, export):
    start = DAY0 + timedelta(days=1)
    end = DAY0 + timedelta(days=2)
    expected = [s for s in SAMPLES if s["host"] == "a" and start <= when(s) <= end]
    assert len(expected) == 3
    actual = await export(client, host="a", start_date=start.isoformat(), end_date=end.isoformat())
    assert_same_rows(actual, ordered(expected))


async def test_open_ended_ranges(client):
    start = DAY0 + timedelta(days=2)
    after = await export_json(client, start_date=start.isoformat())
    before = await export_json(client, end_date=(start - timedelta(microseconds=1)).isoformat())
    assert_same_rows(after, ordered([s for s in SAMPLES if when(s) >= start]))
    assert_same_rows(before, ordered([s for s in SAMPLES if when(s) < start]))


@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_empty_selection(client, fmt):
    response = await client.get("/metrics/export", params={"format": fmt, "host": "nobody"})
    assert response.status_code == 200
    if fmt == "json":
        assert response.json() == {"samples": [], "count": 0}
    else:
        assert response.text.splitlines() == [",".join(COLUMNS)]


async def test_malformed_date_is_422_and_reversed_range_400(client):
    bad = await client.get("/metrics/export", params={"end_date": "31/01/2024"})
    assert bad.status_code == 422
    assert [item["field"] for item in bad.json()["detail"]] == ["query.end_date"]
    reversed_range = await client.get(
        "/metrics/export", params={"start_date": "2024-02-02", "end_date": "2024-02-01"}
    )
    assert reversed_range.status_code == 400


async def test_unknown_format_is_422(client):
    response = await client.get("/metrics/export", params={"format": "xml"})
    assert response.status_code == 422
    assert [item["field"] for item in response.json()["detail"]] == ["query.format"]


async def test_large_export_streams_in_many_chunks(settings: Settings, engine: AsyncEngine):
    frame = SyntheticDataGenerator(seed=3).generate_full_training_set(30)
    async with engine.begin() as conn:
        assert await store_frame(conn, frame, host="synthetic") == 43_200
    labels = {k: v for k, v in label_distribution(frame).items() if v}

    # Served over real HTTP: httpx's ASGI transport joins the body into one chunk.
    async with (
        served(create_app(settings, engine=engine)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        chunks = 0
        body = bytearray()
        async with client.stream("GET", "/metrics/export") as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                chunks += 1
                body += chunk
        assert chunks > 1
        data = json.loads(body)
        assert data["count"] == len(data["samples"]) == 43_200
        counted: dict[str, int] = {}
        for row in data["samples"]:
            counted[row["label"]] = counted.get(row["label"], 0) + 1
        assert counted == labels
        stamps = [when(row) for row in data["samples"][::1000]]
        assert stamps == sorted(stamps)

        chunks = 0
        text = bytearray()
        async with client.stream("GET", "/metrics/export", params={"format": "csv"}) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                chunks += 1
                text += chunk
        assert chunks > 1
        header, rows = parse_csv(text.decode())
        assert header == COLUMNS
        assert len(rows) == 43_200
        first = frame.iloc[0]
        assert datetime.fromisoformat(rows[0]["timestamp"]) == first["timestamp"].to_pydatetime()
        assert rows[0]["cpu_usage_percent"] == pytest.approx(first["cpu_usage_percent"], rel=1e-9)
