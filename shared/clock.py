"""Time as the whole product keeps it: timezone-aware UTC. `utc(naive_from_sqlite)`, `utcnow()`."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime; naive values (SQLite) are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
