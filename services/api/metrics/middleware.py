"""The gateway's own request metrics (Prometheus): the registry and the ASGI middleware that counts.

Usage: `metrics = RequestMetrics()`;
`app.add_middleware(MetricsMiddleware, metrics=metrics, exclude=..., admin=ADMIN_PATHS)`.

Every series carries `traffic`: `serving` for the routes clients use, `admin` for the service's
own long work (training, synthetic data, export, forecast refresh), its health and docs. The
collector reads only `traffic="serving"` (ML_SCRAPE_LABELS), so a 40-second training call is
not the host's p95.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


Traffic = Literal["serving", "admin"]


class RequestMetrics:
    """One registry per app, so several apps can live in one process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.in_progress = Gauge(
            "autofix_http_requests_in_progress",
            "Requests being served.",
            ["traffic"],
            registry=self.registry,
        )
        self.requests = Counter(
            "autofix_http_requests",
            "Requests served.",
            ["method", "route", "status", "traffic"],
            registry=self.registry,
        )
        self.errors = Counter(
            "autofix_http_request_errors",
            "Requests answered with a 5xx status.",
            ["route", "traffic"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "autofix_http_request_duration_seconds",
            "Time to answer a request.",
            ["route", "traffic"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI middleware (BaseHTTPMiddleware would cost a task per request)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: RequestMetrics,
        exclude: frozenset[str],
        admin: frozenset[str] = frozenset(),
        admin_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.exclude = exclude
        self.admin = admin  # paths counted as traffic="admin"
        self.admin_prefixes = admin_prefixes  # and paths under these (the dashboard's files)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exclude:
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()
        path: str = scope["path"]
        admin = path in self.admin or path.startswith(self.admin_prefixes)
        traffic: Traffic = "admin" if admin else "serving"
        in_progress = self.metrics.in_progress.labels(traffic)

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_progress.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            in_progress.dec()
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status), traffic).inc()
            if status >= 500:
                self.metrics.errors.labels(path, traffic).inc()
            self.metrics.latency.labels(path, traffic).observe(time.perf_counter() - started)
