"""Storing a pass of failure predictions: many hosts per transaction, their incidents with them.

Usage (``FailureScorer``): ``writer = PredictionWriter(settings, engine, notifier)``;
``written, failed = await writer.write(batches)``.

A transaction holds ``WRITE_HOSTS`` hosts: their predictions and the incident changes their
warnings make (a ``predicted_failure`` incident opens after ``failure_consecutive`` samples
in a row with a warning and resolves after as many without), so a host's incident changes
commit with its predictions. A transaction that fails is tried again host by host: one
host's failure loses no other's. Incidents are notified after their commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.trainer.failure import repository as repo
from services.trainer.failure.fleet import ScoredRow, contribution_dicts
from services.trainer.failure.model import Contribution, FailureModel
from shared.active_model import ActiveModel
from shared.db import write_transaction
from shared.incidents.notifier import Notifier
from shared.incidents.repository import raise_incident, resolve_incident
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings
from shared.severity import Severity
from shared.tables import incidents

log = logging.getLogger("autofix_ml.failure")

INCIDENT_TYPE = "predicted_failure"
WRITE_HOSTS = 500  # hosts per write transaction


def dedup_key(host: str) -> str:
    return f"{INCIDENT_TYPE}:{host}"


@dataclass(slots=True)
class WarningTracker:
    """Counts a host's warnings in a row; says when its incident opens or resolves.

    ``open`` is None until known: after a restart the first quiet run resolves whatever
    incident may still be open (a no-op if none is).
    """

    consecutive: int
    over: int = 0
    under: int = 0
    open: bool | None = None

    def observe(self, warning: bool) -> str | None:
        if warning:
            self.over, self.under = self.over + 1, 0
            if self.over >= self.consecutive and self.open is not True:
                self.open = True
                return "open"
            return None
        self.over, self.under = 0, self.under + 1
        if self.under >= self.consecutive and self.open is not False:
            self.open = False
            return "resolve"
        return None


def failure_type(model: FailureModel, contributions: Sequence[Contribution]) -> str | None:
    """The condition the top contributions point at: named by the feature, or watching its metric."""
    names = {c.name for c in model.definition.conditions}
    by_metric = {c.metric: c.name for c in reversed(model.definition.conditions)}
    for c in contributions:
        subject = c.feature.split(":", 1)[0]
        if subject in names:
            return subject
        if subject in by_metric:
            return by_metric[subject]
    return None


def severity(row: ScoredRow) -> Severity:
    shortest = min(row.warned_horizons, default=max(row.probabilities))
    return "critical" if shortest <= 15 else "high" if shortest <= 30 else "medium"


@dataclass(slots=True)
class HostScores:
    """One host's scored samples of a pass, and the model that scored them."""

    host: str
    active: ActiveModel[FailureModel]
    scored: list[ScoredRow]


@dataclass(slots=True)
class _Change:
    """An incident change of a host, in the order its samples made it."""

    action: str  # "open" or "resolve"
    item: HostScores
    row: ScoredRow
    top: list[dict[str, Any]]


