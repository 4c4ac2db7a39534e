"""HTTP clients made one way: pooled, no proxies from the environment, timeouts explicit.

Usage: `client = make_client(base_url=url, timeout=10.0, connect_timeout=1.0)` in a lifespan,
`await client.aclose()` on the way out. `transport="aiohttp"` puts httpx's API over aiohttp's
connection pool, which holds up under many concurrent requests where httpx's own does not
(encode/httpx#3215; measured in bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
from typing import Literal

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

Transport = Literal["httpx", "aiohttp"]
KEEPALIVE_SECONDS = 30


def make_client(
    *,
    timeout: float,
    base_url: str = "",
    connect_timeout: float | None = None,
    transport: Transport = "httpx",
    max_connections: int = 100,
    headers: dict[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> httpx.AsyncClient:
    """A pooled async client: `make_client(base_url="http://127.0.0.1:8001", timeout=5.0)`.
    With `transport="aiohttp"`, `session` (from `make_session`) is the pool underneath, for
    callers that also use it directly; the client's `aclose` closes it."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max(1, max_connections // 2),
        keepalive_expiry=KEEPALIVE_SECONDS,
    )
    pool: httpx.AsyncBaseTransport
    if transport == "aiohttp":
        pool = AiohttpTransport(limits=limits, trust_env=False, client=session)
    else:
        pool = httpx.AsyncHTTPTransport(limits=limits)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=connect_timeout or timeout),
        transport=pool,
        trust_env=False,
        headers=headers,
    )


def make_session(max_connections: int = 100) -> aiohttp.ClientSession:
    """An aiohttp pool as `AiohttpTransport` makes its own (in a running event loop)."""
    connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=KEEPALIVE_SECONDS)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


def failure_reason(exc: BaseException) -> str:
    """Why a call failed, in a word: unreachable, disconnected or timed out.

    httpx-aiohttp reports a refused connection as a ConnectTimeout, so the cause comes first
    (an aiohttp error raised directly is its own cause).
    """
    cause = exc.__cause__ if exc.__cause__ is not None else exc
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
