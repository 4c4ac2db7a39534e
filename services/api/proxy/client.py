"""Calls from the gateway to the services: one pooled client each, 503 naming the service.

Use: `clients = ServiceClients(settings)` in the app factory; `clients.open()` at the start of the
lifespan and `await clients.aclose()` at its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from services.api.proxy.table import SERVICES, Service, TimeoutClass, timeouts
from shared.errors import ServiceUnavailable
from shared.http import failure_reason, make_client, make_session
from shared.settings import Settings
from shared.web import INTERNAL_TOKEN_HEADER

log = logging.getLogger("autofix_ml.gateway")

# Headers a proxy must not copy (hop-by-hop) or that the server sets again.
_DROP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
)
# Connections per service: many concurrent requests without a queue in the pool.
MAX_CONNECTIONS = 256
# Service URLs kept parsed (path and query as sent); past this many the cache starts again.
URL_CACHE = 4096


def _query(request: Request) -> str:
    """The query string exactly as the client sent it (cheaper than building request.url)."""
    raw: bytes = request.scope["query_string"]
    return raw.decode("latin-1")


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() not in _DROP}


class ServiceClients:
    """The services' clients and the seconds of each timeout class."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeouts: dict[TimeoutClass, float] = timeouts(settings.http_timeout)
        self.clients: dict[str, httpx.AsyncClient] = {}
        # The aiohttp pools under the clients (transport "aiohttp"): ``forward`` uses them
        # directly, without httpx's request and response objects, header merging and cookie
        # jar (a fifth of the gateway's CPU per forwarded request, bench/RESULTS.md issue 9).
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self._sent: dict[str, str] = {}
        self._urls: dict[tuple[str, str], httpx.URL] = {}

    def open(self) -> None:
        """Make the pooled clients (in the lifespan, so each app run has its own)."""
        token = self.settings.internal_token
        self._sent = {INTERNAL_TOKEN_HEADER: token} if token else {}
        aiohttp_pools = self.settings.gateway_transport == "aiohttp"
        self.sessions = {name: make_session(MAX_CONNECTIONS) for name in SERVICES if aiohttp_pools}
        self.clients = {
            name: make_client(
                base_url=self.settings.service_url(name),
                timeout=self.settings.http_timeout,
                connect_timeout=self.settings.http_connect_timeout,
                transport=self.settings.gateway_transport,
                max_connections=MAX_CONNECTIONS,
                headers=self._sent or None,
                session=self.sessions.get(name),
            )
            for name in SERVICES
        }

    def url(self, service: Service, target: str) -> httpx.URL:
        """The service's absolute URL of a path (and query), parsed once: httpx parses a
        relative one and joins it to the base on every request (~110 us of the gateway's CPU
        per request on the 2-core machine; an absolute ``httpx.URL`` is taken as it is)."""
        key = (service, target)
        found = self._urls.get(key)
        if found is None:
            if len(self._urls) >= URL_CACHE:
                self._urls.clear()
            # httpx's own join (pinned version), so the URL is the one it would have built
            found = self._urls[key] = self.clients[service]._merge_url(target)
        return found

    async def aclose(self) -> None:
        clients, self.clients, self.sessions = self.clients, {}, {}
        await asyncio.gather(*(c.aclose() for c in clients.values()))

    def _unavailable(self, service: str, exc: Exception) -> ServiceUnavailable:
        reason = failure_reason(exc)
        log.warning("%s service %s: %s", service, reason, type(exc).__name__)
        return ServiceUnavailable(
            f"{service} service unavailable ({reason} at {self.settings.service_url(service)})"
        )

    async def request(
        self,
        service: Service,
        method: str,
        path: str,
        *,
        query: str = "",
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """A whole response; any connection failure or timeout is a 503 naming the service.

        `query` is a raw query string, sent as it is (not parsed and encoded again).
        """
        limit = timeout or self.settings.http_timeout
        try:
            async with asyncio.timeout(limit + 0.5):
                return await self.clients[service].request(
                    method,
                    self.url(service, f"{path}?{query}" if query else path),
                    content=content,
                    headers=headers,
                    timeout=httpx.Timeout(limit, connect=self.settings.http_connect_timeout),
                )
        except (httpx.TransportError, TimeoutError) as exc:
            raise self._unavailable(service, exc) from exc

    async def forward(
        self, service: Service, path: str, request: Request, *, timeout: float | None = None
    ) -> Response:
        """Send the request's own query string and body bytes on; pass the answer back as is."""
        # FastAPI has read (and validated) the body already: this returns the same bytes.
        body = await request.body()
        session = self.sessions.get(service)
        if session is not None:
            return await self._forward_on(session, service, path, request, body, timeout)
        response = await self.request(
            service,
            request.method,
            path,
            query=_query(request),
            content=body or None,
            headers={"content-type": request.headers.get("content-type", "application/json")},
            timeout=timeout,
        )
        return Response(
            content=response.content,
            status_code=response.status_code,
            headers=_headers(response),
        )

    async def _forward_on(
        self,
        session: aiohttp.ClientSession,
        service: Service,
        path: str,
        request: Request,
        body: bytes,
        timeout: float | None,
    ) -> Response:
        """``forward`` on the service's aiohttp pool: the same request, timeouts and errors."""
        limit = timeout or self.settings.http_timeout
        query = _query(request)
        url = str(self.url(service, f"{path}?{query}" if query else path))
        headers = {
            "content-type": request.headers.get("content-type", "application/json"),
            **self._sent,
        }
        try:
            async with (
                asyncio.timeout(limit + 0.5),
                session.request(
                    request.method,
                    url,
                    data=body or None,
                    headers=headers,
                    allow_redirects=False,
                    auto_decompress=False,
                    timeout=aiohttp.ClientTimeout(
                        sock_connect=self.settings.http_connect_timeout,
                        sock_read=limit,
                        connect=limit,
                    ),
                ) as response,
            ):
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable(service, exc) from exc
        return Response(
            content=content,
            status_code=response.status,
            headers={k: v for k, v in response.headers.items() if k.lower() not in _DROP},
        )

    async def stream(self, service: Service, path: str, request: Request) -> Response:
        """Forward a GET and stream the answer back chunk by chunk, never buffering it."""
        client = self.clients[service]
        query = _query(request)
        outbound = client.build_request(
            "GET", self.url(service, f"{path}?{query}" if query else path)
        )
        try:
            async with asyncio.timeout(self.settings.http_timeout + 0.5):
                response = await client.send(outbound, stream=True)
        except (httpx.TransportError, TimeoutError) as exc:
            raise self._unavailable(service, exc) from exc
        headers = _headers(response)
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
