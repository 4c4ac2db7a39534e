"""GET /metrics/stats: the SQL statistics equal what pandas computes on the same samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.app import create_app
from shared.catalogue import LABELS, METRIC_NAMES, METRICS
from shared.settings import Settings
from tests.conftest import app_client

# Three whole UTC days, ending before today, sampled every 20 minutes on two hosts.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
STEP = timedelta(minutes=20)
PER_DAY = 72


def make_frame(seed: int = 7) -> pd.DataFrame:
    """Random samples of every metric, with some values missing, on hosts a and b."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for host_index, host in enumerate(("host-a", "host-b")):
        for i in range(3 * PER_DAY):
            row: dict[str, Any] = {
                # host-b samples sit 7 minutes after host-a's, so time filters split them apart
                "timestamp": DAY0 + i * STEP + timedelta(minutes=7 * host_index),
                "host": host,
                "label": LABELS[int(rng.choice(4, p=[0.7, 0.1, 0.1, 0.1]))],
            }
            for metric in METRICS:
                if metric.is_integer:
                    value: Any = int(rng.integers(0, 500))
                elif metric.is_percent:
                    value = float(rng.uniform(0, 100))
                elif metric.non_negative:
                    value = float(rng.lognormal(3, 1))
                else:
                    value = float(rng.normal(0, 5))
                row[metric.name] = value if rng.random() > 0.1 else None
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def payload(frame: pd.DataFrame) -> list[dict[str, Any]]:
    samples = []
    for record in frame.to_dict("records"):
        sample = {k: v for k, v in record.items() if not (isinstance(v, float) and np.isnan(v))}
        sample["timestamp"] = record["timestamp"].isoformat()
        if sample.get("active_requests") is not None:
            sample["active_requests"] = int(sample["active_requests"])
        samples.append(sample)
    return samples


def expected_stats(frame: pd.DataFrame) -> dict[str, Any]:
    metrics = {}
    for name in METRIC_NAMES:
        column = frame[name].dropna().astype(float)
        metrics[name] = {
            "mean": column.mean(),
            "std": column.std(ddof=1),
            "min": column.min(),
            "max": column.max(),
            "count": len(column),
        }
    span = frame["timestamp"].max() - frame["timestamp"].min()
    return {
        "total_samples": len(frame),
        "metrics": metrics,
        "label_distribution": {k: int(v) for k, v in frame["label"].value_counts().items()},
        "data_duration_hours": span.total_seconds() / 3600.0,
        "hosts": sorted(frame["host"].unique()),
        "start": frame["timestamp"].min().to_pydatetime(),
        "end": frame["timestamp"].max().to_pydatetime(),
    }


def assert_matches(actual: dict[str, Any], frame: pd.DataFrame) -> None:
    expected = expected_stats(frame)
    assert actual["total_samples"] == expected["total_samples"]
    assert actual["label_distribution"] == expected["label_distribution"]
    assert actual["hosts"] == expected["hosts"]
    assert actual["data_duration_hours"] == pytest.approx(expected["data_duration_hours"])
    assert datetime.fromisoformat(actual["start"]) == expected["start"]
    assert datetime.fromisoformat(actual["end"]) == expected["end"]
    assert set(actual["metrics"]) == set(METRIC_NAMES)
    for name, want in expected["metrics"].items():
        got = actual["metrics"][name]
        assert got["count"] == want["count"], name
        for key in ("mean", "std", "min", "max"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), f"{name}.{key}"


@pytest.fixture
async def stored(settings: Settings, engine: AsyncEngine):
    """The collector app with `make_frame()` pushed through the ingest endpoint."""
    frame = make_frame()
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.post("/metrics/ingest", json={"samples": payload(frame)})
        assert response.status_code == 201, response.text
        yield client, frame


