"""Which stored samples a request selects: host and an inclusive time window, parsed from a query.

Usage: `flt = sample_filter(host=q.host, start_date=q.start_date, end_date=q.end_date)`;
`SampleFilter()` selects everything.
"""

from __future__ import annotations

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
