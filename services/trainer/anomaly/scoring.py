"""The scoring loop over newly stored samples, its ML_ANOMALY incidents, and the batched score writer.

Usage: made by ``AnomalyService``; their ``loop`` attributes run in the lifespan (``app.state.loops``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.alerting import IncidentKeeper, Observation
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.explain import contribution_dicts
from services.trainer.anomaly.history import RecentHistory
from services.trainer.anomaly.repository import HOST, ID, TIMESTAMP, SampleRow
from services.trainer.anomaly.threshold import host_severity
from services.trainer.anomaly.tracker import ScoringModel
from shared.active_model import ActiveModel, ActiveModelHolder
from shared.clock import utc, utcnow
from shared.errors import Conflict
from shared.incidents.notifier import Notifier
from shared.loops import BackgroundLoop
from shared.settings import Settings
from shared.severity import Severity
from shared.workers import run_in

log = logging.getLogger("autofix_ml.anomaly")

SCORING_BATCH = 5000
WRITE_INTERVAL = 0.5
MAX_PENDING_WRITES = 100_000
STALE_AFTER = timedelta(hours=2)  # older samples (a backfill) are scored but raise nothing


def threshold_in_force(active: ActiveModel[AnomalyDetector]) -> float:
    """The threshold of the active version: its registry record's, moved by feedback."""
    threshold = active.record.metrics.get("threshold")
    if not isinstance(threshold, int | float):
        raise Conflict(f"model {active.id} has no threshold in its record; retrain")
    return float(threshold)


@dataclass(frozen=True, slots=True)
class ScoredSample:
    row: SampleRow
    score: float
    is_anomaly: bool
    severity: Severity
    contributions: list[dict[str, Any]]


