"""HTTP routes of the collector."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from services.collector import repository
from services.collector.repository import SampleFilter
from services.collector.runtime import CollectorRuntime
from shared.db import utc, utcnow
from shared.errors import BadRequest, Unprocessable
from shared.schemas.health import CollectorHealth
from shared.schemas.samples import (
    EndDateQuery,
    HostQuery,
    IngestRequest,
    IngestResponse,
    StartDateQuery,
    StatsResponse,
)
from shared.web import ConnDep, EngineDep, TTLCache

router = APIRouter()


def parse_when(value: str | None, *, field: str, end: bool) -> datetime | None:
    """An ISO date or datetime; a date alone means the start (or the end) of that day, UTC."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            return moment + timedelta(days=1, microseconds=-1) if end else moment
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
        raise Unprocessable(
            [
                {
                    "field": f"query.{field}",
                    "loc": ["query", field],
                    "msg": "must be an ISO 8601 date (2024-01-31) or datetime (2024-01-31T12:00:00Z)",
                    "type": "datetime_parsing",
                }
            ]
        ) from None


def sample_filter(host: str | None, start_date: str | None, end_date: str | None) -> SampleFilter:
    start = parse_when(start_date, field="start_date", end=False)
    end = parse_when(end_date, field="end_date", end=True)
    if start is not None and end is not None and start > end:
        raise BadRequest("start_date is after end_date")
    return SampleFilter(host=host, start=start, end=end)


def runtime(request: Request) -> CollectorRuntime:
    rt: CollectorRuntime = request.app.state.runtime
    return rt


@router.get("/health", response_model=CollectorHealth, summary="Collector health")
async def health(request: Request) -> CollectorHealth:
    rt = runtime(request)
    cache: TTLCache[tuple[bool, int, datetime | None, datetime | None]] = (
        request.app.state.summary_cache
    )
    database, count, oldest, newest = await cache.get()
    now = utcnow()
    return CollectorHealth(
        status="healthy" if database else "degraded",
        database=database,
        metrics_collected=count,
        data_collection_active=rt.active,
        oldest_data_age_hours=(now - oldest).total_seconds() / 3600 if oldest else None,
        newest_data_age_seconds=(now - newest).total_seconds() if newest else None,
        last_collection_at=rt.last_collection_at,
        collection_interval_seconds=rt.settings.collection_interval,
        buffered_samples=len(rt.buffer),
        dropped_samples=rt.buffer.dropped,
    )


@router.post(
    "/metrics/ingest",
    response_model=IngestResponse,
    status_code=201,
    summary="Store a batch of samples pushed by another host",
)
async def ingest(body: IngestRequest, conn: ConnDep, request: Request) -> IngestResponse:
    rt = runtime(request)
    now = utcnow().replace(microsecond=0)
    rows = []
    for sample in body.samples:
        row = sample.model_dump()
        row["timestamp"] = row["timestamp"] or now
        row["host"] = row["host"] or rt.settings.hostname
        rows.append(row)
    accepted = await repository.insert_samples(conn, rows)
    request.app.state.summary_cache.invalidate()
    return IngestResponse(accepted=accepted)


@router.post("/metrics/collect", summary="Take one sample of this host now and store it")
async def collect_now(request: Request) -> dict[str, object]:
    rt = runtime(request)
    sample = await rt.collect_once()
    request.app.state.summary_cache.invalidate()
    return {"sample": sample, "buffered_samples": len(rt.buffer)}


@router.get("/metrics/stats", response_model=StatsResponse, summary="Statistics of stored samples")
async def stats(
    engine: EngineDep,
    host: HostQuery = None,
    start_date: StartDateQuery = None,
    end_date: EndDateQuery = None,
) -> StatsResponse:
    flt = sample_filter(host, start_date, end_date)
    return StatsResponse.model_validate(await repository.statistics(engine, flt))


@router.get("/metrics/export", summary="Export samples as JSON or CSV, streamed")
async def export(
    engine: EngineDep,
    format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
    host: HostQuery = None,
    start_date: StartDateQuery = None,
    end_date: EndDateQuery = None,
) -> StreamingResponse:
    flt = sample_filter(host, start_date, end_date)
    stream = repository.export_stream(engine, format, flt)
    if format == "csv":
        return StreamingResponse(
            stream,
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="metrics.csv"'},
        )
    return StreamingResponse(stream, media_type="application/json")
