"""GET /metrics/series: bucketed avg/min/max in SQL equal what pandas computes on the same samples."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from tests.collector.samples.test_stats import DAY0, stored  # noqa: F401 - the fixture

START = DAY0 + timedelta(hours=5)
END = DAY0 + timedelta(days=2, hours=3)


def expected(frame: pd.DataFrame, host: str, step: int, metrics: list[str]) -> pd.DataFrame:
    rows = frame[
        (frame["host"] == host) & (frame["timestamp"] >= START) & (frame["timestamp"] <= END)
    ].copy()
    rows["bucket"] = rows["timestamp"].map(lambda t: int(t.timestamp()) // step * step)
    grouped = rows.groupby("bucket")
    out = grouped.size().to_frame("count")
    for name in metrics:
        column = grouped[name]
        out[f"{name}.avg"] = column.mean()
        out[f"{name}.min"] = column.min()
        out[f"{name}.max"] = column.max()
    return out


async def series(client: Any, **params: Any) -> Any:
    return await client.get("/metrics/series", params=params)


async def test_buckets_match_pandas(stored) -> None:  # noqa: F811
    client, frame = stored
    metrics = ["cpu_usage_percent", "active_requests", "error_rate"]
    response = await series(
        client,
        host="host-b",
        metrics=",".join(metrics),
        start=START.isoformat(),
        end=END.isoformat(),
        points=40,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    step = body["step_seconds"]
    assert step == -(-int((END - START).total_seconds()) // 39)
    assert len(body["timestamps"]) <= 40
    want = expected(frame, "host-b", step, metrics)
    assert body["timestamps"] == list(want.index)
    assert body["counts"] == list(want["count"])
    assert set(body["series"]) == set(metrics)
    for name in metrics:
        for agg in ("avg", "min", "max"):
            got = [math.nan if v is None else v for v in body["series"][name][agg]]
            exp = [float(v) for v in want[f"{name}.{agg}"]]
            assert got == pytest.approx(exp, rel=1e-9, nan_ok=True), f"{name}.{agg}"


async def test_defaults_are_every_metric_over_the_last_day(stored) -> None:  # noqa: F811
    client, frame = stored
    # Samples placed by the clock of this test, not of the module's import (which may lie
    # on the other side of a midnight): two inside the default day, one just before it.
    now = datetime.now(UTC).replace(microsecond=0)
    fresh = [
        {"host": "host-now", "timestamp": (now - ago).isoformat(), "memory_usage_mb": mb}
        for ago, mb in (
            (timedelta(hours=25), 900.0),
            (timedelta(hours=3), 100.0),
            (timedelta(hours=1), 300.0),
        )
    ]
    pushed = await client.post("/metrics/ingest", json={"samples": fresh})
    assert pushed.status_code == 201, pushed.text
    body = (await series(client, host="host-now")).json()
    assert len(body["series"]) == 14
    assert body["step_seconds"] == -(-24 * 3600 // 299)
    assert len(body["timestamps"]) <= 300
    assert sum(body["counts"]) == 2
    assert len(body["series"]["memory_usage_mb"]["max"]) == len(body["timestamps"])
    assert max(v for v in body["series"]["memory_usage_mb"]["max"] if v is not None) == 300.0
    # host-a's stored days, through the same defaults, counted against pandas.
    body = (await series(client, host="host-a")).json()
    since = datetime.fromisoformat(body["end"]) - timedelta(hours=24)
    recent = frame[(frame["host"] == "host-a") & (frame["timestamp"] >= since)]
    assert sum(body["counts"]) == len(recent)


async def test_unknown_metric_and_backwards_window_are_named(stored) -> None:  # noqa: F811
    client, _ = stored
    bad = await series(client, host="host-a", metrics="cpu_usage_percent,nope")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "query.metrics"
    assert "nope" in bad.json()["detail"][0]["msg"]
    backwards = await series(client, host="host-a", start=END.isoformat(), end=START.isoformat())
    assert backwards.status_code == 400 and "start" in backwards.json()["detail"]
    few = await series(client, host="host-a", points=3)
    assert few.status_code == 422 and few.json()["detail"][0]["field"] == "query.points"
    no_host = await client.get("/metrics/series")
    assert no_host.status_code == 422 and no_host.json()["detail"][0]["field"] == "query.host"


async def test_a_window_from_before_1970_starts_at_the_epoch(stored) -> None:  # noqa: F811
    # Found by the schema fuzz test: start in year 5 made a bucket start before year 1 (500).
    client, frame = stored
    body = await series(client, host="host-a", start="0005-09-29T01:00:48Z", end=END.isoformat())
    assert body.status_code == 200, body.text
    found = body.json()
    assert datetime.fromisoformat(found["start"]).year == 1970
    assert sum(found["counts"]) == int(
        ((frame["host"] == "host-a") & (frame["timestamp"] <= END)).sum()
    )
    ancient = await series(
        client, host="host-a", start="0005-01-01T00:00:00Z", end="1969-01-01T00:00:00Z"
    )
    assert ancient.status_code == 400 and "1970" in ancient.json()["detail"]
