"""The proxy table: what it declares is what the gateway documents, forwards and waits for."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from services.api.app import create_app
from services.api.proxy.table import API_PREFIX, ROUTES, TIMEOUT_FLOORS, ProxyRoute, timeouts
from shared.settings import Settings
from tests.conftest import served


def echo_service(delay: float = 0.0) -> FastAPI:
    """A real HTTP service that answers every request after `delay` s with what it received."""
    app = FastAPI()

    @app.api_route("/{rest:path}", methods=["GET", "POST"])
    async def echo(request: Request) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {
            "method": request.method,
            "path": request.scope["raw_path"].decode(),
            "query": request.url.query,
            "body": (await request.body()).decode(),
        }

    return app


@contextlib.asynccontextmanager
async def gateway_before(
    service: str, backend: FastAPI, *, http_timeout: float = 3.0, transport: str = "aiohttp"
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway served with `backend` standing in for `service`, the others away."""
    async with served(backend) as url:
        settings = Settings(
            database_url="sqlite+aiosqlite:///:memory:",
            ml_enabled=False,
            http_timeout=http_timeout,
            health_cache_seconds=0.0,
            gateway_transport=transport,
            auth="off",  # no database here: these tests are about forwarding
            **{f"{service}_url": url},
        )
        async with (
            served(create_app(settings)) as gateway,
            httpx.AsyncClient(base_url=gateway, timeout=30) as client,
        ):
            yield client


def operation(spec: dict[str, Any], route: ProxyRoute) -> dict[str, Any]:
    op: dict[str, Any] = spec["paths"][API_PREFIX + route.path][route.method.lower()]
    return op


def test_every_table_entry_is_an_operation_with_its_errors() -> None:
    spec = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:")).openapi()
    for route in ROUTES:
        op = operation(spec, route)
        assert op["operationId"].startswith(f"{route.name}_api_ml_"), route.name
        codes = {str(route.status_code), "503", "401", "403", *(str(c) for c in route.errors)}
        codes |= {"413", "415"} if route.method == "POST" else set()
        codes |= {"429"} if route.rate is not None else set()
        assert set(op["responses"]) == codes, route.name
        assert op["security"] == [{"bearer": []}, {"apiKey": []}], route.name
        assert f"**{route.role}**" in op["description"], route.name
        for code in route.errors:
            schema = op["responses"][str(code)]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorResponse")
        params = {(p["in"], p["name"]): p["required"] for p in op.get("parameters", [])}
        expected = {("path", name): True for name in route.path_params}
        if route.query is not None:
            expected |= {
                ("query", name): field.is_required()
                for name, field in route.query.model_fields.items()
            }
        assert params == expected, route.name
        if route.body is None:
            assert "requestBody" not in op, route.name
        else:
            body = op["requestBody"]
            assert body.get("required", False) == route.body_required, route.name
            assert route.body.__name__ in str(body["content"]["application/json"]["schema"])
        assert op.get("tags", []) == list(route.tags), route.name
    proxied = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method in ops
        if path not in (f"{API_PREFIX}/health", "/health", "/ready")  # the gateway's own
    }
    assert proxied == {(r.method, API_PREFIX + r.path) for r in ROUTES}


def test_every_timeout_class_waits_at_least_the_ordinary_timeout() -> None:
    assert timeouts(3.0) == {
        "read": 3.0,
        "synthetic": 120.0,
        "training": 600.0,
        "refresh": 120.0,
        "analysis": 120.0,
    }
    assert timeouts(900.0) == dict.fromkeys(TIMEOUT_FLOORS, 900.0)


async def test_a_slower_service_is_a_503_on_a_read_but_waited_for_by_training() -> None:
    async with gateway_before("trainer", echo_service(delay=1.5), http_timeout=0.5) as gateway:
        started = time.monotonic()
        read = await gateway.get("/api/ml/models")
        read_seconds = time.monotonic() - started
        started = time.monotonic()
        training = await gateway.post("/api/ml/train/anomaly-detector", json={})
        training_seconds = time.monotonic() - started
    assert read.status_code == 503
    assert read.json()["detail"].startswith("trainer service unavailable (timed out at http://")
    assert read_seconds < 1.4
    assert training.status_code == 200, training.text
    assert training.json()["path"] == "/train/anomaly-detector"
    assert training_seconds >= 1.5


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_the_service_gets_the_query_string_path_and_body_bytes_as_sent(
    transport: str,
) -> None:
    raw = b'{ "cpu_usage_percent" : 45.50,\n  "host":"h" }'
    query = "host=h%C3%A9+x&extra=1&extra=a%2Bb"  # an unknown parameter may repeat
    async with gateway_before("forecaster", echo_service(), transport=transport) as gateway:
        trend = await gateway.get(f"/api/ml/forecast/trend/cpu%20%C3%A9?{query}")
        # the service URL parsed once is the same on the next request
        again = await gateway.get(f"/api/ml/forecast/trend/cpu%20%C3%A9?{query}")
        assert again.json() == trend.json()
    async with gateway_before("trainer", echo_service(), transport=transport) as gateway:
        predict = await gateway.post(
            "/api/ml/predict/anomaly", content=raw, headers={"content-type": "application/json"}
        )
        resolve = await gateway.post("/api/ml/incidents/7/resolve")
    assert trend.json() == {
        "method": "GET",
        "path": "/forecast/trend/cpu%20%C3%A9",
        "query": query,
        "body": "",
    }
    assert predict.json()["body"] == raw.decode()
    assert resolve.json() == {
        "method": "POST",
        "path": "/incidents/7/resolve",
        "query": "",
        "body": "",
    }


async def test_invalid_input_is_refused_by_the_gateway_itself() -> None:
    async with gateway_before("trainer", echo_service()) as gateway:
        limit = await gateway.get("/api/ml/models", params={"limit": 0})
        body = await gateway.post("/api/ml/anomaly-scores/1/feedback", json={"feedback": "maybe"})
        missing = await gateway.post("/api/ml/predict/anomaly")
    assert limit.status_code == 422 and limit.json()["detail"][0]["field"] == "query.limit"
    assert body.status_code == 422 and body.json()["detail"][0]["field"] == "body.feedback"
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "body"
