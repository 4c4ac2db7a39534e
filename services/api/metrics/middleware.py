"""The gateway's request metrics: the shared registry and middleware (shared/observability.py).

Every series carries `traffic`: `serving` for the routes clients use, `admin` for the service's
own long work (training, synthetic data, export, forecast refresh), its health and docs. The
collector reads only `traffic="serving"` (ML_SCRAPE_LABELS), so a 40-second training call is
not the host's p95.
"""

from __future__ import annotations

from shared.observability import LATENCY_BUCKETS, MetricsMiddleware, RequestMetrics, Traffic

__all__ = ["LATENCY_BUCKETS", "MetricsMiddleware", "RequestMetrics", "Traffic"]
