"""The failure-prediction loop: each host's new samples scored, written, warnings as incidents.

Usage (lifespan, through ``FailureService``): ``scorer = FailureScorer(settings, engine,
notifier, models)``; ``scorer.loop.start()``; ``await scorer.loop.stop()``.

Each pass scores, for every host with an active model (its own, else the fleet model), the
samples stored since its last stored prediction (at most ``MAX_ROWS_PER_PASS``; a host seen
for the first time: its newest sample only) and writes one ``failure_predictions`` row per
sample and horizon. A ``predicted_failure`` incident opens after ``failure_consecutive``
samples in a row with a warning (any horizon over its threshold, outside a failure state)
and resolves after as many without; raising and resolving go through the shared incident
repository (dedup per host, cooldown, webhook after the commit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly.repository import sample_arrays
from services.trainer.failure import repository as repo
from services.trainer.failure.features import batch_features
from services.trainer.failure.model import Contribution, FailureModel
from shared.active_model import ActiveModel, ActiveModelHolder
from shared.clock import utc, utcnow
from shared.db import write_transaction
from shared.incidents.notifier import Notifier
from shared.incidents.repository import raise_incident, resolve_incident
from shared.loops import BackgroundLoop
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings
from shared.severity import Severity

log = logging.getLogger("autofix_ml.failure")

INCIDENT_TYPE = "predicted_failure"
MAX_ROWS_PER_PASS = 360  # new samples of one host scored per pass (a backlog takes more)
LOOKBACK_ROWS = 720  # samples before the first new one: the features' hour at 5 s steps
ACTIVE_HOST_WINDOW = timedelta(hours=2)  # the fleet model scores hosts seen this recently
EXPLAIN = 3


def dedup_key(host: str) -> str:
    return f"{INCIDENT_TYPE}:{host}"


@dataclass(frozen=True, slots=True)
class ScoredRow:
    """One scored sample of a host."""

    ts: datetime
    probabilities: dict[int, float]
    thresholds: dict[int, float]
    warning: bool
    in_failure: bool
    contributions: list[Contribution]

    @property
    def warned_horizons(self) -> list[int]:
        return [h for h, p in self.probabilities.items() if p >= self.thresholds[h]]


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


def score_rows(
    model: FailureModel, rows: Sequence[Any], after: datetime | None, *, limit: int
) -> list[ScoredRow]:
    """Score a host's samples after ``after`` (None: the newest only), each from its last hour."""
    if not rows:
        return []
    times, values = sample_arrays(rows, model.spec.metrics)
    if after is None:
        new = np.array([len(times) - 1])
    else:
        new = np.flatnonzero(times > after.timestamp())[-limit:]
    if len(new) == 0:
        return []
    x = batch_features(model.spec, times, values)[new]
    probs = model.predict_features(x)
    state = model.definition.state(times, values, model.spec.metrics)[new]
    thresholds = {h.horizon_min: h.threshold for h in model.horizons}
    out = []
    for i, row_index in enumerate(new.tolist()):
        p = {h: float(probs[h][i]) for h in thresholds}
        warning = any(p[h] >= thresholds[h] for h in thresholds) and not bool(state[i])
        contributions: list[Contribution] = []
        if warning or i == len(new) - 1:
            lead = max(thresholds, key=lambda h: p[h] / thresholds[h])
            contributions = model.explain(x[i], lead, top=EXPLAIN)
        ts = utc(rows[row_index][1])
        out.append(ScoredRow(ts, p, thresholds, warning, bool(state[i]), contributions))
    return out


def contribution_dicts(contributions: Sequence[Contribution]) -> list[dict[str, Any]]:
    return [
        {
            "feature": c.feature,
            "value": c.value if np.isfinite(c.value) else None,
            "contribution": c.contribution,
            "text": c.text,
        }
        for c in contributions
    ]


@dataclass(slots=True)
class PassOutcome:
    hosts: int = 0
    predictions: int = 0
    opened: list[IncidentOut] = field(default_factory=list)


