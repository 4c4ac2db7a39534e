"""The checks before routing, as one pure-ASGI middleware: path, key and role, rate, body.

Use: `app.add_middleware(AccessMiddleware, policies=Policies.of(ROUTES, settings), keys=store,
settings=settings)`. It answers before the body is read, so a request without a key, over its
rate or too large costs no parsing. In order, for a route of the table:

1. a `.` or `..` path segment (also sent as `%2e%2e`) or a NUL in the path: 404;
2. keys required and no key, an unknown or revoked one: 401 with `WWW-Authenticate`; a key of
   a lower role than the route's: 403;
3. predict and ingest over the key's rate (token bucket): 429 with `Retry-After`;
4. a POST whose body is larger than its route's limit: 413 (Content-Length, or counted while
   a chunked body arrives); a body that is not JSON: 415; a POST without a body, without
   `Content-Type: application/json` and with an `Origin` of another site: 403 (CSRF).

Paths outside the table (health, /metrics, the docs) pass untouched.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.access.ratelimit import RateLimiter
from services.api.access.service import KeyStore
from services.api.proxy.table import API_PREFIX, ProxyRoute
from shared.access import allows
from shared.errors import RETRY_AFTER_SECONDS
from shared.settings import Settings

REALM = 'Bearer realm="autofix-ml"'
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True, slots=True)
class Policy:
    """What a route asks of a request."""

    role: str
    max_body: int
    rate: str | None
    post: bool


class Policies:
    """The table's routes by method and path: a dict for fixed paths, patterns for the rest."""

    def __init__(
        self,
        fixed: dict[tuple[str, str], Policy],
        patterns: list[tuple[str, re.Pattern[str], Policy]],
    ) -> None:
        self.fixed = fixed
        self.patterns = patterns

    @classmethod
    def of(cls, routes: Iterable[ProxyRoute], settings: Settings) -> Policies:
        limits = {"small": settings.max_body_bytes, "ingest": settings.ingest_max_body_bytes}
        fixed: dict[tuple[str, str], Policy] = {}
        patterns: list[tuple[str, re.Pattern[str], Policy]] = []
        for route in routes:
            policy = Policy(
                role=route.role,
                max_body=limits[route.body_limit],
                rate=route.rate,
                post=route.method == "POST",
            )
            path = API_PREFIX + route.path
            if "{" in path:
                regex = "^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + "$"
                patterns.append((route.method, re.compile(regex), policy))
            else:
                fixed[(route.method, path)] = policy
        return cls(fixed, patterns)

    def match(self, method: str, path: str) -> Policy | None:
        if method == "HEAD":  # answered like a GET wherever the router allows it
            method = "GET"
        found = self.fixed.get((method, path))
        if found is not None:
            return found
        for route_method, pattern, policy in self.patterns:
            if route_method == method and pattern.match(path):
                return policy
        return None


async def reject(
    send: Send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A `{"detail": ...}` answer, sent without touching the request body."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _bad_path(path: str) -> bool:
    if "\x00" in path:
        return True
    return any(segment in (".", "..") for segment in path.split("/"))


def _media_type(value: bytes) -> str:
    return value.split(b";", 1)[0].strip().lower().decode("latin-1")


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class AccessMiddleware:
    """Pure ASGI (no task per request); see the module's docstring for what it checks."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        policies: Policies,
        keys: KeyStore,
        settings: Settings,
    ) -> None:
        self.app = app
        self.policies = policies
        self.keys = keys
        self.cors_origins = frozenset(settings.cors_origins)
        self.limiters = {
            "predict": RateLimiter(rate=settings.rate_predict, burst=settings.rate_predict_burst),
            "ingest": RateLimiter(rate=settings.rate_ingest, burst=settings.rate_ingest_burst),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if _bad_path(path):
            await reject(send, 404, "Not Found")
            return
        policy = self.policies.match(scope["method"], path)
        if policy is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # the last of a repeated header wins
        identity = await self._authorize(policy, headers, scope, send)
        if identity is None:
            return
        if policy.rate is not None:
            limiter = self.limiters[policy.rate]
            if limiter.enabled and (wait := limiter.wait(identity)) > 0:
                retry = str(max(1, math.ceil(wait))).encode()
                await reject(
                    send,
                    429,
                    f"rate limit of {limiter.rate:g}/s (burst {limiter.burst:g}) on {policy.rate} "
                    "reached for this caller; retry after the Retry-After seconds",
                    [(b"retry-after", retry)],
                )
                return
        if policy.post:
            checked = await self._check_body(policy, headers, receive, send)
            if checked is None:
                return
            receive = checked
        await self.app(scope, receive, send)

    async def _authorize(
        self, policy: Policy, headers: dict[bytes, bytes], scope: Scope, send: Send
    ) -> str | None:
        """The caller's identity for rate limits, or None once a 401/403/503 is sent."""
        if not self.keys.required:
            client = scope.get("client")
            return f"address:{client[0]}" if client else "address:unknown"
        key = _presented_key(headers)
        if key is None:
            await reject(
                send,
                401,
                "an API key is required: Authorization: Bearer <key> or X-API-Key: <key>",
                [(b"www-authenticate", REALM.encode())],
            )
            return None
        if not self.keys.loaded:
            await reject(
                send,
                503,
                "API keys unavailable: the database cannot be read",
                [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
            )
            return None
        found = await self.keys.find(key)
        if found is None:
            await reject(
                send,
                401,
                "unknown or revoked API key",
                [(b"www-authenticate", (REALM + ', error="invalid_token"').encode())],
            )
            return None
        if not allows(found.role, needed=policy.role):
            await reject(
                send,
                403,
                f"this route needs the {policy.role} role; the key {found.prefix}... is "
                f"{found.role}",
            )
            return None
        return f"key:{found.id}"

    async def _check_body(
        self,
        policy: Policy,
        headers: dict[bytes, bytes],
        receive: Receive,
        send: Send,
    ) -> Receive | None:
        """The receive to read the body with, or None once a 413/415/403 is sent."""
        length_header = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        try:
            length = int(length_header) if length_header is not None else 0
        except ValueError:
            await reject(send, 400, "Content-Length is not a number")
            return None
        if length > policy.max_body:
            await reject(send, 413, _too_large(policy.max_body))
            return None
        media_type = _media_type(headers.get(b"content-type", b""))
        if length > 0 or chunked:
            if not _is_json(media_type):
                await reject(
                    send,
                    415,
                    "request bodies are JSON only: send Content-Type: application/json",
                )
                return None
        elif not _is_json(media_type) and self._foreign(headers):
            await reject(
                send,
                403,
                "a POST from another site's page must send Content-Type: application/json "
                "(cross-site form posts are refused)",
            )
            return None
        if not chunked:
            return receive
        return await self._buffered(policy.max_body, receive, send)

    async def _buffered(self, limit: int, receive: Receive, send: Send) -> Receive | None:
        """A chunked body read up to `limit` bytes (413 past it), then replayed to the app."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await reject(send, 413, _too_large(limit))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    def _foreign(self, headers: dict[bytes, bytes]) -> bool:
        """An Origin that is neither this gateway's host nor an allowed CORS origin."""
        origin = headers.get(b"origin")
        if origin is None:
            return False
        text = origin.decode("latin-1")
        if text in self.cors_origins:
            return False
        host = headers.get(b"host", b"").decode("latin-1")
        return text == "null" or urlsplit(text).netloc != host


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    if key is not None and key.strip():
        return key.decode("latin-1").strip()
    return None


def _too_large(limit: int) -> str:
    return f"request body larger than this route's limit of {limit} bytes"
