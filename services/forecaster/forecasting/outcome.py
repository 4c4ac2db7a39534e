"""What a refresh or training run wrote for a host, and the key of its breach incidents.

Usage: `RefreshOutcome(host="web-1", generated_at=now)`; `dedup_key("web-1", "cpu_usage_percent")`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

INCIDENT_TYPE = "predicted_breach"


def dedup_key(host: str, metric: str) -> str:
    return f"{INCIDENT_TYPE}:{host}:{metric}"


@dataclass(slots=True)
class RefreshOutcome:
    """What one refresh (or training run) wrote for a host."""

    host: str
    generated_at: datetime
    metrics: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    forecasts_written: int = 0
    predicted_breaches: int = 0
    incidents_opened: int = 0
    incidents_resolved: int = 0


def scope_order(scope: tuple[str | None, str | None]) -> tuple[str, str]:
    """Sort key of an active model's (host, metric) scope."""
    host, metric = scope
    return (host or "", metric or "")
