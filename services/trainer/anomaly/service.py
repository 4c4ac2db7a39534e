"""The anomaly-detection service: training runs, the active model, real-time scoring,
the scoring loop over new samples, threshold feedback and ML_ANOMALY incidents.

Usage (from the trainer's lifespan)::

    service = AnomalyService(settings, engine, notifier); await service.start()
    ...; await service.stop()

Design choices:

- *Active model in memory.* The active version is loaded (sha256 checked) at start-up and
  whenever it changes; predictions never touch the database for the model. The scoring
  loop checks once a pass whether another process activated a different version.
- *Training* runs in a dedicated executor of one worker process, so the event loop
  (health, predict, scoring) keeps running; a second request while one runs gets a 409.
- *History too short*: under ``MIN_HISTORY_SAMPLES`` (3 days of 1-minute samples) of the
  chosen host. With ``use_synthetic`` a month is generated (host ``synthetic``) and used;
  without it the request is refused with a 409 that says so.
- *Predictions are stored* in ``anomaly_scores`` (``metrics_id`` null) so scored samples are
  queryable, by a background writer that batches them every ``WRITE_INTERVAL`` seconds;
  the request itself does no database work once the host's history is warm.
- *Per-host recent history*: a prediction's rolling and lag features come from that host's
  recent samples, read once from ``metrics_history`` on first use (the detector's
  ``history_samples``: the feature look-back and the day its shift memory covers) and then
  kept in memory, fed by the posted samples and by the collected samples the scoring loop
  sees. A host with no samples at all starts from a look-back at the training medians.
- *Incidents* come from the scoring loop (collected samples): ``ML_ANOMALY_CONSECUTIVE``
  samples in a row above the threshold open one (dedup key ``ML_ANOMALY:<host>``, cooldown
  ``ML_INCIDENT_COOLDOWN_MINUTES``), a worse severity while open updates it, and as many
  consecutive normal samples resolve it. Samples older than ``STALE_AFTER`` (a backfill)
  are scored but raise nothing. Notifications go through the notifier's queue, never
  blocking scoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.trainer import repository as repo
from services.trainer.detector import (
    AnomalyDetector,
    MetricContribution,
    _rows,
    set_scoring_threads,
    severity,
)
from services.trainer.features import FloatArray, RecentHistory, epoch_seconds
from services.trainer.repository import Row
from services.trainer.synthetic import SyntheticDataGenerator, store_frame
from services.trainer.training import (
    ARTIFACT_FORMAT,
    MODEL_NAME,
    MODEL_TYPE,
    TrainingOutcome,
    activation_decision,
    train_detector,
)
from shared import incidents, registry
from shared.catalogue import METRIC_NAMES
from shared.db import create_engine, utc, utcnow
from shared.errors import Conflict
from shared.incidents import Notifier
from shared.schemas.anomaly import TrainAnomalyRequest
from shared.schemas.models import ModelSummary
from shared.settings import Settings
from shared.severity import Severity, severity_rank

log = logging.getLogger("autofix_ml.anomaly")

MIN_HISTORY_SAMPLES = 3 * 1440
SYNTHETIC_DAYS = 30
SYNTHETIC_HOST = "synthetic"
SCORING_BATCH = 5000
WRITE_INTERVAL = 0.5
MAX_PENDING_WRITES = 100_000
STALE_AFTER = timedelta(hours=2)
INCIDENT_SCORE_HISTORY = 20
_METRIC_INDEX = {name: i for i, name in enumerate(("id", "timestamp", "host", *METRIC_NAMES))}


@dataclass(slots=True)
class ActiveModel:
    detector: AnomalyDetector
    model_id: int
    version: int


@dataclass(slots=True)
class HostTracker:
    """Consecutive anomalous / normal samples of one host, for incidents."""

    above: int = 0
    below: int = 0
    worst: str = "low"
    raised: str | None = None  # severity last sent while open
    recent: deque[tuple[str, float]] = field(
        default_factory=lambda: deque(maxlen=INCIDENT_SCORE_HISTORY)
    )


@dataclass(slots=True)
class IncidentAction:
    kind: str  # "raise" or "resolve"
    host: str
    severity: str = "low"
    details: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    description: str = ""


def contribution_dicts(items: Sequence[MetricContribution]) -> list[dict[str, Any]]:
    return [
        {
            "metric": c.metric,
            "observed": _finite(c.observed),
            "expected": _finite(c.expected),
            "share": _finite(c.share),
        }
        for c in items
    ]


def _finite(x: float) -> float:
    return float(x) if np.isfinite(x) else 0.0


def training_executor() -> ProcessPoolExecutor:
    """A dedicated training executor: one worker process (spawned, so no inherited loop).

    A process, not a thread: a fit holds the GIL long enough to delay health checks and
    predictions by hundreds of milliseconds (measured), a separate process does not.
    """
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        # One core for the fit: the service's process keeps the other.
        initializer=set_scoring_threads,
        initargs=(1,),
    )


def train_in_worker(
    database_url: str,
    *,
    host: str,
    start: datetime | None,
    end: datetime | None,
    contamination: float,
    n_estimators: int,
    active_blob: tuple[bytes, str] | None,
    synthetic_seed: int | None,
    consecutive: int = 3,
) -> TrainingOutcome:
    """Read the host's history and run ``train_detector``, all in the worker process, so
    the service's event loop neither converts nor pickles the training rows."""
    rows = asyncio.run(_read_history(database_url, host=host, start=start, end=end))
    if not rows:
        raise Conflict(f"no samples of host {host} in the requested range")
    active = AnomalyDetector.from_bytes(*active_blob) if active_blob else None
    return train_detector(
        rows,
        contamination=contamination,
        n_estimators=n_estimators,
        active=active,
        synthetic_seed=synthetic_seed,
        consecutive=consecutive,
    )


