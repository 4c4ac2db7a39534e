"""GET /metrics: the gateway's figures in Prometheus text format (what the collector scrapes)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from shared.observability import CONTENT_TYPE, ServiceMetrics


async def metrics_endpoint(request: Request) -> Response:
    metrics: ServiceMetrics = request.app.state.observability
    return Response(await metrics.render(), media_type=CONTENT_TYPE)
