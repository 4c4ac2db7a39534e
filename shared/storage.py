"""A full database (SQLite "database or disk is full", PostgreSQL disk full) told apart from an
outage, and remembered for a while so health can say so.

Usage: `if storage_full(exc): state.record(exc)`; `state.problem()` in a health answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# PostgreSQL SQLSTATE class 53: insufficient resources (53100 disk_full, 53200 out_of_memory
# is not ours to report as storage, 53400 configuration_limit_exceeded neither).
_PG_DISK_FULL = frozenset({"53100"})
_MESSAGES = ("database or disk is full", "no space left on device", "could not extend file")
# How long after the last refused write health still reports the database full.
REPORT_SECONDS = 300.0
FULL_DETAIL = (
    "database storage full: the database refused the write for lack of space ({reason}); "
    "free space (or raise the database's size limit) and retry"
)


def storage_full(exc: BaseException) -> bool:
    """Whether `exc` (or the driver error it wraps) says the database has no room left."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if code in _PG_DISK_FULL:
            return True
        if any(m in str(current).lower() for m in _MESSAGES):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def full_reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).lower()
    for message in _MESSAGES:
        if message in text:
            return message
    return "disk full"


@dataclass(slots=True)
class StorageState:
    """When the database last refused a write for lack of space, and why."""

    last_full_at: float | None = None
    reason: str = ""
    refused: int = 0

    def record(self, exc: BaseException) -> None:
        self.last_full_at = time.monotonic()
        self.reason = full_reason(exc)
        self.refused += 1

    def problem(self, *, within: float = REPORT_SECONDS) -> str | None:
        """A line for health while the last refusal is recent, else None."""
        if self.last_full_at is None:
            return None
        ago = time.monotonic() - self.last_full_at
        if ago > within:
            return None
        return (
            f"database storage full ({self.reason}) {ago:.0f} s ago; {self.refused} writes refused"
        )