class ScoreWriter:
    """Stores queued scores in batches every ``WRITE_INTERVAL`` seconds, off the request path."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.pending: list[dict[str, Any]] = []
        self.dropped = 0
        self.loop = BackgroundLoop("anomaly-score-writer", self._step, interval=WRITE_INTERVAL)

    def queue(self, record: dict[str, Any]) -> None:
        """Queue one ``repository.score_record``; the oldest goes if too many wait."""
        if len(self.pending) >= MAX_PENDING_WRITES:
            del self.pending[0]
            self.dropped += 1
        self.pending.append(record)

    async def flush(self) -> int:
        records, self.pending = self.pending, []
        if records:
            async with self.engine.begin() as conn:
                await repo.insert_scores(conn, records)
        return len(records)

    async def _step(self) -> None:
        await self.flush()


class ScoringLoop:
    """Each pass: pick up a version activated elsewhere, then score the samples stored since
    the last pass, host by host, and open or resolve each host's ML_ANOMALY incident."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        notifier: Notifier,
        models: ActiveModelHolder[AnomalyDetector],
        lock: asyncio.Lock,
        predict_histories: dict[str, RecentHistory],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.notifier = notifier
        self.models = models
        self.lock = lock
        self.predict_histories = predict_histories
        self.histories: dict[str, RecentHistory] = {}
        self.incidents = IncidentKeeper(settings)
        self.cursor: int | None = None
        self.scored = 0
        self.stale_after = STALE_AFTER
        self.loop = BackgroundLoop(
            "anomaly-scoring", self._step, interval=lambda: settings.scoring_interval
        )

    async def _step(self) -> None:
        async with self.lock, self.engine.connect() as conn:
            await self.models.refresh(conn)
        while await self.score_pending() >= SCORING_BATCH:
            pass

    async def start_cursor(self, conn: AsyncConnection) -> None:
        """Set where scoring starts, when the first model is activated."""
        if self.cursor is None:
            self.cursor = await repo.initial_cursor(conn)

    async def score_pending(self) -> int:
        """Score the samples stored since the last pass; returns how many."""
        active = self.models.get()
        if active is None:
            return 0
        det = active.model
        async with self.engine.connect() as conn:
            await self.start_cursor(conn)
            assert self.cursor is not None
            rows = await repo.samples_after(conn, self.cursor, SCORING_BATCH)
            if not rows:
                return 0
            by_host: dict[str, list[SampleRow]] = {}
            for r in rows:
                by_host.setdefault(str(r[HOST]), []).append(r)
            for host, host_rows in by_host.items():
                await self._history_for(conn, det, host, host_rows[0][TIMESTAMP])
            thresholds = await repo.host_thresholds(conn)
        cursor = int(rows[-1][ID])
        # A host's own threshold (feedback), else the model's. TODO(merge): on the streaming
        # likelihood the default is settings.anomaly_threshold.
        default = threshold_in_force(active)
        host_threshold = {h: thresholds.get(h, default) for h in by_host}
        step = self.settings.anomaly_severity_step
        scored = await run_in(
            None, _score_batch, det, self.histories, by_host, host_threshold, step
        )
        current = self.models.get()
        if current is None or current.model is not det:
            return len(rows)  # the model changed meanwhile: histories were reset; rescore
        models = {h: ScoringModel(active.id, active.version, t) for h, t in host_threshold.items()}
        records: list[dict[str, Any]] = []
        observations: dict[str, list[Observation]] = {}
        stale_before = (utcnow() - self.stale_after).timestamp()
        for host, items in scored.items():
            threshold = host_threshold[host]
            for item in items:
                ts = utc(item.row[TIMESTAMP])
                records.append(
                    repo.score_record(
                        metrics_id=int(item.row[ID]),
                        model_id=active.id,
                        timestamp=ts,
                        host=host,
                        score=item.score,
                        threshold=threshold,
                        is_anomaly=item.is_anomaly,
                        severity=item.severity,
                        contributions=item.contributions,
                    )
                )
                observations.setdefault(host, []).append(
                    Observation(ts, item.score, item.is_anomaly, item.severity, item.contributions)
                )
            predict_history = self.predict_histories.get(host)
            if predict_history is not None:
                new = [item.row for item in items][-predict_history.capacity :]
                predict_history.extend(*repo.sample_arrays(new, det.metrics))
        async with self.engine.begin() as conn:
            await repo.insert_scores(conn, records)
            notify = await self.incidents.apply(
                conn, observations, model=models, live_after=stale_before
            )
        self.cursor = cursor
        self.scored += len(records)
        for incident in notify:
            self.notifier.notify(incident)
        return len(rows)

    async def _history_for(
        self, conn: AsyncConnection, det: AnomalyDetector, host: str, first: datetime
    ) -> None:
        """Make sure the host's loop history ends before its first new sample."""
        first_ts = utc(first).timestamp()
        hist = self.histories.get(host)
        if hist is not None and len(hist) and hist.arrays()[0][-1] > first_ts:
            hist = None  # out of order (a backfill): rebuild from the database
        if hist is None:
            before = await repo.recent_samples(
                conn, host=host, limit=det.history_samples, max_id=self.cursor
            )
            before = [b for b in before if utc(b[TIMESTAMP]).timestamp() <= first_ts]
            self.histories[host] = det.seeded_history(*repo.sample_arrays(before, det.metrics))


def _score_batch(
    det: AnomalyDetector,
    histories: dict[str, RecentHistory],
    by_host: dict[str, list[SampleRow]],
    thresholds: dict[str, float],
    step: float,
) -> dict[str, list[ScoredSample]]:
    """Score each host's new rows after its history (batch = online), extending it (a thread)."""
    out: dict[str, list[ScoredSample]] = {}
    for host, rows in by_host.items():
        ordered: Sequence[SampleRow] = sorted(rows, key=lambda r: (utc(r[TIMESTAMP]), r[ID]))
        times, values = repo.sample_arrays(ordered, det.metrics)
        threshold = thresholds[host]
        batch = det.score_new(histories[host], times, values, threshold=threshold)
        items = []
        for i, (r, score) in enumerate(zip(ordered, batch.score.tolist(), strict=True)):
            top = contribution_dicts(det.contributions(batch.features, i, top_k=3))
            sev = host_severity(score, threshold, step=step)
            items.append(ScoredSample(r, score, score >= threshold, sev, top))
        out[host] = items
    return out
