"""Every probe the deployment files name answers on the real services, and readiness follows
the database and the services behind the gateway."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app as create_gateway
from services.collector.app import create_app as create_collector
from services.forecaster.app import create_app as create_forecaster
from services.trainer.app import create_app as create_trainer
from shared.settings import Settings
from tests.conftest import free_port, served

ROOT = Path(__file__).resolve().parents[2]
FACTORIES = {
    "collector": create_collector,
    "trainer": create_trainer,
    "forecaster": create_forecaster,
}
# A container of the deploy files and the service it runs.
CONTAINER_SERVICE = {"app-metrics": "collector"}
URL_PATH = re.compile(r"/(?:127\.0\.0\.1|localhost):[^/]+?(/[A-Za-z0-9_/.-]*)")
DOCKERFILE_PATH = re.compile(r"""\+ ?'(/[A-Za-z0-9_/.-]*)'""")


def probe_paths() -> set[tuple[str, str]]:
    """(service, path) of every health check in compose, the Dockerfile and the manifests."""
    found: set[tuple[str, str]] = set()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        for path in URL_PATH.findall(test):
            found.add((name, path))
    stage = ""
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if match := re.match(r"FROM \S+ AS (\w+)", line):
            stage = match.group(1)
        for path in DOCKERFILE_PATH.findall(line):
            found.add((stage, path))
    for manifest in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(manifest.read_text()):
            if not document or document["kind"] not in ("Deployment", "DaemonSet"):
                continue
            for container in document["spec"]["template"]["spec"]["containers"]:
                service = CONTAINER_SERVICE.get(container["name"], container["name"])
                for key in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if key in container:
                        found.add((service, container[key]["httpGet"]["path"]))
    return found


def test_the_deploy_files_name_the_liveness_and_readiness_of_every_service() -> None:
    paths = probe_paths()
    for service in ("collector", "trainer", "forecaster", "api"):
        assert {(service, "/health"), (service, "/ready")} <= paths, service
    assert {service for service, _ in paths} == {"collector", "trainer", "forecaster", "api"}


@contextlib.asynccontextmanager
async def stack(
    settings: Settings, engine: AsyncEngine, *, without: str = ""
) -> AsyncIterator[dict[str, str]]:
    """The three services and the gateway on loopback; their base URLs by service name."""
    ports = {name: free_port() for name in FACTORIES}
    settings = settings.model_copy(
        update={f"{name}_url": f"http://127.0.0.1:{port}" for name, port in ports.items()}
    )
    urls: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as exits:
        for name, factory in FACTORIES.items():
            if name != without:
                app = factory(settings, engine=engine)
                urls[name] = await exits.enter_async_context(served(app, ports[name]))
        urls["api"] = await exits.enter_async_context(served(create_gateway(settings)))
        yield urls


async def test_every_probe_of_the_deploy_files_answers_200(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine) as urls, httpx.AsyncClient(timeout=10) as client:
        answers = {
            (service, path): await client.get(urls[service] + path)
            for service, path in sorted(probe_paths())
        }
        ready = (await client.get(urls["api"] + "/ready")).json()
        aggregate = await client.get(urls["api"] + "/api/ml/health")
    assert {key: r.status_code for key, r in answers.items()} == dict.fromkeys(answers, 200)
    assert ready["status"] == "ready"
    assert {name: s["status"] for name, s in ready["services"].items()} == {
        "collector": "ready",
        "trainer": "ready",
        "forecaster": "ready",
    }
    assert aggregate.status_code == 200  # the public aggregate is unchanged


async def test_gateway_readiness_follows_the_collector_and_reports_the_others(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with stack(settings, engine, without="trainer") as urls:
        async with httpx.AsyncClient(timeout=10) as client:
            degraded = await client.get(urls["api"] + "/ready")
            live = await client.get(urls["api"] + "/health")
    assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
    assert degraded.json()["services"]["trainer"] is None
    assert any(p.startswith("trainer:") for p in degraded.json()["problems"])
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    async with stack(settings, engine, without="collector") as urls:
        async with httpx.AsyncClient(timeout=10) as client:
            not_ready = await client.get(urls["api"] + "/ready")
    assert not_ready.status_code == 503 and not_ready.json()["status"] == "not_ready"
    assert any("collector" in p for p in not_ready.json()["problems"])


@pytest.mark.parametrize("name", list(FACTORIES))
async def test_a_service_without_its_database_is_alive_but_not_ready(
    settings: Settings, name: str, settle_sqlite_workers: None
) -> None:
    port = free_port()  # nothing listens there
    away = settings.model_copy(
        update={"database_url": f"postgresql+asyncpg://nobody@127.0.0.1:{port}/none"}
    )
    app = FACTORIES[name](away)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        live = await client.get("/health")
        ready = await client.get("/ready")
    assert live.status_code == 200 and live.json()["database"] is False
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert ready.json()["problems"] == ["database unreachable"]
