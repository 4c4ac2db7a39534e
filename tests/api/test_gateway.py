"""The gateway against real services on loopback ports."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app as create_gateway
from services.collector.app import create_app as create_collector
from services.forecaster.app import create_app as create_forecaster
from services.trainer.anomaly import repository as anomaly_repo
from services.trainer.app import create_app as create_trainer
from shared.settings import Settings
from shared.tables import metrics_history
from tests.conftest import free_port, served


@dataclass
class Stack:
    gateway: httpx.AsyncClient
    app: FastAPI


@contextlib.asynccontextmanager
async def stack(
    settings: Settings,
    engine: AsyncEngine,
    *,
    without: str = "",
    urls: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Collector, trainer and forecaster served on loopback; the gateway in front of them.

    `without` leaves one service out; `urls` points the gateway elsewhere for some.
    """
    ports = {name: free_port() for name in ("collector", "trainer", "forecaster")}
    settings = settings.model_copy(
        update={
            "collector_url": f"http://127.0.0.1:{ports['collector']}",
            "trainer_url": f"http://127.0.0.1:{ports['trainer']}",
            "forecaster_url": f"http://127.0.0.1:{ports['forecaster']}",
        }
        | {f"{name}_url": url for name, url in (urls or {}).items()}
    )
    factories = {
        "collector": create_collector,
        "trainer": create_trainer,
        "forecaster": create_forecaster,
    }
    async with contextlib.AsyncExitStack() as exits:
        for name, factory in factories.items():
            if name != without:
                await exits.enter_async_context(
                    served(factory(settings, engine=engine), ports[name])
                )
        gateway = create_gateway(settings)
        url = await exits.enter_async_context(served(gateway))
        # Trainings through it (Prophet, forests) can take minutes on a loaded 2-core machine.
        client = await exits.enter_async_context(httpx.AsyncClient(base_url=url, timeout=180))
        yield Stack(client, gateway)


