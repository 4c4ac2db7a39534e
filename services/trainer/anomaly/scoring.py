"""The scoring loop over newly stored samples, its ML_ANOMALY incidents, and the batched score writer.

Usage: made by ``AnomalyService``; their ``loop`` attributes run in the lifespan (``app.state.loops``).

Every host is scored from its first stored sample by its per-metric streaming detectors
(``streaming.HostStream``), joined by the host's own forest once one is trained for it
(``hostscore``). Each pass stores the scores, the changed detector states and the cursor in
one transaction, so a restart neither forgets nor learns a sample twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.alerting import IncidentKeeper, Observation
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.history import RecentHistory
from services.trainer.anomaly.hostscore import HostBatch, HostForest, StreamCache, score_host
from services.trainer.anomaly.repository import HOST, ID, TIMESTAMP, SampleRow
from services.trainer.anomaly.streaming import HostStream
from services.trainer.anomaly.tracker import ScoringModel
from shared.active_model import ActiveModel, ActiveModelHolder
from shared.arrays import FloatArray
from shared.catalogue import METRIC_NAMES
from shared.clock import utc, utcnow
from shared.db import write_transaction
from shared.errors import Conflict
from shared.incidents.notifier import Notifier
from shared.loops import BackgroundLoop
from shared.settings import Settings
from shared.workers import run_in

log = logging.getLogger("autofix_ml.anomaly")

SCORING_BATCH = 5000
WRITE_INTERVAL = 0.5
MAX_PENDING_WRITES = 100_000
WRITE_BATCH = 5000
STALE_AFTER = timedelta(hours=2)  # older samples (a backfill) are scored but raise nothing
SYNTHETIC_HOST = "synthetic"  # generated data: scored, never an incident
STREAM_METRICS = tuple(METRIC_NAMES)


def threshold_in_force(active: ActiveModel[AnomalyDetector]) -> float:
    """The forest threshold of a version: its registry record's, moved by feedback."""
    threshold = active.record.metrics.get("threshold")
    if not isinstance(threshold, int | float):
        raise Conflict(f"model {active.id} has no threshold in its record; retrain")
    return float(threshold)


def forest_columns(det: AnomalyDetector) -> list[int]:
    return [STREAM_METRICS.index(m) for m in det.metrics]


def state_record(host: str, stream: HostStream) -> dict[str, Any]:
    """One anomaly_stream_state row (``repository.save_stream_states``)."""
    last = None if math.isnan(stream.last_ts) else datetime.fromtimestamp(stream.last_ts, UTC)
    return {
        "host": host,
        "state": stream.to_bytes(),
        "last_ts": last,
        "late": stream.late,
        "updated_at": utcnow(),
    }


class ScoreWriter:
    """Stores queued scores in batches every ``WRITE_INTERVAL`` seconds, off the request path.

    A batch the database refuses (an outage) goes back to the head of the queue and is written
    when the database answers again; only when more than ``capacity`` wait does the oldest go,
    counted in ``dropped`` (health and ``/metrics``).
    """

    def __init__(self, engine: AsyncEngine, *, capacity: int = MAX_PENDING_WRITES) -> None:
        self.engine = engine
        self.capacity = capacity
        self.pending: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.written = 0
        self.failing = False  # the last write failed: scores wait for the database
        self.loop = BackgroundLoop("anomaly-score-writer", self._step, interval=WRITE_INTERVAL)

    def queue(self, record: dict[str, Any]) -> None:
        """Queue one ``repository.score_record``; the oldest goes if too many wait."""
        self.pending.append(record)
        self._trim()

    def _trim(self) -> None:
        while len(self.pending) > self.capacity:
            self.pending.popleft()
            self.dropped += 1

    async def flush(self) -> int:
        """Write what waits, in batches; a failed batch is put back and the error raised."""
        done = 0
        while self.pending:
            batch = [self.pending.popleft() for _ in range(min(WRITE_BATCH, len(self.pending)))]
            try:
                async with write_transaction(self.engine) as conn:
                    await repo.insert_scores(conn, batch)
            except BaseException:
                self.pending.extendleft(reversed(batch))
                self._trim()
                self.failing = True
                raise
            self.failing = False
            self.written += len(batch)
            done += len(batch)
        return done

    async def _step(self) -> None:
        await self.flush()


@dataclass(slots=True)
class _HostWork:
    rows: list[SampleRow]
    stream: HostStream
    forest: HostForest | None
    model: ActiveModel[AnomalyDetector] | None
    times: FloatArray
    values: FloatArray