class FailureScorer:
    """The loop over every host with an active failure model."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        notifier: Notifier,
        models: ActiveModelHolder[FailureModel],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.notifier = notifier
        self.models = models
        self.last: dict[str, datetime] | None = None  # newest scored sample per host
        self.trackers: dict[str, WarningTracker] = {}
        self.loop = BackgroundLoop(
            "failure-scoring", self.step, interval=settings.failure_scoring_interval
        )

    async def step(self) -> float | None:
        await self.run_pass()
        return None

    async def _hosts(self) -> dict[str, ActiveModel[FailureModel]]:
        async with self.engine.connect() as conn:
            await self.models.refresh(conn)
            if self.last is None:
                self.last = await repo.last_predicted(conn)
            hosts = {m.record.host: m for m in self.models.all() if m.record.host is not None}
            fleet = self.models.get(host=None)
            if fleet is not None:
                for host in await repo.active_hosts(conn, since=utcnow() - ACTIVE_HOST_WINDOW):
                    hosts.setdefault(host, fleet)
        return hosts

    async def run_pass(self) -> PassOutcome:
        """Score every host's new samples, write them and the incidents; notify after."""
        outcome = PassOutcome()
        hosts = await self._hosts()
        assert self.last is not None
        for host, active in sorted(hosts.items()):
            async with self.engine.connect() as conn:
                rows = await repo.recent_rows(
                    conn, host=host, limit=MAX_ROWS_PER_PASS + LOOKBACK_ROWS
                )
            scored = await asyncio.to_thread(
                score_rows, active.model, rows, self.last.get(host), limit=MAX_ROWS_PER_PASS
            )
            if not scored:
                continue
            notify = await self._write(host, active, scored)
            self.last[host] = scored[-1].ts
            outcome.hosts += 1
            outcome.predictions += len(scored)
            outcome.opened += [i for i in notify if i.status == "open"]
            for incident in notify:
                self.notifier.notify(incident)
        return outcome

    async def _write(
        self, host: str, active: ActiveModel[FailureModel], scored: Sequence[ScoredRow]
    ) -> list[IncidentOut]:
        tracker = self.trackers.setdefault(host, WarningTracker(self.settings.failure_consecutive))
        records: list[dict[str, Any]] = []
        notify: list[IncidentOut] = []
        async with write_transaction(self.engine) as conn:
            for row in scored:
                top = contribution_dicts(row.contributions)
                kind = failure_type(active.model, row.contributions)
                for h, p in row.probabilities.items():
                    records.append(
                        {
                            "model_id": active.id,
                            "timestamp": row.ts,
                            "host": host,
                            "horizon_minutes": h,
                            "failure_probability": p,
                            "predicted_failure_type": kind,
                            "will_fail": p >= row.thresholds[h] and not row.in_failure,
                            "top_features": top,
                        }
                    )
                action = tracker.observe(row.warning)
                if action == "open":
                    incident = await self._raise(conn, host, active, row, top)
                    if incident is not None:
                        notify.append(incident)
                elif action == "resolve":
                    resolved = await resolve_incident(
                        conn,
                        dedup_key=dedup_key(host),
                        reason=f"failure probability under every threshold for "
                        f"{tracker.consecutive} samples in a row",
                    )
                    if resolved is not None:
                        notify.append(resolved)
            await repo.insert_predictions(conn, records)
        return notify

    async def _raise(
        self,
        conn: Any,
        host: str,
        active: ActiveModel[FailureModel],
        row: ScoredRow,
        top: list[dict[str, Any]],
    ) -> IncidentOut | None:
        horizon = min(row.warned_horizons)
        p = row.probabilities[horizon]
        reasons = "; ".join(c.text for c in row.contributions) or "no single feature stands out"
        incident, change = await raise_incident(
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
                "contributions": top,
                "failure_type": failure_type(active.model, row.contributions),
            },
            cooldown_minutes=self.settings.incident_cooldown_minutes,
        )
        return incident if change != "updated" else None
