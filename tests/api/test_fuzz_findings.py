"""What schemathesis found at the gateway (tests/api/test_schema_fuzz.py), one regression test
each, against real services on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import utcnow
from shared.schemas.common import NUL_FREE
from shared.settings import Settings
from shared.tables import metrics_history
from tests.api.test_gateway import stack


def field_of(answer: object) -> list[str]:
    detail = answer.json()["detail"]  # type: ignore[attr-defined]
    return [d["field"] for d in detail]


async def test_every_status_a_route_answers_is_in_its_schema(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        spec = (await s.gateway.get("/api/openapi.json")).json()
        answers = {
            ("get", "/api/ml/incidents/{incident_id}"): await s.gateway.get(
                "/api/ml/incidents/999"
            ),
            ("post", "/api/ml/incidents/{incident_id}/resolve"): await s.gateway.post(
                "/api/ml/incidents/999/resolve", json={}
            ),
            ("get", "/api/ml/models/{model_id}"): await s.gateway.get("/api/ml/models/999"),
            ("get", "/api/ml/metrics/stats"): await s.gateway.get(
                "/api/ml/metrics/stats",
                params={"start_date": "2024-02-01", "end_date": "2024-01-01"},
            ),
        }
    for (method, path), answer in answers.items():
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert str(answer.status_code) in spec["paths"][path][method]["responses"], path


async def test_a_body_that_is_not_utf8_is_a_422_naming_the_body(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        answer = await s.gateway.post(
            "/api/ml/predict/anomaly",
            content=b'{"host": "\xff\xfe"}',
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == 422  # was a 400 no route documented
    assert answer.json()["detail"][0]["field"] == "body"
    assert "UTF-8" in answer.json()["detail"][0]["msg"]


async def test_a_query_parameter_given_twice_is_a_422_naming_it(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        twice = await s.gateway.get("/api/ml/models?status=active&status=retired")
        once = await s.gateway.get("/api/ml/models?status=active&limit=5")
        streamed = await s.gateway.get("/api/ml/metrics/export?host=a&host=b")
    assert twice.status_code == 422 and field_of(twice) == ["query.status"]
    assert once.status_code == 200
    assert streamed.status_code == 422 and field_of(streamed) == ["query.host"]


async def test_metrics_are_numbers_and_times_are_iso_text(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        flag = await s.gateway.post(
            "/api/ml/predict/anomaly", json={"host": "h", "disk_usage_percent": True}
        )
        text = await s.gateway.post(
            "/api/ml/predict/anomaly", json={"host": "h", "active_requests": "+0.0"}
        )
        number_time = await s.gateway.post(
            "/api/ml/metrics/ingest", json={"samples": [{"timestamp": 0}]}
        )
        number_query = await s.gateway.get("/api/ml/anomaly-scores", params={"start": "0.0"})
        iso_query = await s.gateway.get(
            "/api/ml/anomaly-scores", params={"start": "2024-01-31T12:00:00Z"}
        )
    assert flag.status_code == 422 and field_of(flag) == ["body.disk_usage_percent"]
    assert text.status_code == 422 and field_of(text) == ["body.active_requests"]
    assert number_time.status_code == 422
    assert field_of(number_time) == ["body.samples.0.timestamp"]
    assert number_query.status_code == 422 and field_of(number_query) == ["query.start"]
    assert iso_query.status_code == 200


async def test_tiny_values_never_break_the_statistics(
    settings: Settings, engine: AsyncEngine
) -> None:
    """PostgreSQL refused to square 2e-313 (an underflow error): stats answered 500."""
    async with stack(settings, engine) as s:
        pushed = await s.gateway.post(
            "/api/ml/metrics/ingest",
            json={"samples": [{"host": "tiny", "error_rate_trend": 2.2250738585e-313}]},
        )
        assert pushed.status_code == 201
        async with engine.connect() as conn:
            stored = (
                await conn.execute(
                    sa.select(metrics_history.c.error_rate_trend).where(
                        metrics_history.c.host == "tiny"
                    )
                )
            ).scalar_one()
        assert stored == 0.0  # below 1e-100: stored as 0
        # Rows stored before this rule (or by other means) are summarised all the same.
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(metrics_history).values(
                    timestamp=utcnow() - timedelta(minutes=5),
                    host="tiny",
                    label="normal",
                    error_rate_trend=1e-300,
                    cpu_rate_of_change=-1e-200,
                )
            )
        stats = await s.gateway.get("/api/ml/metrics/stats", params={"host": "tiny"})
    assert stats.status_code == 200
    metrics = stats.json()["metrics"]
    assert metrics["error_rate_trend"]["count"] == 2
    assert metrics["cpu_rate_of_change"]["std"] == 0.0


async def test_the_schema_states_the_text_and_date_rules(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        spec = (await s.gateway.get("/api/openapi.json")).json()
        empty_date = await s.gateway.get("/api/ml/metrics/stats", params={"start_date": ""})
    params = {
        p["name"]: p["schema"] for p in spec["paths"]["/api/ml/metrics/stats"]["get"]["parameters"]
    }
    assert params["host"]["anyOf"][0]["pattern"] == NUL_FREE
    date = params["start_date"]["anyOf"][0]
    assert {"format": "date"} in date["anyOf"] and {"format": "date-time"} in date["anyOf"]
    assert {"maxLength": 0} in date["anyOf"] and empty_date.status_code == 200
    sample = spec["components"]["schemas"]["MetricSample"]["properties"]["host"]
    assert sample["anyOf"][0]["pattern"] == NUL_FREE
