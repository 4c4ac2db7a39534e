"""ML_ANOMALY incidents from a pass of scores, their state kept in the database.

Usage (in the scoring pass's write transaction): ``notify = await keeper.apply(conn, by_host,
model=model, live_after=epoch)``; then ``notifier.notify(i) for i in notify`` after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.tracker import HostTracker, IncidentAction, ScoringModel
from shared.clock import utcnow
from shared.incidents import repository as incidents
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings
from shared.severity import Severity

INCIDENT_TYPE = "ML_ANOMALY"


def dedup_key(host: str) -> str:
    return f"{INCIDENT_TYPE}:{host}"


@dataclass(frozen=True, slots=True)
class Observation:
    """One scored sample of a host, as the incident state machine sees it."""

    ts: datetime
    score: float
    flag: bool
    severity: Severity
    top: list[dict[str, Any]]
    generated: bool = False  # synthetic data stored under the host: counted, raises nothing


class IncidentKeeper:
    """Applies each host's samples to its stored state machine and its incident."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def apply(
        self,
        conn: AsyncConnection,
        by_host: Mapping[str, Sequence[Observation]],
        *,
        model: ScoringModel | Mapping[str, ScoringModel],
        live_after: float,
    ) -> list[IncidentOut]:
        """Count the pass's samples (each host's in time order); open, refresh or resolve
        incidents; store the states. Returns the incidents to notify (after the commit)."""
        s = self.settings
        stored = await repo.incident_states(conn)
        trackers: dict[str, HostTracker] = {}
        for host, items in by_host.items():
            state = stored.get(dedup_key(host))
            if state is None and not any(o.flag for o in items):
                continue  # a quiet host stays quiet: nothing to count, store or raise
            trackers[host] = (
                HostTracker.from_state(
                    host,
                    state,
                    consecutive=s.anomaly_consecutive,
                    resolve_after=s.anomaly_resolve_after,
                )
                if state is not None
                else HostTracker(host, s.anomaly_consecutive, s.anomaly_resolve_after)
            )
        await self._notice_manual_resolves(conn, trackers.values())
        notify: list[IncidentOut] = []
        refreshes: list[dict[str, Any]] = []  # ongoing incidents, updated in one statement
        for host, tracker in trackers.items():
            items = by_host[host]
            host_model = model if isinstance(model, ScoringModel) else model[host]
            actions: list[IncidentAction] = []
            for o in sorted(items, key=lambda o: o.ts):
                action = tracker.observe(
                    ts=o.ts,
                    score=o.score,
                    flag=o.flag,
                    severity=o.severity,
                    top=o.top,
                    model=host_model,
                    live=o.ts.timestamp() >= live_after and not o.generated,
                )
                if action is not None:
                    actions.append(action)
            for action in _coalesced(actions):
                if action.kind == "refresh" and not action.notify and tracker.incident_id:
                    refreshes.append(
                        {
                            "id": tracker.incident_id,
                            "severity": action.severity,
                            "description": action.description,
                            "details": action.details,
                        }
                    )
                    continue
                incident = await self._apply(conn, tracker, action)
                if incident is not None and action.notify:
                    notify.append(incident)
        now = utcnow()
        await incidents.refresh_incidents(conn, refreshes, now=now)
        keep = {dedup_key(h): (h, t.to_state()) for h, t in trackers.items() if not t.neutral}
        gone = [dedup_key(h) for h, t in trackers.items() if t.neutral and dedup_key(h) in stored]
        await repo.save_incident_states(conn, keep, now=now)
        await repo.delete_incident_states(conn, gone)
        return notify

    async def _notice_manual_resolves(
        self, conn: AsyncConnection, trackers: Iterable[HostTracker]
    ) -> None:
        opened = {t.incident_id: t for t in trackers if t.open and t.incident_id is not None}
        if not opened:
            return
        statuses = await incidents.statuses(conn, [i for i in opened if i is not None])
        for incident_id, tracker in opened.items():
            if statuses.get(incident_id or 0) != "open":
                tracker.resolved_by_hand()

    async def _apply(
        self, conn: AsyncConnection, tracker: HostTracker, action: IncidentAction
    ) -> IncidentOut | None:
        key = dedup_key(action.host)
        if action.kind == "resolve":
            return await incidents.resolve_incident(
                conn,
                dedup_key=key,
                reason=f"{self.settings.anomaly_resolve_after} consecutive normal samples",
            )
        incident, _change = await incidents.raise_incident(
            conn,
            type=INCIDENT_TYPE,
            host=action.host,
            dedup_key=key,
            severity=action.severity,
            title=action.title,
            description=action.description,
            details=action.details,
            cooldown_minutes=self.settings.incident_cooldown_minutes,
        )
        tracker.incident_id = incident.id
        return incident


def _coalesced(actions: list[IncidentAction]) -> list[IncidentAction]:
    """Runs of refreshes become their last (notifying if any of them did)."""
    out: list[IncidentAction] = []
    for action in actions:
        if out and action.kind == "refresh" and out[-1].kind in ("raise", "refresh"):
            last = out[-1]
            merged_kind = last.kind  # a raise followed by refreshes stays a raise
            out[-1] = IncidentAction(
                kind=merged_kind,
                host=action.host,
                severity=action.severity,
                details=action.details,
                title=action.title,
                description=action.description,
                notify=last.notify or action.notify,
            )
        else:
            out.append(action)
    return out
