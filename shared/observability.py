"""Every service's own Prometheus figures: GET /metrics and the request middleware.

Usage: `new_app()` gives each app a `ServiceMetrics` (`app.state.observability`) with the
request middleware and a `/metrics` route; a lifespan hands it what to read at scrape time
(`metrics.loops = [...]`, `metrics.add_source(fn)`, `metrics.engine = db`). Domain events
anywhere in a process are in shared/events.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.events import EVENTS
from shared.loops import BackgroundLoop, prometheus_text

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
DELIVERY_OUTCOMES = ("sent", "failed", "dropped")

log = logging.getLogger("autofix_ml.observability")

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

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def render(self) -> Response:
        return Response(self.text(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI middleware (BaseHTTPMiddleware would cost a task per request).

    Every series carries `traffic`: `serving` for the routes clients use, `admin` for the
    paths in `admin` (long work, probes); the collector reads only `traffic="serving"`.
    """

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
        self.admin = admin
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


@dataclass(frozen=True, slots=True)
class Sample:
    """One series read at scrape time: ``Sample("autofix_queue_depth", 3, {"queue": "webhook"})``."""

    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    kind: Literal["gauge", "counter"] = "gauge"
    help: str = ""


Source = Callable[[], Awaitable[Iterable[Sample]]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def samples_text(samples: Iterable[Sample], *, service: str) -> bytes:
    """Samples grouped by family in Prometheus text format, each labelled with the service."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample.name, []).append(sample)
    lines: list[str] = []
    for name, group in families.items():
        kind = group[0].kind
        lines += [f"# HELP {name} {group[0].help or name}", f"# TYPE {name} {kind}"]
        for s in group:
            labels = {"service": service, **s.labels}
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {float(s.value)!r}")
    return ("\n".join(lines) + "\n").encode() if lines else b""


def pool_samples(engine: Any) -> list[Sample]:
    """The engine's connection pool: size, connections in use, overflow (what the pool reports)."""
    pool = engine.sync_engine.pool
    out: list[Sample] = []
    for attr, name, text in (
        ("size", "autofix_db_pool_size", "Connections the pool keeps."),
        ("checkedout", "autofix_db_pool_checked_out", "Connections in use."),
        ("checkedin", "autofix_db_pool_idle", "Idle connections in the pool."),
        ("overflow", "autofix_db_pool_overflow", "Connections beyond the pool size."),
    ):
        reader = getattr(pool, attr, None)
        if callable(reader):
            try:
                # QueuePool's overflow counts up from -size: below zero means none.
                out.append(Sample(name, max(0.0, float(reader())), help=text))
            except (TypeError, ValueError):  # a pool kind without this figure
                continue
    return out


WEBHOOK_HELP = "Webhook deliveries of incidents: sent, failed after retries, dropped (queue full)."


def notifier_samples(
    name: str,
    *,
    sent: int,
    failed: int,
    dropped: int,
    queued: int,
    family: str = "autofix_webhook_deliveries_total",
    help: str = WEBHOOK_HELP,
) -> list[Sample]:
    """A notifier's deliveries and queue (see shared.incidents.notifier and .alertmanager)."""
    counts = {"sent": sent, "failed": failed, "dropped": dropped}
    out = [
        Sample(family, float(counts[outcome]), {"outcome": outcome}, kind="counter", help=help)
        for outcome in DELIVERY_OUTCOMES
    ]
    out.append(queue_sample(name, queued))
    return out


def queue_sample(queue: str, depth: int) -> Sample:
    return Sample(
        "autofix_queue_depth", float(depth), {"queue": queue}, help="Items waiting in a queue."
    )


class ServiceMetrics:
    """A service's /metrics: its requests, this process's events, and figures read at scrape time."""

    def __init__(self, service: str, *, stall_intervals: float, stall_min_seconds: float) -> None:
        self.service = service
        self.requests = RequestMetrics()
        self.stall_intervals = stall_intervals
        self.stall_min_seconds = stall_min_seconds
        self.loops: Sequence[BackgroundLoop] = ()
        self.engine: Any = None
        self.sources: list[Source] = []
        # Extra (name, help, value) gauges in the loops' text (the trainer's scoring figures).
        self.gauges: Callable[[], Awaitable[list[tuple[str, str, float | None]]]] | None = None
        self.started = time.time()

    def add_source(self, source: Source) -> None:
        self.sources.append(source)

    async def render(self) -> bytes:
        samples: list[Sample] = [
            Sample("autofix_up", 1.0, help="1 while the service answers /metrics."),
            Sample(
                "autofix_process_start_time_seconds",
                self.started,
                help="Unix time the service's metrics began.",
            ),
        ]
        if self.engine is not None:
            samples += pool_samples(self.engine)
        for source in self.sources:
            try:
                samples += list(await source())
            except Exception:  # noqa: BLE001 - one failing source must not hide the others
                log.exception("metrics source failed")
        gauges = await self.gauges() if self.gauges is not None else []
        loops = prometheus_text(
            self.loops,
            service=self.service,
            stall_intervals=self.stall_intervals,
            stall_min_seconds=self.stall_min_seconds,
            gauges=gauges,
        )
        return b"".join(
            [
                # Every series names its service, as the loops' and the scrape-time ones do.
                generate_latest(Labelled(self.requests.registry, service=self.service)),
                generate_latest(Labelled(EVENTS.registry, service=self.service)),
                loops,
                samples_text(samples, service=self.service),
            ]
        )


CONTENT_TYPE = CONTENT_TYPE_LATEST


class Labelled:
    """A registry's metrics with extra labels on every sample, for ``generate_latest``."""

    def __init__(self, registry: CollectorRegistry, **labels: str) -> None:
        self.registry = registry
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            out = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            out.samples = [s._replace(labels={**s.labels, **self.labels}) for s in metric.samples]
            yield out
