"""Which stored samples a request selects: host and an inclusive time window, parsed from a query.

Usage: `flt = sample_filter(host=q.host, start_date=q.start_date, end_date=q.end_date)`;
`SampleFilter()` selects everything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from shared.errors import BadRequest, Unprocessable


@dataclass(frozen=True, slots=True)
class SampleFilter:
    """A selection of stored samples; None means no bound."""

    host: str | None = None
    start: datetime | None = None
    end: datetime | None = None


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
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
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


def sample_filter(
    *, host: str | None, start_date: str | None, end_date: str | None
) -> SampleFilter:
    """The selection of a query; 422 for an unreadable date, 400 for a window that ends first."""
    start = parse_when(start_date, field="start_date", end=False)
    end = parse_when(end_date, field="end_date", end=True)
    if start is not None and end is not None and start > end:
        raise BadRequest("start_date is after end_date")
    return SampleFilter(host=host, start=start, end=end)


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    """What GET /metrics/series reads: a host's metrics over [start, end] in buckets of `step`."""

    host: str
    metrics: tuple[str, ...]
    start: datetime
    end: datetime
    step_seconds: int


DEFAULT_SERIES_SPAN = timedelta(hours=24)


def _metric_names(text: str | None, known: Sequence[str]) -> tuple[str, ...]:
    if text is None or not text.strip():
        return tuple(known)
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise Unprocessable(
            [
                {
                    "field": "query.metrics",
                    "loc": ["query", "metrics"],
                    "msg": f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(known)}",
                    "type": "value_error",
                }
            ]
        )
    return names


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def series_window(
    *,
    host: str,
    metrics: str | None,
    start: datetime | None,
    end: datetime | None,
    points: int,
    known: Sequence[str],
    now: datetime,
) -> SeriesWindow:
    """The window of a series query: defaults (the last 24 h), 400 for one that ends first.

    Buckets are aligned on multiples of `step` since the epoch, so a refresh a moment later
    recomputes the same buckets rather than shifted ones.
    """
    end = end if end is not None else now
    start = start if start is not None else end - DEFAULT_SERIES_SPAN
    if start >= end:
        raise BadRequest("start is not before end")
    # No sample is older than the epoch the buckets are counted from: a window reaching
    # further back starts there (year 5 made a bucket start before year 1, a 500).
    start = max(start, _EPOCH)
    if start >= end:
        raise BadRequest("end is before 1970-01-01: no sample is that old")
    # Aligned buckets: a window of n steps touches at most n + 1 of them.
    step = max(1, math.ceil((end - start).total_seconds() / (points - 1)))
    return SeriesWindow(
        host=host,
        metrics=_metric_names(metrics, known),
        start=start,
        end=end,
        step_seconds=step,
    )