async def stats(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/metrics/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_statistics_of_everything_match_pandas(stored):
    client, frame = stored
    assert_matches(await stats(client), frame)


async def test_host_filter(stored):
    client, frame = stored
    actual = await stats(client, host="host-b")
    assert actual["hosts"] == ["host-b"]
    assert_matches(actual, frame[frame["host"] == "host-b"])


async def test_unknown_host_selects_nothing(stored):
    client, _ = stored
    actual = await stats(client, host="nowhere")
    assert actual["total_samples"] == 0
    assert actual["hosts"] == []


async def test_date_range_selects_whole_days(stored):
    client, frame = stored
    day1 = (DAY0 + timedelta(days=1)).date()
    actual = await stats(client, start_date=day1.isoformat(), end_date=day1.isoformat())
    selected = frame[frame["timestamp"].dt.date == day1]
    assert len(selected) == 2 * PER_DAY
    assert_matches(actual, selected)


async def test_datetime_range_is_inclusive_and_honours_offsets(stored):
    client, frame = stored
    start = DAY0 + timedelta(hours=5, minutes=7)  # exactly a host-b sample
    end = DAY0 + timedelta(days=1, hours=2)  # exactly a host-a sample
    # The end given in +02:00 names the same instant.
    end_text = end.astimezone(timezone(timedelta(hours=2))).isoformat()
    actual = await stats(
        client, start_date=start.isoformat().replace("+00:00", "Z"), end_date=end_text
    )
    selected = frame[(frame["timestamp"] >= start) & (frame["timestamp"] <= end)]
    assert {start, end} <= set(selected["timestamp"])  # both edges are samples, and included
    assert_matches(actual, selected)


async def test_host_and_time_filters_combine(stored):
    client, frame = stored
    start = DAY0 + timedelta(days=2)
    actual = await stats(client, host="host-a", start_date=start.isoformat())
    selected = frame[(frame["host"] == "host-a") & (frame["timestamp"] >= start)]
    assert_matches(actual, selected)


async def test_empty_database(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        actual = await stats(client)
    assert actual["total_samples"] == 0
    assert actual["label_distribution"] == {}
    assert actual["hosts"] == []
    assert actual["data_duration_hours"] == 0
    assert actual["start"] is None and actual["end"] is None
    for name in METRIC_NAMES:
        assert actual["metrics"][name] == {
            "mean": None,
            "std": None,
            "min": None,
            "max": None,
            "count": 0,
        }


async def test_single_sample_has_zero_spread(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        await client.post("/metrics/ingest", json={"samples": [{"cpu_usage_percent": 42.0}]})
        actual = await stats(client)
    assert actual["total_samples"] == 1
    assert actual["data_duration_hours"] == 0
    assert actual["metrics"]["cpu_usage_percent"] == {
        "mean": 42.0,
        "std": 0.0,
        "min": 42.0,
        "max": 42.0,
        "count": 1,
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start_date": "2024-13-45"}, "query.start_date"),
        ({"start_date": "last tuesday"}, "query.start_date"),
        ({"end_date": "2024-02-30"}, "query.end_date"),
        ({"end_date": "2024-01-01T25:00:00"}, "query.end_date"),
    ],
)
async def test_malformed_date_is_422_naming_it(
    settings: Settings, engine: AsyncEngine, params: dict[str, str], field: str
):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.get("/metrics/stats", params=params)
    assert response.status_code == 422
    assert [item["field"] for item in response.json()["detail"]] == [field]


@pytest.mark.parametrize(
    ("start", "end"),
    [("2024-03-02", "2024-03-01"), ("2024-03-01T12:00:00Z", "2024-03-01T11:59:59Z")],
)
async def test_start_after_end_is_400(settings: Settings, engine: AsyncEngine, start, end):
    async with app_client(create_app(settings, engine=engine)) as client:
        response = await client.get("/metrics/stats", params={"start_date": start, "end_date": end})
    assert response.status_code == 400
    assert "start_date" in response.json()["detail"]


async def test_same_day_for_start_and_end_is_allowed(settings: Settings, engine: AsyncEngine):
    async with app_client(create_app(settings, engine=engine)) as client:
        actual = await stats(client, start_date="2024-03-01", end_date="2024-03-01")
    assert actual["total_samples"] == 0
