"""Routes of stored samples: POST /metrics/ingest, GET /metrics/stats, GET /metrics/export,
GET /metrics/series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from services.collector.deps import SettingsDep, StoredDataDep
from services.collector.samples import repository, service
from services.collector.samples.series import read_hosts, read_series
from services.collector.samples.window import sample_filter, series_window
from shared.catalogue import METRIC_NAMES
from shared.clock import utcnow
from shared.schemas.samples import (
    ExportQuery,
    HostsResponse,
    IngestRequest,
    IngestResponse,
    SampleQuery,
    SeriesQuery,
    SeriesResponse,
    StatsResponse,
)
from shared.web import ConnDep, EngineDep

router = APIRouter()


@router.post(
    "/metrics/ingest",
    response_model=IngestResponse,
    status_code=201,
    summary="Store a batch of samples pushed by another host",
)
async def ingest(
    body: IngestRequest, conn: ConnDep, settings: SettingsDep, stored: StoredDataDep
) -> IngestResponse:
    accepted = await service.ingest(
        conn,
        body.samples,
        default_host=settings.hostname,
        retention_days=settings.retention_days,
    )
    stored.invalidate()
    return IngestResponse(accepted=accepted)


@router.get("/metrics/stats", response_model=StatsResponse, summary="Statistics of stored samples")
async def stats(engine: EngineDep, query: Annotated[SampleQuery, Query()]) -> StatsResponse:
    flt = sample_filter(host=query.host, start_date=query.start_date, end_date=query.end_date)
    return await repository.statistics(engine, flt)


@router.get("/metrics/export", summary="Export samples as JSON or CSV, streamed")
async def export(engine: EngineDep, query: Annotated[ExportQuery, Query()]) -> StreamingResponse:
    flt = sample_filter(host=query.host, start_date=query.start_date, end_date=query.end_date)
    stream = repository.export_stream(engine, query.format, flt)
    if query.format == "csv":
        return StreamingResponse(
            stream,
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="metrics.csv"'},
        )
    return StreamingResponse(stream, media_type="application/json")


@router.get(
    "/metrics/series",
    response_model=SeriesResponse,
    summary="A host's metrics over a window, bucketed in the database (avg, min, max)",
)
async def series(engine: EngineDep, query: Annotated[SeriesQuery, Query()]) -> SeriesResponse:
    window = series_window(
        host=query.host,
        metrics=query.metrics,
        start=query.start,
        end=query.end,
        points=query.points,
        known=METRIC_NAMES,
        now=utcnow(),
    )
    return await read_series(engine, window)


@router.get(
    "/metrics/hosts",
    response_model=HostsResponse,
    summary="Every host with stored samples and the time of its newest",
)
async def hosts(engine: EngineDep) -> HostsResponse:
    return await read_hosts(engine)
