"""GET /metrics: the gateway's request metrics in Prometheus text format (what the collector scrapes)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from services.api.metrics.middleware import RequestMetrics


async def metrics_endpoint(request: Request) -> Response:
    metrics: RequestMetrics = request.app.state.request_metrics
    return metrics.render()
