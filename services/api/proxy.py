"""Calls from the gateway to the services: pooled clients, timeouts, 503 on failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from shared.errors import ServiceUnavailable
from shared.settings import Settings

log = logging.getLogger("autofix_ml.gateway")

SERVICES = ("collector", "trainer", "forecaster")
# Headers a proxy must not copy (hop-by-hop) or that the server sets again.
_DROP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


def make_client(settings: Settings, service: str) -> httpx.AsyncClient:
    """One pooled client per service: httpx's API, over aiohttp's transport by default.

    httpx's own pool collapses under many concurrent requests (encode/httpx#3215);
    AUTOFIX_GATEWAY_TRANSPORT=httpx selects it anyway, for comparison.
    """
    timeout = httpx.Timeout(settings.http_timeout, connect=settings.http_connect_timeout)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=128, keepalive_expiry=30)
    transport: httpx.AsyncBaseTransport
    if settings.gateway_transport == "httpx":
        transport = httpx.AsyncHTTPTransport(limits=limits)
    else:
        transport = AiohttpTransport(limits=limits, trust_env=False)
    return httpx.AsyncClient(
        base_url=settings.service_url(service),
        timeout=timeout,
        transport=transport,
        trust_env=False,
    )


def failure_reason(exc: BaseException) -> str:
    """Why a call failed, from the transport's own exception (httpx-aiohttp maps a refused
    connection to ConnectTimeout, so look at the cause first)."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return "unreachable"
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(cause, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "unreachable"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timed out"
    return "unreachable"


class ServiceClients:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients = {name: make_client(settings, name) for name in SERVICES}

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients.values()))

    def _unavailable(self, service: str, exc: Exception) -> ServiceUnavailable:
        reason = failure_reason(exc)
        log.warning("%s service %s: %s", service, reason, type(exc).__name__)
        return ServiceUnavailable(
            f"{service} service unavailable ({reason} at {self.settings.service_url(service)})"
        )

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        params: str | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """A whole response; any connection failure or timeout is a 503 naming the service."""
        client = self.clients[service]
        limit = timeout or self.settings.http_timeout
        try:
            async with asyncio.timeout(limit + 0.5):
                return await client.request(
                    method,
                    path,
                    params=params or None,
                    content=content,
                    headers=headers,
                    timeout=httpx.Timeout(limit, connect=self.settings.http_connect_timeout),
                )
        except (httpx.TransportError, TimeoutError) as exc:
            raise self._unavailable(service, exc) from exc

    async def forward(
        self, service: str, path: str, request: Request, *, timeout: float | None = None
    ) -> Response:
        """Forward the request (query and body) and pass the answer, 4xx included, through."""
        body = await request.body()
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        response = await self.request(
            service,
            request.method,
            path,
            params=request.url.query,
            content=body or None,
            headers=headers,
            timeout=timeout,
        )
        return Response(
            content=response.content,
            status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() not in _DROP},
        )

    async def stream(self, service: str, path: str, request: Request) -> Response:
        """Forward a GET and stream the answer back chunk by chunk, never buffering it."""
        client = self.clients[service]
        outbound = client.build_request("GET", path, params=request.url.query or None)
        try:
            async with asyncio.timeout(self.settings.http_timeout + 0.5):
                response = await client.send(outbound, stream=True)
        except (httpx.TransportError, TimeoutError) as exc:
            raise self._unavailable(service, exc) from exc
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _DROP}
        if response.status_code >= 400:
            content = await response.aread()
            await response.aclose()
            return Response(content=content, status_code=response.status_code, headers=headers)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in response.aiter_raw():
                yield chunk

        return StreamingResponse(
            chunks(),
            status_code=response.status_code,
            headers=headers,
            background=BackgroundTask(response.aclose),
        )