async def test_health_aggregates_every_service(settings: Settings, engine: AsyncEngine) -> None:
    async with stack(settings, engine) as s:
        await s.gateway.post("/api/ml/train/generate-synthetic", json={"days": 1})
        response = await s.gateway.get("/api/ml/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["message"] == "ML module operational"
    assert body["metrics_collected"] == 1440
    assert body["oldest_data_age_hours"] == pytest.approx(24, abs=0.1)
    assert body["active_models"] == 0
    assert body["data_collection_active"] is False  # ML_ENABLED=false in these tests
    assert {k: v["status"] for k, v in body["services"].items()} == {
        "collector": "up",
        "trainer": "up",
        "forecaster": "up",
    }
    assert {"anomaly-scoring", "anomaly-score-writer"} <= {
        x["name"] for x in body["loops"]["trainer"]
    }
    assert body["scoring"]["lag_limit_seconds"] == settings.scoring_lag_limit


async def test_a_lagging_scoring_loop_shows_in_the_aggregate(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        await s.gateway.post("/api/ml/train/generate-synthetic", json={"days": 1})
        async with engine.begin() as conn:  # the first sample alone is scored: a day behind
            first = (await conn.execute(sa.select(sa.func.min(metrics_history.c.id)))).scalar_one()
            ts = (
                await conn.execute(
                    sa.select(metrics_history.c.timestamp).where(metrics_history.c.id == first)
                )
            ).scalar_one()
            record = anomaly_repo.score_record(
                metrics_id=int(first),
                model_id=None,
                timestamp=ts,
                host="synthetic",
                score=0.1,
                threshold=0.999,
                is_anomaly=False,
                severity="low",
                contributions=[],
            )
            await anomaly_repo.insert_scores(conn, [record])
        body = (await s.gateway.get("/api/ml/health")).json()
    assert body["status"] == "degraded"
    assert body["services"]["trainer"]["status"] == "degraded"
    assert "scoring lags" in body["services"]["trainer"]["detail"]
    assert "scoring lags" in body["message"]
    assert body["scoring"]["lag_seconds"] > settings.scoring_lag_limit


async def test_service_down_is_a_503_naming_it(settings: Settings, engine: AsyncEngine) -> None:
    async with stack(settings, engine, without="trainer") as s:
        models = await s.gateway.get("/api/ml/models")
        predict = await s.gateway.post("/api/ml/predict/anomaly", json={"host": "h"})
        health = await s.gateway.get("/api/ml/health")
        stats = await s.gateway.get("/api/ml/metrics/stats")
    assert models.status_code == 503
    assert "trainer" in models.json()["detail"]
    assert "unreachable" in models.json()["detail"]
    # The gateway's own 503 says when to try again (a crashed service is back in seconds).
    assert models.headers["retry-after"] == "5"
    assert predict.status_code == 503 and predict.headers["retry-after"] == "5"
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["services"]["trainer"]["status"] == "down"
    assert "trainer" in health.json()["message"]
    assert stats.status_code == 200


async def test_collector_down_makes_health_unhealthy(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine, without="collector") as s:
        health = await s.gateway.get("/api/ml/health")
        export = await s.gateway.get("/api/ml/metrics/export")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert export.status_code == 503
    assert "collector" in export.json()["detail"]
    assert export.headers["retry-after"] == "5"  # the streamed route's 503 too


async def test_a_hanging_service_is_a_503_within_the_timeout(
    settings: Settings, engine: AsyncEngine
) -> None:
    hung: list[asyncio.StreamWriter] = []

    async def accept_and_hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)  # never answer

    server = await asyncio.start_server(accept_and_hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = settings.model_copy(update={"http_timeout": 1.0})
    hanging = {"trainer": f"http://127.0.0.1:{port}"}
    async with stack(settings, engine, without="trainer", urls=hanging) as s:
        started = time.monotonic()
        response = await s.gateway.get("/api/ml/models")
        elapsed = time.monotonic() - started
    server.close()
    for writer in hung:
        writer.close()
    await server.wait_closed()
    assert response.status_code == 503
    assert "trainer" in response.json()["detail"]
    assert "timed out" in response.json()["detail"]
    assert response.headers["retry-after"] == "5"
    assert elapsed < 5


async def test_downstream_4xx_pass_through_unchanged(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        missing = await s.gateway.get("/api/ml/models/12345")
        reversed_range = await s.gateway.get(
            "/api/ml/metrics/stats", params={"start_date": "2024-02-01", "end_date": "2024-01-01"}
        )
        bad_date = await s.gateway.get("/api/ml/metrics/export", params={"start_date": "yesterday"})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "model 12345 not found"}
    assert reversed_range.status_code == 400
    assert "start_date" in reversed_range.json()["detail"]
    assert bad_date.status_code == 422
    assert bad_date.json()["detail"][0]["field"] == "query.start_date"


async def test_invalid_body_is_a_422_naming_the_field(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        response = await s.gateway.post(
            "/api/ml/metrics/ingest",
            json={"samples": [{"cpu_usage_percent": 120, "host": "a"}]},
        )
        days = await s.gateway.post("/api/ml/train/generate-synthetic", json={"days": 400})
        stats = await s.gateway.get("/api/ml/metrics/stats")
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body.samples.0.cpu_usage_percent"
    assert days.status_code == 422
    assert days.json()["detail"][0]["field"] == "body.days"
    assert stats.json()["total_samples"] == 0


async def test_export_streams_through_in_chunks(settings: Settings, engine: AsyncEngine) -> None:
    async with stack(settings, engine) as s:
        generated = await s.gateway.post("/api/ml/train/generate-synthetic", json={"days": 3})
        assert generated.status_code == 200
        chunks = 0
        data = bytearray()
        async with s.gateway.stream("GET", "/api/ml/metrics/export", params={"format": "csv"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/csv")
            async for chunk in r.aiter_raw():
                chunks += 1
                data += chunk
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == 3 * 1440
    assert chunks > 1
    assert rows[0]["timestamp"] < rows[-1]["timestamp"]


async def test_openapi_documents_every_route(settings: Settings, engine: AsyncEngine) -> None:
    async with stack(settings, engine) as s:
        spec = (await s.gateway.get("/api/openapi.json")).json()
        docs = await s.gateway.get("/api/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    expected = {
        ("get", "/api/ml/health"),
        ("get", "/api/ml/metrics/stats"),
        ("get", "/api/ml/metrics/export"),
        ("post", "/api/ml/metrics/ingest"),
        ("get", "/api/ml/models"),
        ("post", "/api/ml/train/generate-synthetic"),
    }
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= documented
    schemas = spec["components"]["schemas"]
    assert {"HealthResponse", "StatsResponse", "IngestRequest", "GenerateSyntheticRequest"} <= set(
        schemas
    )
    ingest = spec["paths"]["/api/ml/metrics/ingest"]["post"]
    assert ingest["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "IngestRequest"
    )


async def test_gateway_exposes_its_request_metrics(settings: Settings, engine: AsyncEngine) -> None:
    async with stack(settings, engine, without="trainer") as s:
        # Counted by the status each call got (a loaded machine can make one a 503).
        statuses = collections.Counter(
            [(await s.gateway.get("/api/ml/health")).status_code for _ in range(3)]
        )
        await s.gateway.get("/api/ml/models")  # 503
        text = (await s.gateway.get("/metrics")).text
    for status, count in statuses.items():
        assert (
            'autofix_http_requests_total{method="GET",route="/api/ml/health",service="api",'
            f'status="{status}",traffic="admin"}} {float(count)}' in text
        )
    assert (
        'autofix_http_request_errors_total{route="/api/ml/models",service="api",traffic="serving"} 1.0'
        in text
    )
    assert "autofix_http_request_duration_seconds_bucket" in text
    assert "autofix_http_requests_in_progress" in text


async def test_plain_httpx_transport_works_too(settings: Settings, engine: AsyncEngine) -> None:
    settings = settings.model_copy(update={"gateway_transport": "httpx"})
    async with stack(settings, engine, without="forecaster") as s:
        health = await s.gateway.get("/api/ml/health")
        stats = await s.gateway.get("/api/ml/metrics/stats")
    assert health.status_code == 200
    assert health.json()["services"]["forecaster"]["status"] == "down"
    assert (
        "forecaster service unavailable (unreachable"
        in health.json()["services"]["forecaster"]["detail"]
    )
    assert stats.json()["total_samples"] == 0


async def test_out_of_range_input_is_a_422_not_a_500(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Found by fuzzing the OpenAPI schema (schemathesis): ids past 64 bits, year-70 dates."""
    huge = 2**64
    async with stack(settings, engine) as s:
        model = await s.gateway.get(f"/api/ml/models/{huge}")
        activate = await s.gateway.post(f"/api/ml/models/{huge}/activate")
        incident = await s.gateway.get(f"/api/ml/incidents/{huge}")
        ancient = await s.gateway.post(
            "/api/ml/metrics/ingest",
            json={"samples": [{"timestamp": "0070-05-20T10:04:45Z", "cpu_usage_percent": 1}]},
        )
        stats = await s.gateway.get("/api/ml/metrics/stats", params={"start_date": ""})
        year_one = await s.gateway.get(
            "/api/ml/metrics/stats", params={"end_date": "0001-01-01T00:02:00+03:00"}
        )
        too_big = await s.gateway.post(
            "/api/ml/metrics/ingest",
            json={"samples": [{"active_requests": 2**67}, {"memory_usage_mb": 1.7e308}]},
        )
    for response, field in (
        (model, "path.model_id"),
        (activate, "path.model_id"),
        (incident, "path.incident_id"),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["field"] == field
    assert ancient.status_code == 422
    assert ancient.json()["detail"][0]["field"] == "body.samples.0.timestamp"
    assert "1970" in ancient.json()["detail"][0]["msg"]
    assert stats.status_code == 200 and stats.json()["total_samples"] == 0
    assert year_one.status_code == 422
    assert year_one.json()["detail"][0]["field"] == "query.end_date"
    assert too_big.status_code == 422
    assert {e["field"] for e in too_big.json()["detail"]} == {
        "body.samples.0.active_requests",
        "body.samples.1.memory_usage_mb",
    }
