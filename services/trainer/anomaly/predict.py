"""``POST /predict/anomaly``: one posted sample scored by a host's detectors, changing nothing.

Usage: ``await Predictor(settings, engine, models, scoring, writer, histories).predict(values,
host="web-1", timestamp=None)``. Without a host, the host whose forest was trained last scores
it. Missing metrics are filled from that host's newest sample if it is at most
``FILL_INTERVALS`` collection intervals old, else scored as missing (docs/anomaly-detection.md).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.history import RecentHistory
from services.trainer.anomaly.hostscore import combine, reading_dicts
from services.trainer.anomaly.peek import score_next
from services.trainer.anomaly.repository import SAMPLE_COLUMNS, TIMESTAMP
from services.trainer.anomaly.repository_predict import PredictReader
from services.trainer.anomaly.scoring import ScoreWriter, ScoringLoop, threshold_in_force
from services.trainer.anomaly.threshold import host_severity
from shared.active_model import ActiveModel, ActiveModelHolder
from shared.catalogue import METRIC_NAMES
from shared.clock import utc, utcnow
from shared.errors import Conflict
from shared.settings import Settings
from shared.severity import Severity

_METRIC_COLUMNS = [[c.name for c in SAMPLE_COLUMNS].index(m) for m in METRIC_NAMES]
FILL_INTERVALS = 3  # missing metrics are filled from a sample at most this many intervals old
NO_MODEL_HINT = (
    "no anomaly detector is trained yet: POST /api/ml/train/anomaly-detector "
    '(e.g. {"use_synthetic": true}) first, or name a host'
)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer of ``POST /predict/anomaly`` (``PredictResponse``), serialised as it is."""

    score: float
    is_anomaly: bool
    severity: Severity
    threshold: float
    host: str
    models: dict[str, Any]
    model_id: int | None
    model_version: int | None
    per_metric_score: float
    forest_score: float | None
    forest_threshold: float | None
    learning: bool
    timestamp: datetime
    filled_metrics: list[str]
    filled_from: datetime | None
    missing_metrics: list[str]
    top_metrics: list[dict[str, Any]]


