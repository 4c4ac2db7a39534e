"""Every service's /health asked at once and summed up into one HealthResponse, cached.

Use: `HealthService(clients, ttl=settings.health_cache_seconds)` in the lifespan, `await .get()`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from services.api.proxy.client import ServiceClients
from services.api.proxy.table import SERVICES, Service
from shared.errors import AppError
from shared.schemas.health import GatewayReadiness, HealthResponse, Readiness, ServiceState
from shared.web import TTLCache

# A health check answers in milliseconds; waiting longer only delays the aggregate.
PROBE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Probe:
    """One service's state and its own /health answer (empty when it did not answer)."""

    state: ServiceState
    answer: dict[str, Any] = field(default_factory=dict)


class HealthService:
    """The aggregate of the services' health, recomputed at most every `ttl` seconds."""

    def __init__(self, clients: ServiceClients, *, ttl: float) -> None:
        self.clients = clients
        self._cache = TTLCache(ttl, self.compute)

    async def get(self) -> HealthResponse:
        return await self._cache.get()

    async def ready(self) -> GatewayReadiness:
        """Every service's /ready at once (not cached: a probe wants the state now)."""
        answers = await asyncio.gather(*(self.ready_of(name) for name in SERVICES))
        return gateway_readiness(dict(zip(SERVICES, answers, strict=True)))

    async def ready_of(self, name: Service) -> Readiness | str:
        """A service's readiness answer, or why it gave none."""
        timeout = min(self.clients.settings.http_timeout, PROBE_TIMEOUT + 0.5)
        try:
            response = await self.clients.request(name, "GET", "/ready", timeout=timeout)
            return Readiness.model_validate_json(response.content)
        except AppError as exc:
            return str(exc.detail)
        except ValueError:
            return f"invalid readiness answer ({response.status_code})"

    async def compute(self) -> HealthResponse:
        probes = await asyncio.gather(*(self.probe(name) for name in SERVICES))
        return compose(dict(zip(SERVICES, probes, strict=True)))

    async def probe(self, name: Service) -> Probe:
        """The service's /health; a failure or a non-200 answer is that service being down."""
        url = self.clients.settings.service_url(name)
        timeout = min(self.clients.settings.http_timeout, PROBE_TIMEOUT)
        started = time.perf_counter()
        try:
            response = await self.clients.request(name, "GET", "/health", timeout=timeout)
            answer: dict[str, Any] = orjson.loads(response.content)
        except AppError as exc:
            return Probe(ServiceState(status="down", url=url, detail=str(exc.detail)))
        except ValueError:
            return Probe(ServiceState(status="down", url=url, detail="invalid health answer"))
        latency = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            failed = f"health answered {response.status_code}"
            return Probe(ServiceState(status="down", url=url, latency_ms=latency, detail=failed))
        status: Literal["up", "degraded"] = "up"
        detail = None
        if not answer.get("database", True) or answer.get("status") == "degraded":
            status = "degraded"
            detail = "; ".join(answer.get("problems") or ["database unreachable"])
        return Probe(
            ServiceState(status=status, url=url, latency_ms=latency, detail=detail), answer
        )


def compose(probes: dict[Service, Probe]) -> HealthResponse:
    """healthy when every service is up, unhealthy when the collector is down, else degraded."""
    collector, trainer = probes["collector"].answer, probes["trainer"].answer
    down = [name for name, probe in probes.items() if probe.state.status != "up"]
    if probes["collector"].state.status == "down":
        status: Literal["healthy", "degraded", "unhealthy"] = "unhealthy"
    else:
        status = "degraded" if down else "healthy"
    message = "; ".join(
        f"{name} service {probes[name].state.status}"
        + (f": {probes[name].state.detail}" if probes[name].state.detail else "")
        for name in down
    )
    return HealthResponse(
        status=status,
        metrics_collected=int(collector.get("metrics_collected", 0)),
        data_collection_active=bool(collector.get("data_collection_active", False)),
        oldest_data_age_hours=collector.get("oldest_data_age_hours"),
        active_models=int(trainer.get("active_models", 0)),
        message=message or "ML module operational",
        services={name: probe.state for name, probe in probes.items()},
        scoring=trainer.get("scoring"),
        loops={name: p.answer["loops"] for name, p in probes.items() if p.answer.get("loops")},
    )


def gateway_readiness(answers: dict[Service, Readiness | str]) -> GatewayReadiness:
    """not_ready when the collector (and with it the database) is not; degraded when another
    service is not: a gateway pod taken out of rotation for the trainer helps nobody, since
    every gateway replica reaches the same trainer."""
    problems: list[str] = []
    for name, answer in answers.items():
        if isinstance(answer, str):
            problems.append(f"{name}: {answer}")
        elif answer.status != "ready":
            problems.append(f"{name} {answer.status}: " + "; ".join(answer.problems))
    collector = answers["collector"]
    status: Literal["ready", "degraded", "not_ready"] = "ready"
    if isinstance(collector, str) or collector.status == "not_ready":
        status = "not_ready"
    elif problems:
        status = "degraded"
    return GatewayReadiness(
        status=status,
        services={name: None if isinstance(a, str) else a for name, a in answers.items()},
        problems=problems,
    )
