"""The training schedule: which hosts are due a refit, and when to look again.

Usage: `plan = due_hosts(spans, trained_at, now=now, every=timedelta(hours=24))`; the service
trains `plan.due` one host at a time and looks again after `plan.wait` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

# A host is trained on schedule once its samples span this much: a day gives the daily
# seasonality one full period (and far more than the model's minimum number of points).
MIN_HISTORY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RetrainPlan:
    """Hosts due a refit (longest waiting first), those skipped for short history, and the
    seconds until the next host falls due (None: none will without new history)."""

    due: list[str]
    short: list[str]
    wait: float | None


def due_hosts(
    spans: Mapping[str, tuple[datetime, datetime]],
    trained_at: Mapping[str, datetime],
    *,
    now: datetime,
    every: timedelta,
    min_history: timedelta = MIN_HISTORY,
    skip: Mapping[str, datetime] | None = None,
) -> RetrainPlan:
    """Hosts with at least `min_history` of samples whose newest active forecaster is older
    than `every` (or that have none). `skip`: hosts whose last scheduled attempt failed, and
    when; they wait a full period too."""
    due: list[tuple[datetime, str]] = []
    short: list[str] = []
    next_due: datetime | None = None
    for host, (oldest, newest) in sorted(spans.items()):
        if newest - oldest < min_history:
            short.append(host)
            continue
        last = max(
            (t for t in ((trained_at.get(host)), (skip or {}).get(host)) if t is not None),
            default=None,
        )
        if last is None or now - last >= every:
            due.append((last or datetime.min.replace(tzinfo=now.tzinfo), host))
            continue
        at = last + every
        next_due = at if next_due is None or at < next_due else next_due
    wait = None if next_due is None else max(0.0, (next_due - now).total_seconds())
    return RetrainPlan(due=[host for _, host in sorted(due)], short=short, wait=wait)
