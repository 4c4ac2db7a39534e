"""The gateway's routes to the collector's stored samples (split from proxy/table.py for size).

Use: `ROUTES = (..., *SAMPLE_ROUTES, ...)` in proxy/table.py.
"""

from __future__ import annotations

from services.api.proxy.route import STORAGE_FULL, ProxyRoute, errors
from shared.schemas.samples import (
    ExportQuery,
    ExportResponse,
    HostsResponse,
    IngestRequest,
    IngestResponse,
    SampleQuery,
    SeriesQuery,
    SeriesResponse,
    StatsResponse,
)

SAMPLES = ("samples",)

SAMPLE_ROUTES: tuple[ProxyRoute, ...] = (
    ProxyRoute(
        name="metrics_ingest",
        tags=SAMPLES,
        method="POST",
        path="/metrics/ingest",
        service="collector",
        role="operator",
        rate="ingest",
        body_limit="ingest",
        body=IngestRequest,
        response=IngestResponse,
        status_code=201,
        summary="Push a batch of samples from another host",
        errors=errors(storage_full=STORAGE_FULL),
    ),
    ProxyRoute(
        name="metrics_stats",
        tags=SAMPLES,
        method="GET",
        path="/metrics/stats",
        service="collector",
        role="reader",
        query=SampleQuery,
        response=StatsResponse,
        errors=errors(bad_request="start_date after end_date"),
        summary="Statistical summary of collected metrics",
    ),
    ProxyRoute(
        name="metrics_series",
        tags=SAMPLES,
        method="GET",
        path="/metrics/series",
        service="collector",
        role="reader",
        query=SeriesQuery,
        response=SeriesResponse,
        errors=errors(bad_request="start is not before end"),
        summary="A host's metrics over a window: avg, min and max per bucket, for charts",
    ),
    ProxyRoute(
        name="metrics_hosts",
        tags=SAMPLES,
        method="GET",
        path="/metrics/hosts",
        service="collector",
        role="reader",
        response=HostsResponse,
        summary="Every host with stored samples and the time of its newest",
    ),
    ProxyRoute(
        name="metrics_export",
        tags=SAMPLES,
        method="GET",
        path="/metrics/export",
        service="collector",
        role="reader",
        query=ExportQuery,
        response=ExportResponse,
        media_types=("text/csv",),
        errors=errors(bad_request="start_date after end_date"),
        streamed=True,
        summary="Export training data as JSON or CSV, streamed",
    ),
    ProxyRoute(
        name="metrics_collect",
        tags=SAMPLES,
        method="POST",
        path="/metrics/collect",
        service="collector",
        role="operator",
        response=None,
        summary="Take one sample of the collector's host now",
    ),
)
