"""A monitored stack for the observability tests: the four services on loopback with an internal
token, API keys on and a webhook receiver; and what their /metrics say."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app as create_gateway
from services.collector.app import create_app as create_collector
from services.forecaster.app import create_app as create_forecaster
from services.trainer.app import create_app as create_trainer
from shared.apikeys import create_key
from shared.settings import Settings
from tests.conftest import free_port, served

TOKEN = "observability-test-token"
FACTORIES = {
    "collector": create_collector,
    "trainer": create_trainer,
    "forecaster": create_forecaster,
}


@dataclass
class Monitored:
    urls: dict[str, str]  # base URL by service name (collector, trainer, forecaster, api)
    key: str  # an admin API key for the gateway
    webhook_calls: list[dict[str, object]] = field(default_factory=list)


def receiver(calls: list[dict[str, object]]) -> FastAPI:
    """A webhook receiver outside the product: stores what it is sent."""
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        calls.append(await request.json())
        return {"status": "ok"}

    return app


@contextlib.asynccontextmanager
async def monitored_stack(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Monitored]:
    calls: list[dict[str, object]] = []
    async with contextlib.AsyncExitStack() as exits:
        hook = await exits.enter_async_context(served(receiver(calls)))
        ports = {name: free_port() for name in FACTORIES}
        settings = settings.model_copy(
            update={f"{name}_url": f"http://127.0.0.1:{port}" for name, port in ports.items()}
            | {
                "internal_token": TOKEN,
                "auth": "on",
                "webhook_url": hook + "/hook",
                "webhook_retries": 0,
            }
        )
        async with engine.begin() as conn:
            key, _ = await create_key(conn, role="admin", name="observability test")
        urls: dict[str, str] = {}
        for name, factory in FACTORIES.items():
            urls[name] = await exits.enter_async_context(
                served(factory(settings, engine=engine), ports[name])
            )
        urls["api"] = await exits.enter_async_context(served(create_gateway(settings)))
        yield Monitored(urls, key, calls)


def families(text: str) -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Family name -> the label sets of its samples (the parser also checks the format)."""
    out: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for family in text_string_to_metric_families(text):
        labels = out.setdefault(family.name, set())
        for sample in family.samples:
            labels.add(frozenset(sample.labels.items()))
    return out


def sample_value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


async def scrape(client: httpx.AsyncClient, url: str) -> str:
    """GET /metrics with no token and no key: it must answer."""
    response = await client.get(url + "/metrics")
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("text/plain")
    return response.text