class Predictor:
    """Scores posted samples; holds each host's forest history for it (extended by scoring)."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        models: ActiveModelHolder[AnomalyDetector],
        scoring: ScoringLoop,
        writer: ScoreWriter,
        histories: dict[str, RecentHistory],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.models = models
        self.scoring = scoring
        self.writer = writer
        self.histories = histories
        # The hot read goes to one connection kept for it (``PredictReader``). Loading a host's
        # state from the database (evicted, or not built yet) takes a pooled connection: at
        # most this many at once, leaving two for the loops; past them the pool would open and
        # close an overflow connection per request (on SQLite a thread and four PRAGMAs each).
        kept = getattr(engine.pool, "size", None)
        self._reads = asyncio.Semaphore(max(1, kept() - 2) if callable(kept) else 8)
        self.reader = PredictReader(engine)

    async def close(self) -> None:
        """Give back the connection kept for the reads (at the service's stop)."""
        await self.reader.close()

    async def predict(
        self, values: dict[str, float], *, host: str | None, timestamp: datetime | None
    ) -> Prediction:
        """Score one posted sample with a host's detectors without changing them; stored."""
        active = self.models.get(host=host) if host is not None else self._latest_forest()
        if host is None:
            if active is None:
                raise Conflict(NO_MODEL_HINT)
            host = str(active.record.host)
        ts = utc(timestamp) if timestamp else utcnow()
        epoch = ts.timestamp()
        window = timedelta(seconds=FILL_INTERVALS * self.settings.collection_interval)
        fresh, own = await self.reader.read(host=host, not_before=ts - window, not_after=ts)
        stream = self.scoring.streams.get(host)
        history = self.histories.get(host) if active else None
        if stream is None or (active is not None and history is None):
            # Not in memory (a host evicted, a history not built yet): from the database.
            async with self._reads, self.engine.connect() as conn:
                stream = stream or await self.scoring.stream_for(conn, host)
                if active is not None and history is None:
                    history = await self._history_for(conn, host, active)
        if (
            stream is not None
            and fresh is not None
            and utc(fresh[TIMESTAMP]).timestamp() - stream.last_ts > self.settings.scoring_lag_limit
        ):
            # The scoring loop is still learning the host's stored samples (a history just
            # generated or imported): its per-metric state is from another time. Not used.
            stream = None
        sample: dict[str, float] = dict(values)
        filled_from = None
        if fresh is not None:
            for name, column in zip(METRIC_NAMES, _METRIC_COLUMNS, strict=True):
                stored = fresh[column]
                if name not in sample and stored is not None and math.isfinite(stored):
                    sample[name] = float(stored)
                    filled_from = utc(fresh[TIMESTAMP])
        reading = None
        if stream is not None:
            with stream.lock:  # the scoring loop's thread may be updating it
                at = epoch if np.isnan(stream.last_ts) else max(epoch, stream.last_ts + 1.0)
                reading = stream.score(at, sample)
        threshold = own if own is not None else self.settings.anomaly_threshold
        forest_score, forest_threshold = None, 1.0
        if active is not None and history is not None:
            det = active.model
            forest_threshold = threshold_in_force(active)
            # Predicting never changes the history's samples. Settling the history (folds,
            # cached forest scores, the hour's shift reference) is done once, not on every
            # request, and changes no answer.
            medians = det.training_medians
            row_of = {m: sample.get(m, medians[m]) for m in det.metrics}
            times = history.arrays()[0]
            if len(times) and epoch >= times[-1]:
                # The usual case, a sample after the newest one: scored on the history
                # itself, which stays as it is (``peek.score_next``).
                det.settle(history, at=epoch)
                row = np.fromiter(row_of.values(), dtype=np.float64, count=len(row_of))
                forest_score = score_next(det, history, row, epoch)
            else:
                h = history.copy_until(epoch) if len(times) else history.copy()
                if not len(h):
                    h.seed_with_medians(epoch)
                forest_score = det.score_sample(
                    row_of,
                    timestamp=max(epoch, float(h.arrays()[0][-1])),
                    history=h,
                    threshold=forest_threshold,
                ).score
        if forest_score is not None and math.isnan(forest_score):
            forest_score = None  # a gap before the sample: the forest abstains
        stream_score = reading.score if reading is not None else 0.0
        score = combine(stream_score, forest_score, forest_threshold, threshold)
        top = reading_dicts(reading.metrics) if reading is not None else []
        model_id = active.id if active else None
        model_version = active.version if active else None
        self.writer.queue(
            repo.score_record(
                metrics_id=None,
                model_id=model_id,
                timestamp=ts,
                host=host,
                score=score,
                threshold=threshold,
                is_anomaly=score >= threshold,
                severity=host_severity(score, threshold, step=self.settings.anomaly_severity_step),
                contributions=top,
            )
        )
        return Prediction(
            score=score,
            is_anomaly=score >= threshold,
            severity=host_severity(score, threshold, step=self.settings.anomaly_severity_step),
            threshold=threshold,
            host=host,
            models={
                "per_metric": stream is not None,
                "forest_model_id": model_id,
                "forest_model_version": model_version,
            },
            model_id=model_id,
            model_version=model_version,
            per_metric_score=stream_score,
            forest_score=forest_score,
            forest_threshold=forest_threshold if active is not None else None,
            learning=reading is None or all(m.learning for m in reading.metrics),
            timestamp=ts,
            filled_metrics=[m for m in METRIC_NAMES if m in sample and m not in values],
            filled_from=filled_from,
            missing_metrics=[m for m in METRIC_NAMES if m not in sample],
            top_metrics=top,
        )

    def _latest_forest(self) -> ActiveModel[AnomalyDetector] | None:
        """The forest trained last, of any host (a legacy version of no host never scores)."""
        held = [a for a in self.models.all() if a.record.host is not None]
        return max(held, key=lambda a: (a.record.created_at, a.id), default=None)

    async def _history_for(
        self, conn: AsyncConnection, host: str, active: ActiveModel[AnomalyDetector]
    ) -> RecentHistory:
        history = self.histories.get(host)
        if history is None:
            det = active.model
            rows = await repo.recent_samples(conn, host=host, limit=det.history_samples)
            history = det.seeded_history(*repo.sample_arrays(rows, det.metrics))
            current = self.models.get(host=host)
            if current is not None and current.model is det:
                history = self.histories.setdefault(host, history)
        return history