class PredictionWriter:
    """Writes scored hosts in transactions of many; keeps each host's warning count."""

    def __init__(self, settings: Settings, engine: AsyncEngine, notifier: Notifier) -> None:
        self.settings = settings
        self.engine = engine
        self.notifier = notifier
        self.trackers: dict[str, WarningTracker] = {}

    async def write(
        self, batch: Sequence[HostScores]
    ) -> tuple[list[HostScores], list[IncidentOut], dict[str, Exception]]:
        """Store the hosts' predictions and incident changes; notify after each commit.
        Returns the hosts written, the incidents notified and the hosts that failed."""
        written: list[HostScores] = []
        notified: list[IncidentOut] = []
        failed: dict[str, Exception] = {}
        for start in range(0, len(batch), WRITE_HOSTS):
            chunk = list(batch[start : start + WRITE_HOSTS])
            try:
                notify = await self._commit(chunk)
            except Exception as exc:  # noqa: BLE001 - tried again host by host below
                if len(chunk) == 1:
                    failed[chunk[0].host] = exc
                    continue
                log.warning(
                    "failure predictions of %d hosts not stored (%s): one by one", len(chunk), exc
                )
                for item in chunk:
                    try:
                        notify = await self._commit([item])
                    except Exception as one:  # noqa: BLE001 - this host only
                        failed[item.host] = one
                        continue
                    written.append(item)
                    notified += self._notify(notify)
                continue
            written += chunk
            notified += self._notify(notify)
        return written, notified, failed

    def _notify(self, incidents_: list[IncidentOut]) -> list[IncidentOut]:
        for incident in incidents_:
            self.notifier.notify(incident)
        return incidents_

    async def _commit(self, chunk: list[HostScores]) -> list[IncidentOut]:
        """One transaction for the chunk; the trackers move only when it commits."""
        trackers: dict[str, WarningTracker] = {}
        records: list[dict[str, Any]] = []
        changes: list[_Change] = []
        for item in chunk:
            known = self.trackers.get(item.host)
            tracker = (
                replace(known)
                if known is not None
                else WarningTracker(self.settings.failure_consecutive)
            )
            trackers[item.host] = tracker
            model = item.active.model
            for row in item.scored:
                top = contribution_dicts(row.contributions)
                kind = failure_type(model, row.contributions)
                for h, p in row.probabilities.items():
                    records.append(
                        {
                            "model_id": item.active.id,
                            "timestamp": row.ts,
                            "host": item.host,
                            "horizon_minutes": h,
                            "failure_probability": p,
                            "predicted_failure_type": kind,
                            "will_fail": p >= row.thresholds[h] and not row.in_failure,
                            "top_features": top,
                        }
                    )
                action = tracker.observe(row.warning)
                if action is not None:
                    changes.append(_Change(action, item, row, top))
        notify: list[IncidentOut] = []
        async with write_transaction(self.engine) as conn:
            # The predictions first: on SQLite the driver begins the transaction at the first
            # write, and an incident's insert (a savepoint) as the first write would commit
            # by itself, whatever came after.
            await repo.insert_predictions(conn, records)
            may_be_open = await self._open_keys(conn, changes)
            for change in changes:
                key = dedup_key(change.item.host)
                if change.action == "open":
                    incident = await self._raise(conn, change)
                    may_be_open.add(key)
                    if incident is not None:
                        notify.append(incident)
                elif key in may_be_open:
                    # (resolving a host with no open incident changes nothing: not asked)
                    may_be_open.discard(key)
                    resolved = await resolve_incident(
                        conn,
                        dedup_key=key,
                        reason=f"failure probability under every threshold for "
                        f"{self.settings.failure_consecutive} samples in a row",
                    )
                    if resolved is not None:
                        notify.append(resolved)
        self.trackers.update(trackers)
        return notify

    async def _open_keys(self, conn: AsyncConnection, changes: Sequence[_Change]) -> set[str]:
        """Of the hosts to resolve, those with an open incident (one query, not one each)."""
        keys = sorted({dedup_key(c.item.host) for c in changes if c.action == "resolve"})
        if not keys:
            return set()
        query = sa.select(incidents.c.dedup_key).where(
            incidents.c.dedup_key.in_(keys), incidents.c.status == "open"
        )
        return {str(k) for k in (await conn.execute(query)).scalars()}

    async def _raise(self, conn: AsyncConnection, change: _Change) -> IncidentOut | None:
        row, host, active = change.row, change.item.host, change.item.active
        horizon = min(row.warned_horizons)
        p = row.probabilities[horizon]
        reasons = "; ".join(c.text for c in row.contributions) or "no single feature stands out"
        incident, outcome = await raise_incident(
            conn,
            type=INCIDENT_TYPE,
            host=host,
            dedup_key=dedup_key(host),
            severity=severity(row),
            title=f"{host} predicted to fail within {horizon} min ({p:.0%})",
            description=f"Failure probability {p:.0%} within {horizon} min at "
            f"{row.ts:%Y-%m-%d %H:%M:%S} UTC. Why: {reasons}.",
            details={
                "model_id": active.id,
                "model_version": active.version,
                "timestamp": row.ts.isoformat(),
                "probabilities": {str(h): v for h, v in row.probabilities.items()},
                "thresholds": {str(h): v for h, v in row.thresholds.items()},
                "contributions": change.top,
                "failure_type": failure_type(active.model, row.contributions),
            },
            cooldown_minutes=self.settings.incident_cooldown_minutes,
        )
        return incident if outcome != "updated" else None