async def _read_history(
    database_url: str, *, host: str, start: datetime | None, end: datetime | None
) -> list[Row]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await repo.load_history(conn, host=host, start=start, end=end)
    finally:
        await engine.dispose()


class AnomalyService:
    def __init__(self, settings: Settings, engine: AsyncEngine, notifier: Notifier) -> None:
        self.settings = settings
        self.engine = engine
        self.notifier = notifier
        self.active: ActiveModel | None = None
        self.training = False
        self.predict_histories: dict[str, RecentHistory] = {}
        self.loop_histories: dict[str, RecentHistory] = {}
        self.trackers: dict[str, HostTracker] = {}
        self.pending: list[dict[str, Any]] = []
        self.dropped_writes = 0
        self.cursor: int | None = None
        self.scored = 0
        self.stale_after = STALE_AFTER
        self._lock = asyncio.Lock()  # model swaps and threshold feedback
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ProcessPoolExecutor | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await self._load_active(conn)
        except Exception as exc:  # noqa: BLE001 - the service runs without a model
            log.error("could not load the active anomaly model: %s", exc)
        self._tasks = [
            asyncio.create_task(self._scoring_loop(), name="anomaly-scoring"),
            asyncio.create_task(self._writer_loop(), name="anomaly-writer"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.flush()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def _load_active(self, conn: AsyncConnection) -> None:
        model = await registry.active_model(conn, name=MODEL_NAME)
        if model is None:
            self._swap(None)
            return
        self._swap(await self._load(conn, model))

    async def _load(self, conn: AsyncConnection, model: ModelSummary) -> ActiveModel:
        """A stored version, checksum verified (twice: registry and detector)."""
        try:
            blob, _fmt, sha = await registry.load_artifact(conn, model.id)
            detector = await asyncio.to_thread(AnomalyDetector.from_bytes, blob, sha)
        except (registry.ArtifactIntegrityError, ValueError) as exc:
            detail = getattr(exc, "detail", str(exc))
            raise Conflict(f"model {model.id} refused: {detail}") from exc
        threshold = model.metrics.get("threshold")
        if isinstance(threshold, int | float):
            detector.threshold = float(threshold)
        return ActiveModel(detector, int(model.id), int(model.version))

    def _swap(self, active: ActiveModel | None) -> None:
        changed = (self.active.model_id if self.active else None) != (
            active.model_id if active else None
        )
        self.active = active
        if changed:
            # Histories are bound to a model's metrics and medians: rebuild them lazily.
            self.predict_histories.clear()
            self.loop_histories.clear()

    def require_active(self) -> ActiveModel:
        if self.active is None:
            raise Conflict(
                "no anomaly detector is trained yet: POST /api/ml/train/anomaly-detector "
                '(e.g. {"use_synthetic": true}) first'
            )
        return self.active

    # -- training ------------------------------------------------------------------

    async def train(self, body: TrainAnomalyRequest) -> dict[str, Any]:
        if self.training:
            raise Conflict("an anomaly detector is already training; try again when it is done")
        self.training = True
        try:
            return await self._train(body)
        finally:
            self.training = False

    async def _train(self, body: TrainAnomalyRequest) -> dict[str, Any]:
        started = time.perf_counter()
        if body.start and body.end and body.start > body.end:
            raise Conflict("start is after end")
        start, end = body.start, body.end
        async with self.engine.connect() as conn:
            if body.host is not None:
                host: str | None = body.host
                count = await repo.count_samples(conn, host=body.host, start=start, end=end)
            else:
                host, count = await repo.busiest_host(conn, start=start, end=end)
        generated = 0
        synthetic_seed: int | None = None
        if count < MIN_HISTORY_SAMPLES:
            if not body.use_synthetic:
                raise Conflict(
                    f"history too short: {count} samples"
                    + (f" of host {host}" if host else "")
                    + f"; at least {MIN_HISTORY_SAMPLES} (3 days at one a minute) are needed. "
                    "Collect more, or pass use_synthetic=true to generate a month first."
                )
            gen = SyntheticDataGenerator(seed=body.seed)
            frame = await asyncio.to_thread(gen.generate_full_training_set, SYNTHETIC_DAYS)
            async with self.engine.begin() as conn:
                generated = await store_frame(conn, frame, host=SYNTHETIC_HOST)
            host, start, end = SYNTHETIC_HOST, None, None
            synthetic_seed = body.seed
        assert host is not None
        active = self.active
        active_blob: tuple[bytes, str] | None = None
        if active is not None:
            async with self.engine.connect() as conn:
                blob, _fmt, sha = await registry.load_artifact(conn, active.model_id)
            active_blob = (blob, sha)
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = training_executor()
        outcome: TrainingOutcome = await loop.run_in_executor(
            self._executor,
            partial(
                train_in_worker,
                self.engine.url.render_as_string(hide_password=False),
                host=host,
                start=start,
                end=end,
                contamination=body.contamination,
                n_estimators=body.n_estimators,
                active_blob=active_blob,
                synthetic_seed=synthetic_seed,
                consecutive=self.settings.anomaly_consecutive,
            ),
        )
        activate, reason = activation_decision(
            outcome.quality, outcome.active_quality, force=body.force
        )
        outcome.metrics["activation"] = {"activated": activate, "reason": reason}
        async with self._lock:
            async with self.engine.begin() as conn:
                model = await registry.insert_model(
                    conn,
                    name=MODEL_NAME,
                    model_type=MODEL_TYPE,
                    artifact=outcome.artifact,
                    artifact_format=ARTIFACT_FORMAT,
                    parameters={**outcome.parameters, "host": host},
                    metrics=outcome.metrics,
                    training_start=outcome.training_start,
                    training_end=outcome.training_end,
                    sample_count=outcome.sample_count,
                )
                if activate:
                    if self.cursor is None and active is None:
                        self.cursor = await self._initial_cursor(conn)
                    model = await registry.activate(conn, model.id)
                    loaded = await self._load(conn, model)
            if activate:
                self._swap(loaded)
        return {
            "model": model,
            "activated": activate,
            "reason": reason,
            "previous_model_id": active.model_id if active else None,
            "evaluation": outcome.evaluation,
            "synthetic_generated": generated,
            "seconds": time.perf_counter() - started,
        }

    async def activate(self, model_id: int) -> dict[str, Any]:
        """Make a stored version active (rollback); refuses one whose artifact fails its check."""
        async with self._lock:
            previous = self.active.model_id if self.active else None
            async with self.engine.begin() as conn:
                model = await registry.get_model(conn, model_id)
                if model.name != MODEL_NAME:
                    raise Conflict(f"model {model_id} is a {model.name}, not an anomaly detector")
                loaded = await self._load(conn, model)
                if self.cursor is None and previous is None:
                    self.cursor = await self._initial_cursor(conn)
                model = await registry.activate(conn, model_id)
            self._swap(loaded)
        return {"model": model, "previous_model_id": previous}

    # -- real-time scoring ---------------------------------------------------------

    async def _history_for(self, host: str, active: ActiveModel) -> RecentHistory:
        history = self.predict_histories.get(host)
        if history is None:
            async with self.engine.connect() as conn:
                rows = await repo.recent_samples(
                    conn, host=host, limit=active.detector.history_samples
                )
            history = _seeded(active.detector, rows)
            if self.active is active:
                history = self.predict_histories.setdefault(host, history)
        return history

    async def predict(
        self, values: dict[str, float], *, host: str | None, timestamp: datetime | None
    ) -> dict[str, Any]:
        active = self.require_active()
        det = active.detector
        host = host or self.settings.hostname
        ts = utc(timestamp) if timestamp else utcnow()
        history = await self._history_for(host, active)
        epoch = ts.timestamp()
        times, _ = history.arrays()
        if not len(times):
            _seed_with_medians(history, epoch)
            times, _ = history.arrays()
        if len(times) and epoch < times[-1]:
            history = history.copy_until(epoch)  # late sample: score it, do not keep it
        result = det.score_sample(values, timestamp=epoch, history=history, top_k=3)
        top = contribution_dicts(result.contributions)
        answer = {
            "score": result.score,
            "is_anomaly": result.is_anomaly,
            "severity": result.severity,
            "threshold": result.threshold,
            "model_id": active.model_id,
            "model_version": active.version,
            "host": host,
            "timestamp": ts,
            "filled_metrics": [m for m in det.metrics if m not in values],
            "top_metrics": top,
        }
        self._queue_write(
            {
                "metrics_id": None,
                "model_id": active.model_id,
                "timestamp": ts,
                "host": host,
                "score": result.score,
                "raw_score": None,
                "threshold": result.threshold,
                "is_anomaly": result.is_anomaly,
                "severity": result.severity,
                "contributions": top,
            }
        )
        return answer

    def _queue_write(self, row: dict[str, Any]) -> None:
        if len(self.pending) >= MAX_PENDING_WRITES:
            del self.pending[0]
            self.dropped_writes += 1
        self.pending.append(row)

    async def flush(self) -> int:
        rows, self.pending = self.pending, []
        if rows:
            async with self.engine.begin() as conn:
                await repo.insert_scores(conn, rows)
        return len(rows)

    async def _writer_loop(self) -> None:
        while True:
            await asyncio.sleep(WRITE_INTERVAL)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - keep the loop alive
                log.warning("could not store predictions: %s", exc)

    # -- threshold feedback --------------------------------------------------------

    async def feedback(self, score_id: int, kind: str) -> dict[str, Any]:
        async with self._lock:
            active = self.require_active()
            det = active.detector
            async with self.engine.begin() as conn:
                row = await repo.get_score(conn, score_id)
                model = await registry.get_model(conn, active.model_id)
                before = det.threshold
                det.adjust_threshold(kind, float(row["score"]))  # type: ignore[arg-type]
                after = det.threshold
                try:
                    now = utcnow()
                    metrics = dict(model.metrics)
                    history = list(metrics.get("threshold_history", []))
                    history.append(
                        {
                            "at": now.isoformat(),
                            "score_id": score_id,
                            "feedback": kind,
                            "score": float(row["score"]),
                            "before": before,
                            "after": after,
                        }
                    )
                    metrics["threshold_history"] = history
                    metrics["threshold"] = after
                    await registry.update_metrics(conn, active.model_id, metrics)
                    await repo.set_feedback(conn, score_id, feedback=kind, at=now)
                except BaseException:
                    det.threshold = before
                    raise
        return {
            "score_id": score_id,
            "feedback": kind,
            "score": float(row["score"]),
            "model_id": active.model_id,
            "threshold_before": before,
            "threshold_after": after,
        }

    # -- scoring loop --------------------------------------------------------------

    async def _initial_cursor(self, conn: AsyncConnection) -> int:
        """Where scoring starts: after the last scored sample, else after every stored one
        (samples stored before the first model existed are not scored)."""
        last = await repo.last_scored_sample_id(conn)
        return last if last is not None else await repo.max_sample_id(conn)

    async def _scoring_loop(self) -> None:
        while True:
            try:
                await self._refresh_active()
                while await self.score_pending() >= SCORING_BATCH:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep scoring on the next pass
                log.warning("scoring pass failed: %s", exc)
            await asyncio.sleep(self.settings.scoring_interval)

    async def _refresh_active(self) -> None:
        """Pick up a version activated by another process (one indexed query)."""
        async with self.engine.connect() as conn:
            model = await registry.active_model(conn, name=MODEL_NAME)
            current = self.active.model_id if self.active else None
            if (model.id if model else None) != current:
                async with self._lock:
                    await self._load_active(conn)

    async def score_pending(self) -> int:
        """Score the samples stored since the last pass; returns how many."""
        active = self.active
        if active is None:
            return 0
        async with self.engine.connect() as conn:
            if self.cursor is None:
                self.cursor = await self._initial_cursor(conn)
            rows = await repo.samples_after(conn, self.cursor, SCORING_BATCH)
            if not rows:
                return 0
            by_host: dict[str, list[Row]] = {}
            for r in rows:
                by_host.setdefault(str(r[2]), []).append(r)
            for host, host_rows in by_host.items():
                hist = self.loop_histories.get(host)
                first_ts = utc(host_rows[0][1]).timestamp()
                if hist is not None and len(hist) and hist.arrays()[0][-1] > first_ts:
                    hist = None  # out of order (a backfill): rebuild from the database
                if hist is None:
                    before = await repo.recent_samples(
                        conn,
                        host=host,
                        limit=active.detector.history_samples,
                        max_id=self.cursor,
                    )
                    hist = _seeded(
                        active.detector, [b for b in before if utc(b[1]).timestamp() <= first_ts]
                    )
                    self.loop_histories[host] = hist
        cursor = int(rows[-1][0])
        scored = await asyncio.to_thread(
            _score_batch, active.detector, self.loop_histories, by_host
        )
        if self.active is not active:
            return len(rows)  # the model changed meanwhile: histories were reset; rescore
        records: list[dict[str, Any]] = []
        actions: list[IncidentAction] = []
        stale_before = (utcnow() - self.stale_after).timestamp()
        for host, items in scored.items():
            tracker = self.trackers.setdefault(host, HostTracker())
            for row, score, flag, sev, top in items:
                ts = utc(row[1])
                records.append(
                    {
                        "metrics_id": int(row[0]),
                        "model_id": active.model_id,
                        "timestamp": ts,
                        "host": host,
                        "score": score,
                        "raw_score": None,
                        "threshold": active.detector.threshold,
                        "is_anomaly": flag,
                        "severity": sev,
                        "contributions": top,
                    }
                )
                action = self._track(
                    tracker,
                    host,
                    ts,
                    score,
                    flag,
                    sev,
                    top,
                    active,
                    live=ts.timestamp() >= stale_before,
                )
                if action is not None:
                    actions.append(action)
            predict_hist = self.predict_histories.get(host)
            if predict_hist is not None:
                _extend(predict_hist, [item[0] for item in items])
        notify: list[dict[str, Any]] = []
        async with self.engine.begin() as conn:
            await repo.insert_scores(conn, records)
            for action in actions:
                incident = await self._apply(conn, action)
                if incident is not None:
                    notify.append(incident)
        self.cursor = cursor
        self.scored += len(records)
        for incident in notify:
            self.notifier.notify(incident)
        return len(rows)

    def _track(
        self,
        tracker: HostTracker,
        host: str,
        ts: datetime,
        score: float,
        flag: bool,
        sev: str,
        top: list[dict[str, Any]],
        active: ActiveModel,
        *,
        live: bool,
    ) -> IncidentAction | None:
        n = self.settings.anomaly_consecutive
        tracker.recent.append((ts.isoformat(), round(score, 6)))
        if flag:
            tracker.above += 1
            tracker.below = 0
            tracker.worst = max(tracker.worst, sev, key=severity_rank)
            opening = tracker.above == n
            worse = tracker.raised is not None and severity_rank(tracker.worst) > severity_rank(
                tracker.raised
            )
            if live and tracker.above >= n and (opening or worse):
                tracker.raised = tracker.worst
                names = ", ".join(c["metric"] for c in top)
                return IncidentAction(
                    kind="raise",
                    host=host,
                    severity=tracker.worst,
                    title=f"Anomalous behaviour on {host} ({names})",
                    description=(
                        f"{tracker.above} consecutive samples above the anomaly threshold "
                        f"{active.detector.threshold:.4f}; latest score {score:.4f}."
                    ),
                    details={
                        "model_id": active.model_id,
                        "model_version": active.version,
                        "threshold": active.detector.threshold,
                        "score": score,
                        "consecutive": tracker.above,
                        "top_metrics": top,
                        "scores": [{"timestamp": t, "score": s} for t, s in tracker.recent],
                    },
                )
            return None
        tracker.below += 1
        if tracker.above:
            tracker.above = 0
            tracker.worst = "low"
        if tracker.below == n and live:
            tracker.raised = None
            return IncidentAction(kind="resolve", host=host)
        return None

    async def _apply(self, conn: AsyncConnection, action: IncidentAction) -> dict[str, Any] | None:
        key = f"ML_ANOMALY:{action.host}"
        if action.kind == "resolve":
            return await incidents.resolve_incident(
                conn,
                dedup_key=key,
                reason=f"{self.settings.anomaly_consecutive} consecutive normal samples",
            )
        incident, _change = await incidents.raise_incident(
            conn,
            type="ML_ANOMALY",
            host=action.host,
            dedup_key=key,
            severity=action.severity,
            title=action.title,
            description=action.description,
            details=action.details,
            cooldown_minutes=self.settings.incident_cooldown_minutes,
        )
        return incident

    def status(self) -> dict[str, Any]:
        return {
            "active_model_id": self.active.model_id if self.active else None,
            "training": self.training,
            "scored": self.scored,
            "pending_writes": len(self.pending),
            "dropped_writes": self.dropped_writes,
        }


def _row_arrays(rows: Sequence[Row], metrics: Sequence[str]) -> tuple[FloatArray, FloatArray]:
    """Epoch seconds and metric values (NaN = missing) of repository rows."""
    cols = [_METRIC_INDEX[m] for m in metrics]
    times = epoch_seconds([utc(r[1]) for r in rows])
    values = np.array(
        [[np.nan if r[c] is None else float(r[c]) for c in cols] for r in rows],
        dtype=np.float64,
    ).reshape(len(rows), len(cols))
    return times, values


def _seeded(det: AnomalyDetector, rows: Sequence[Row]) -> RecentHistory:
    """A new history of a host filled from its stored samples (repository order: by time)."""
    history = det.new_history()
    if rows:
        times, values = _row_arrays(rows, det.metrics)
        order = np.argsort(times, kind="stable")
        det.seed_history(history, times[order], values[order])
    return history


def _extend(history: RecentHistory, rows: Sequence[Row]) -> None:
    """Append sample rows (repository order) to a history, skipping any out of time order."""
    if not rows:
        return
    times, values = _row_arrays(rows[-history.capacity :], history.extractor.metrics)
    for row, t in zip(values, times, strict=True):
        last = history.arrays()[0]
        if len(last) and t < last[-1]:
            continue
        history.append_array(row, float(t))


def _seed_with_medians(history: RecentHistory, epoch: float) -> None:
    """A host with no samples yet: assume it was at the training medians for the look-back,
    so a first sample far from normal shows as the level shift it is, not as a flat line."""
    fx = history.extractor
    step = fx.config.interval_s
    for k in range(fx.config.lookback + 1, 0, -1):
        history.append_array(fx.medians.copy(), epoch - k * step)


def _score_batch(
    det: AnomalyDetector,
    histories: dict[str, RecentHistory],
    by_host: dict[str, list[Row]],
) -> dict[str, list[tuple[Row, float, bool, Severity, list[dict[str, Any]]]]]:
    """Score each host's new rows after its history (batch = online), then extend it."""
    out: dict[str, list[tuple[Row, float, bool, Severity, list[dict[str, Any]]]]] = {}
    for host, rows in by_host.items():
        rows = sorted(rows, key=lambda r: (utc(r[1]), r[0]))
        hist = histories[host]
        h_times, h_values = hist.arrays()
        new_times, new_values = _row_arrays(rows, det.metrics)
        times = np.concatenate([h_times, new_times])
        values = np.vstack([h_values, new_values])
        feats = det.extractor.transform_arrays(times, values.copy())
        k = len(h_times)
        # Rows buffered but never scored (none in the loop's own histories) fold in too.
        batch = det.score_features(feats, memory=hist.memory, start=k - hist.unfolded)
        tail = _rows(feats, slice(k, None))
        items = []
        for i, r in enumerate(rows):
            score = float(batch.score[k + i])
            top = contribution_dicts(det.contributions(tail, i, top_k=3))
            items.append((r, score, score >= det.threshold, severity(score), top))
        for i in range(len(rows)):
            hist.append_array(new_values[i], float(new_times[i]))
        hist.unfolded = 0
        hist.scores()[-len(rows) :] = -batch.forest_score[k:][-hist.capacity :]
        out[host] = items
    return out
