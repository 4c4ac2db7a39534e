"""Access control at the gateway against real services on loopback: keys, roles, limits, CSRF,
CORS, paths, and the internal token between the gateway and the services."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app as create_gateway
from services.api.proxy.table import API_PREFIX, ROUTES
from services.trainer.app import create_app as create_trainer
from shared.access import ROLES, allows
from shared.apikeys import create_key, revoke_key
from shared.settings import Settings
from shared.web import ConfigurationError
from tests.api.test_gateway import Stack, stack
from tests.conftest import app_client, free_port, served

TOKEN = "internal-test-token"
SERVICES = ("collector", "trainer", "forecaster")  # their URLs in the settings


@pytest.fixture
def secured(settings: Settings) -> Settings:
    """The test settings with an internal token and keys reloaded quickly."""
    return settings.model_copy(update={"internal_token": TOKEN, "auth_cache_seconds": 0.2})


async def make_keys(engine: AsyncEngine) -> dict[str, str]:
    """One key per role, made through the repository the CLI uses."""
    keys: dict[str, str] = {}
    async with engine.begin() as conn:
        for role in ROLES:
            keys[role], _ = await create_key(conn, role=role, name=f"test {role}")
    return keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def keyed_stack(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[Stack, dict[str, str]]]:
    keys = await make_keys(engine)
    async with stack(settings, engine) as s:
        yield s, keys


def _path(template: str) -> str:
    values = {"metric": "cpu_usage_percent"}
    return re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), "1"), template)


# Open by design: the health figures and the probes (liveness, readiness).
OPEN_PATHS = {f"{API_PREFIX}/health", "/health", "/ready"}


async def test_every_route_of_the_schema_wants_a_key_and_its_role(
    secured: Settings, engine: AsyncEngine
) -> None:
    async with keyed_stack(secured, engine) as (s, keys):
        spec = (await s.gateway.get("/api/openapi.json")).json()
        operations = [
            (method.upper(), path, op)
            for path, ops in spec["paths"].items()
            for method, op in ops.items()
            if path not in OPEN_PATHS
        ]
        assert len(operations) == len(ROUTES)
        roles = {(r.method, API_PREFIX + r.path): r.role for r in ROUTES}
        for method, path, op in operations:
            url = _path(path)
            # A list where an object is expected: past the checks, a 422, no work done.
            body: dict[str, Any] = {"json": []} if "requestBody" in op else {}
            needed = roles[(method, path)]
            assert f"**{needed}**" in op["description"]

            anonymous = await s.gateway.request(method, url, **body)
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            unknown = await s.gateway.request(method, url, headers=bearer("afx_nope"), **body)
            assert unknown.status_code == 401, (method, path)

            for role in ROLES:
                answer = await s.gateway.request(method, url, headers=bearer(keys[role]), **body)
                if allows(role, needed=needed):
                    assert answer.status_code not in (401, 403), (method, path, role)
                else:
                    assert answer.status_code == 403, (method, path, role)
                    assert needed in answer.json()["detail"]
        head = await s.gateway.head("/api/ml/models")
        assert head.status_code in (401, 405)
        # Health and the gateway's own metrics stay open.
        assert (await s.gateway.get("/api/ml/health")).status_code == 200
        assert (await s.gateway.get("/metrics")).status_code == 200


async def test_loopback_without_keys_is_open_until_a_key_exists(
    secured: Settings, engine: AsyncEngine
) -> None:
    async with stack(secured, engine) as s:
        assert (await s.gateway.get("/api/ml/models")).status_code == 200
        async with engine.begin() as conn:
            key, record = await create_key(conn, role="reader")
        # A new key works at once (an unknown key reloads the keys).
        assert (await s.gateway.get("/api/ml/models", headers=bearer(key))).status_code == 200
        await asyncio.sleep(0.5)  # the periodic reload turns keys on
        assert (await s.gateway.get("/api/ml/models")).status_code == 401
        x_api_key = await s.gateway.get("/api/ml/models", headers={"X-API-Key": key})
        assert x_api_key.status_code == 200
        basic = await s.gateway.get("/api/ml/models", headers={"Authorization": f"Basic {key}"})
        assert basic.status_code == 401
        async with engine.begin() as conn:
            await revoke_key(conn, record.id)
        await asyncio.sleep(0.5)
        revoked = await s.gateway.get("/api/ml/models", headers=bearer(key))
        assert revoked.status_code == 401
        assert "revoked" in revoked.json()["detail"]
        # Every key revoked: keys stay required (not open again).
        assert (await s.gateway.get("/api/ml/models")).status_code == 401


async def test_a_key_made_just_after_the_keys_were_read_works_at_once(
    secured: Settings, engine: AsyncEngine
) -> None:
    # No periodic reload in the test's time: only an unknown key makes the gateway read them.
    patient = secured.model_copy(update={"auth_cache_seconds": 3600.0})
    async with engine.begin() as conn:
        await create_key(conn, role="admin")
    async with stack(patient, engine) as s:
        wrong = await s.gateway.get("/api/ml/models", headers=bearer("afx_not_a_key"))
        assert wrong.status_code == 401  # and the keys were read just now
        async with engine.begin() as conn:
            key, _ = await create_key(conn, role="reader")
        answer = await s.gateway.get("/api/ml/models", headers={"X-API-Key": key})
        assert answer.status_code == 200, answer.text


async def test_auth_on_requires_keys_even_on_loopback(
    secured: Settings, engine: AsyncEngine
) -> None:
    settings = secured.model_copy(update={"auth": "on"})
    with pytest.raises(ConfigurationError, match="keys create"):
        async with app_client(create_gateway(settings)):
            pass
    async with keyed_stack(settings, engine) as (s, keys):
        assert (await s.gateway.get("/api/ml/models")).status_code == 401
        ok = await s.gateway.get("/api/ml/models", headers=bearer(keys["reader"]))
        assert ok.status_code == 200


async def test_a_gateway_beyond_loopback_refuses_to_start_without_a_key(
    secured: Settings, engine: AsyncEngine
) -> None:
    # no service behind it: free ports, not the defaults (a stack left running there answers)
    away = {f"{name}_url": f"http://127.0.0.1:{free_port()}" for name in SERVICES}
    wide = secured.model_copy(update={"bind_host": "0.0.0.0", **away})
    with pytest.raises(ConfigurationError, match="beyond loopback"):
        async with app_client(create_gateway(wide)):
            pass
    with pytest.raises(ConfigurationError, match="only on a loopback bind"):
        async with app_client(create_gateway(wide.model_copy(update={"auth": "off"}))):
            pass
    keys = await make_keys(engine)
    async with app_client(create_gateway(wide)) as client:  # with a key it starts, keyed
        assert (await client.get("/api/ml/models")).status_code == 401
        assert (await client.get("/api/ml/models", headers=bearer(keys["admin"]))).status_code in (
            200,
            503,  # no services behind this one
        )


async def test_predict_is_rate_limited_per_key(secured: Settings, engine: AsyncEngine) -> None:
    settings = secured.model_copy(update={"rate_predict": 1.0, "rate_predict_burst": 2.0})
    async with keyed_stack(settings, engine) as (s, keys):
        sample = {"host": "h1", "cpu_usage_percent": 10.0}
        answers = [
            await s.gateway.post(
                "/api/ml/predict/anomaly", json=sample, headers=bearer(keys["operator"])
            )
            for _ in range(3)
        ]
        other = await s.gateway.post(
            "/api/ml/predict/anomaly", json=sample, headers=bearer(keys["admin"])
        )
        reads = await s.gateway.get("/api/ml/models", headers=bearer(keys["operator"]))
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert answers[2].status_code == 429
    assert int(answers[2].headers["retry-after"]) >= 1
    assert "rate limit" in answers[2].json()["detail"]
    assert other.status_code == 200  # another key has its own bucket
    assert reads.status_code == 200  # reads are not limited


async def test_ingest_is_rate_limited_per_key(secured: Settings, engine: AsyncEngine) -> None:
    settings = secured.model_copy(update={"rate_ingest": 0.5, "rate_ingest_burst": 1.0})
    async with keyed_stack(settings, engine) as (s, keys):
        batch = {"samples": [{"host": "h1", "cpu_usage_percent": 10.0}]}
        first, second = [
            await s.gateway.post(
                "/api/ml/metrics/ingest", json=batch, headers=bearer(keys["operator"])
            )
            for _ in range(2)
        ]
    assert first.status_code == 201
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) == 2


async def test_bodies_over_their_route_limit_are_413_before_parsing(
    secured: Settings, engine: AsyncEngine
) -> None:
    settings = secured.model_copy(update={"max_body_bytes": 1_000, "ingest_max_body_bytes": 20_000})
    async with keyed_stack(settings, engine) as (s, keys):
        headers = bearer(keys["operator"]) | {"Content-Type": "application/json"}
        padding = '{"host": "' + "h" * 2_000 + '"}'
        large = await s.gateway.post("/api/ml/predict/anomaly", content=padding, headers=headers)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b" " * 400
            yield b"{}"

        chunked = await s.gateway.post("/api/ml/predict/anomaly", content=chunks(), headers=headers)
        batch = {"samples": [{"host": "h1", "cpu_usage_percent": float(i)} for i in range(100)]}
        ingest = await s.gateway.post("/api/ml/metrics/ingest", json=batch, headers=headers)
        huge = {"samples": batch["samples"] * 10}
        too_large = await s.gateway.post("/api/ml/metrics/ingest", json=huge, headers=headers)
        anonymous = await s.gateway.post("/api/ml/predict/anomaly", content=padding)
    assert large.status_code == 413
    assert "1000 bytes" in large.json()["detail"]
    assert chunked.status_code == 413
    assert ingest.status_code == 201  # 3 KB: over the small limit, within ingest's
    assert too_large.status_code == 413
    assert "20000 bytes" in too_large.json()["detail"]
    assert anonymous.status_code == 401  # no key: refused before the size is looked at


async def test_bodies_are_json_only_and_cross_site_form_posts_are_refused(
    settings: Settings, engine: AsyncEngine
) -> None:
    # No keys (open on loopback): the case where a foreign page could post on a user's behalf.
    async with stack(settings, engine) as s:
        form = await s.gateway.post("/api/ml/predict/anomaly", data={"host": "h1"})
        untyped = await s.gateway.post(
            "/api/ml/predict/anomaly", content=b'{"host": "h1"}', headers={"Content-Type": ""}
        )
        text = await s.gateway.post(
            "/api/ml/predict/anomaly",
            content=b'{"host": "h1"}',
            headers={"Content-Type": "text/plain"},
        )
        foreign = {"Origin": "http://evil.example"}
        resolve = "/api/ml/incidents/1/resolve"
        cross_site = await s.gateway.post(resolve, headers=foreign)
        cross_site_json = await s.gateway.post(
            resolve, headers=foreign | {"Content-Type": "application/json"}
        )
        same_site = await s.gateway.post(resolve, headers={"Origin": str(s.gateway.base_url)})
        no_origin = await s.gateway.post(resolve)
        activate = await s.gateway.post("/api/ml/models/1/activate", headers=foreign)
    assert form.status_code == 415
    assert "application/json" in form.json()["detail"]
    assert untyped.status_code == 415
    assert text.status_code == 415
    assert cross_site.status_code == 403
    assert "cross-site" in cross_site.json()["detail"]
    assert activate.status_code == 403
    # A JSON content type makes a browser ask first (CORS preflight), which is refused.
    assert cross_site_json.status_code == 404
    assert same_site.status_code == 404
    assert no_origin.status_code == 404  # curl and scripts: no Origin


async def test_cors_is_off_unless_origins_are_allowed(
    settings: Settings, engine: AsyncEngine
) -> None:
    preflight = {
        "Origin": "https://dash.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with stack(settings, engine) as s:
        off = await s.gateway.options("/api/ml/predict/anomaly", headers=preflight)
        get_off = await s.gateway.get("/api/ml/models", headers={"Origin": "https://dash.example"})
    allowed = settings.model_copy(update={"cors_origins": ["https://dash.example"]})
    async with stack(allowed, engine) as s:
        on = await s.gateway.options("/api/ml/predict/anomaly", headers=preflight)
        other = await s.gateway.options(
            "/api/ml/predict/anomaly", headers=preflight | {"Origin": "https://evil.example"}
        )
        resolve = await s.gateway.post(
            "/api/ml/incidents/1/resolve", headers={"Origin": "https://dash.example"}
        )
    assert "access-control-allow-origin" not in off.headers
    assert "access-control-allow-origin" not in get_off.headers
    assert on.status_code == 200
    assert on.headers["access-control-allow-origin"] == "https://dash.example"
    assert "access-control-allow-origin" not in other.headers
    assert resolve.status_code == 404  # an allowed origin is not foreign


async def test_dot_segments_and_nul_in_paths_are_404(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        answers = [
            await s.gateway.get(path)
            for path in (
                "/api/ml/forecast/trend/%2e%2e",
                "/api/ml/forecast/trend/%2E%2E",
                "/api/ml/forecast/trend/.",
                "/api/ml/models/%2e%2e/1",
                "/api/ml/forecast/trend/cpu%00",
            )
        ]
        # httpx removes dot segments itself: send this one as raw bytes.
        url = httpx.URL(str(s.gateway.base_url))
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(b"GET /api/ml/forecast/trend/.. HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
    assert [a.status_code for a in answers] == [404] * 5
    assert status_line.split()[1] == b"404"


async def test_nul_bytes_in_text_are_422_naming_the_field(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        stats = await s.gateway.get("/api/ml/metrics/stats", params={"host": "web\x001"})
        incidents = await s.gateway.get("/api/ml/incidents", params={"host": "\x00"})
        ingest = await s.gateway.post(
            "/api/ml/metrics/ingest", json={"samples": [{"host": "a\x00", "label": "normal"}]}
        )
        forecast = await s.gateway.post(
            "/api/ml/train/forecaster", json={"metrics": ["cpu_usage_percent\x00"]}
        )
        collector = str(s.app.state.health.clients.settings.service_url("collector"))
        async with httpx.AsyncClient(base_url=collector) as direct:
            service = await direct.get("/metrics/stats", params={"host": "\x00"})
    for answer, field in [
        (stats, "query.host"),
        (incidents, "query.host"),
        (ingest, "body.samples.0.host"),
        (forecast, "body.metrics"),
        (service, "query.host"),
    ]:
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["detail"][0]["field"].startswith(field), answer.json()
    assert "NUL" in stats.json()["detail"][0]["msg"]


async def test_services_answer_only_callers_with_the_internal_token(
    secured: Settings, engine: AsyncEngine
) -> None:
    async with stack(secured, engine) as s:
        url = str(s.app.state.health.clients.settings.service_url("trainer"))
        async with httpx.AsyncClient(base_url=url) as direct:
            without = await direct.get("/models")
            wrong = await direct.get("/models", headers={"X-Internal-Token": "guess"})
            right = await direct.get("/models", headers={"X-Internal-Token": TOKEN})
            health = await direct.get("/health")
            docs = await direct.get("/docs")
        through = await s.gateway.get("/api/ml/models")
        aggregate = await s.gateway.get("/api/ml/health")
    assert without.status_code == 401
    assert "X-Internal-Token" in without.json()["detail"]
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert health.status_code == 200
    assert docs.status_code == 401
    assert through.status_code == 200
    assert aggregate.json()["services"]["trainer"]["status"] == "up"


def test_a_service_beyond_loopback_refuses_to_start_without_the_token(
    settings: Settings,
) -> None:
    wide = settings.model_copy(update={"bind_host": "0.0.0.0"})
    with pytest.raises(ConfigurationError, match="AUTOFIX_INTERNAL_TOKEN"):
        create_trainer(wide)
    create_trainer(wide.model_copy(update={"internal_token": TOKEN}))


async def test_generation_spares_a_host_with_real_samples_unless_told(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as s:
        an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        sample = {"host": "web-1", "timestamp": an_hour_ago, "cpu_usage_percent": 12.5}
        pushed = await s.gateway.post("/api/ml/metrics/ingest", json={"samples": [sample]})
        refused = await s.gateway.post(
            "/api/ml/train/generate-synthetic", json={"host": "web-1", "days": 1}
        )
        kept = await s.gateway.get("/api/ml/metrics/stats", params={"host": "web-1"})
        forced = await s.gateway.post(
            "/api/ml/train/generate-synthetic",
            json={"host": "web-1", "days": 1, "overwrite": True},
        )
        synthetic = [
            await s.gateway.post("/api/ml/train/generate-synthetic", json={"days": 1})
            for _ in range(2)
        ]
    assert pushed.status_code == 201
    assert refused.status_code == 409
    assert "web-1" in refused.json()["detail"] and "overwrite" in refused.json()["detail"]
    assert kept.json()["total_samples"] == 1
    assert forced.status_code == 200
    assert [a.status_code for a in synthetic] == [200, 200]  # synthetic over synthetic


async def test_the_gateway_reaches_services_in_front_of_them(settings: Settings) -> None:
    """The internal token goes with every forwarded call."""
    seen: list[str | None] = []
    backend = FastAPI()

    @backend.get("/models")
    async def models(request: Request) -> dict[str, Any]:
        seen.append(request.headers.get("x-internal-token"))
        return {"models": [], "total": 0}

    async with served(backend) as url:
        gateway = create_gateway(
            settings.model_copy(update={"trainer_url": url, "internal_token": TOKEN, "auth": "off"})
        )
        async with app_client(gateway) as client:
            answer = await client.get("/api/ml/models")
    assert answer.status_code == 200, answer.text
    assert seen == [TOKEN]


async def test_keys_that_cannot_be_read_are_a_503_that_says_when_to_retry(
    tmp_path: Path,
) -> None:
    """A database without the api_keys table (never migrated): keyed routes are closed."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/empty.db", auth="on")
    async with app_client(create_gateway(settings)) as client:
        keyed = await client.get("/api/ml/models", headers=bearer("afx_anything"))
        anonymous = await client.get("/api/ml/models")
    assert keyed.status_code == 503
    assert "API keys unavailable" in keyed.json()["detail"]
    assert keyed.headers["retry-after"] == "5"
    assert anonymous.status_code == 401