class ScoringLoop:
    """Each pass: pick up versions activated elsewhere, then score the samples stored since
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
        self.streams = StreamCache(
            STREAM_METRICS, settings.anomaly_idle_minutes * 60.0, settings.anomaly_max_hosts
        )
        self.forest_histories: dict[str, RecentHistory] = {}
        self.incidents = IncidentKeeper(settings)
        self.cursor: int | None = None
        self.scored = 0
        self.late = 0  # late or duplicate samples skipped since start
        self.errors: dict[str, str] = {}  # hosts whose last batch failed, and why
        self.stale_after = STALE_AFTER
        # Told of each stored pass: its rows by host, and whether it caught up with the
        # stored samples (failure prediction keeps each host's last hour from them).
        self.observers: list[Callable[[Mapping[str, Sequence[SampleRow]], bool], None]] = []
        self.loop = BackgroundLoop(
            "anomaly-scoring", self._step, interval=lambda: settings.scoring_interval
        )

    async def _step(self) -> None:
        async with self.lock, self.engine.connect() as conn:
            await self.models.refresh(conn)
        while await self.score_pending() >= SCORING_BATCH:
            pass
        for host in self.streams.evict_idle(now=time.time()):
            self.forest_histories.pop(host, None)
            self.predict_histories.pop(host, None)

    async def stream_for(self, conn: AsyncConnection, host: str) -> HostStream | None:
        """A host's detectors: in memory, else as saved in the database, else None."""
        stream = self.streams.get(host)
        if stream is not None:
            return stream
        blob = await repo.load_stream_state(conn, host)
        if blob is None:
            return None
        try:
            stream = HostStream.from_bytes(blob)
        except (ValueError, KeyError) as exc:
            log.error("detector state of host %s unreadable (%s): starting afresh", host, exc)
            return None
        if stream.metrics != STREAM_METRICS:
            return None
        return self.streams.put(host, stream, now=time.time())

    async def flush_states(self) -> int:
        """Save the states changed since the last save (at shutdown)."""
        dirty = self.streams.take_dirty()
        if dirty:
            async with write_transaction(self.engine) as conn:
                await repo.save_stream_states(conn, [state_record(h, s) for h, s in dirty.items()])
        return len(dirty)

    async def score_pending(self) -> int:
        """Score the samples stored since the last pass; returns how many were read."""
        async with self.engine.connect() as conn:
            if self.cursor is None:
                self.cursor = await repo.load_cursor(conn)
            rows = await repo.samples_after(conn, self.cursor, SCORING_BATCH)
            if not rows:
                self._observe({}, caught_up=True)
                return 0
            by_host: dict[str, list[SampleRow]] = {}
            for r in rows:
                by_host.setdefault(str(r[HOST]), []).append(r)
            stored_thresholds = await repo.host_thresholds(conn)
            stale_before = utcnow() - self.stale_after
            generated = await repo.generated_windows(conn, list(by_host), after=stale_before)
            work: dict[str, _HostWork] = {}
            for host, host_rows in by_host.items():
                try:
                    work[host] = await self._prepare(conn, host, host_rows)
                except Exception as exc:  # noqa: BLE001 - one host never stops the others
                    self._failed(host, exc)
        default = self.settings.anomaly_threshold
        thresholds = {h: stored_thresholds.get(h, default) for h in work}
        step = self.settings.anomaly_severity_step
        results = await run_in(None, _score_hosts, work, thresholds, step)
        now = time.time()
        records: list[dict[str, Any]] = []
        observations: dict[str, list[Observation]] = {}
        models: dict[str, ScoringModel] = {}
        for host, result in results.items():
            if isinstance(result, Exception):
                self._failed(host, result)
                continue
            self.errors.pop(host, None)
            self.streams.touch(host, work[host].stream, now=now)
            item = work[host]
            self.late += result.late
            model = ScoringModel(
                item.model.id if item.model else None,
                item.model.version if item.model else None,
                thresholds[host],
            )
            windows = generated.get(host, [])
            records += self._outcome(host, item, result, model, observations, windows)
            models[host] = model
        dirty = self.streams.take_dirty()
        cursor = int(rows[-1][ID])
        try:
            async with write_transaction(self.engine) as conn:
                await repo.insert_scores(conn, records)
                states = [state_record(h, s) for h, s in dirty.items()]
                await repo.save_stream_states(conn, states)
                await repo.save_cursor(conn, cursor, at=utcnow())
                notify = await self.incidents.apply(
                    conn, observations, model=models, live_after=stale_before.timestamp()
                )
        except Exception:
            # The detectors learned the batch: save them next time (its rows come back as
            # late ones, skipped), never drop what they learned.
            self.streams.dirty |= dirty.keys()
            raise
        self.cursor = cursor
        self.scored += len(records)
        self._observe(by_host, caught_up=len(rows) < SCORING_BATCH)
        for incident in notify:
            self.notifier.notify(incident)
        return len(rows)

    def _observe(self, rows: Mapping[str, Sequence[SampleRow]], *, caught_up: bool) -> None:
        for observer in self.observers:
            try:
                observer(rows, caught_up)
            except Exception:  # an observer never stops the scoring
                log.exception("scoring observer failed")

    def _failed(self, host: str, exc: BaseException) -> None:
        log.error("scoring host %s failed: %s", host, exc)
        self.errors[host] = f"{type(exc).__name__}: {exc}"
        self.forest_histories.pop(host, None)  # rebuilt from the database next time

    async def _prepare(self, conn: AsyncConnection, host: str, rows: list[SampleRow]) -> _HostWork:
        stream = await self.stream_for(conn, host)
        if stream is None:
            stream = self.streams.put(host, self.streams.new_stream(), now=time.time())
        active = self.models.get(host=host)  # only a forest trained for this very host
        forest = None
        if active is not None:
            forest = HostForest(
                active.model,
                await self._forest_history(conn, host, active.model, stream),
                forest_columns(active.model),
                threshold_in_force(active),
            )
        times, values = repo.sample_arrays(rows, STREAM_METRICS)
        return _HostWork(rows, stream, forest, active, times, values)

    async def _forest_history(
        self, conn: AsyncConnection, host: str, det: AnomalyDetector, stream: HostStream
    ) -> RecentHistory:
        """The host's recent samples for its forest, up to the newest one its detectors learned."""
        hist = self.forest_histories.get(host)
        if hist is None:
            before = await repo.recent_samples(
                conn, host=host, limit=det.history_samples, max_id=self.cursor
            )
            if not math.isnan(stream.last_ts):
                before = [b for b in before if utc(b[TIMESTAMP]).timestamp() <= stream.last_ts]
            hist = det.seeded_history(*repo.sample_arrays(before, det.metrics))
            self.forest_histories[host] = hist
        return hist

    def _outcome(
        self,
        host: str,
        item: _HostWork,
        result: HostBatch,
        model: ScoringModel,
        observations: dict[str, list[Observation]],
        generated: Sequence[tuple[datetime, datetime]] = (),
    ) -> list[dict[str, Any]]:
        """Score rows to store of one host's scored batch; its incident observations (none for
        the synthetic host, nor for samples whose metrics all still learn; samples inside a
        window of ``generated`` data raise nothing)."""
        records: list[dict[str, Any]] = []
        for s in result.scored:
            row = item.rows[s.index]
            ts = utc(row[TIMESTAMP])
            records.append(
                repo.score_record(
                    metrics_id=int(row[ID]),
                    model_id=model.model_id,
                    timestamp=ts,
                    host=host,
                    score=s.score,
                    threshold=model.threshold,
                    is_anomaly=s.is_anomaly,
                    severity=s.severity,
                    contributions=s.contributions,
                )
            )
            if host != SYNTHETIC_HOST and not s.learning:
                made = any(a <= ts <= b for a, b in generated)
                observations.setdefault(host, []).append(
                    Observation(ts, s.score, s.is_anomaly, s.severity, s.contributions, made)
                )
        predict_history = self.predict_histories.get(host)
        if predict_history is not None and item.forest is not None and result.scored:
            idx = sorted(s.index for s in result.scored)
            cols = item.forest.columns
            predict_history.extend(item.times[idx], item.values[idx][:, cols])
        return records


def _score_hosts(
    work: dict[str, _HostWork], thresholds: dict[str, float], step: float
) -> dict[str, HostBatch | Exception]:
    """Score each host's new rows (a thread); a host that fails gets its exception back."""
    out: dict[str, HostBatch | Exception] = {}
    for host, item in work.items():
        try:
            out[host] = score_host(
                item.stream,
                item.times,
                item.values,
                forest=item.forest,
                threshold=thresholds[host],
                severity_step=step,
            )
        except Exception as exc:  # noqa: BLE001 - one host never stops the others
            out[host] = exc
    return out
