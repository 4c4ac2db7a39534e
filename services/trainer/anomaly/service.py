"""Anomaly detection in the trainer: training runs, activation, real-time scoring, feedback.

Usage (lifespan): ``svc = AnomalyService(settings, engine, notifier, training_pool=pool,
threads=threads); await svc.start(); app.state.loops += svc.loops; ...; await svc.stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import artifact
from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.explain import contribution_dicts
from services.trainer.anomaly.feedback import give_feedback, list_thresholds
from services.trainer.anomaly.forest import ScoringThreads
from services.trainer.anomaly.history import RecentHistory
from services.trainer.anomaly.scoring import ScoreWriter, ScoringLoop, threshold_in_force
from services.trainer.anomaly.threshold import Feedback
from services.trainer.anomaly.training import (
    MODEL_NAME,
    MODEL_TYPE,
    TrainingOutcome,
    activation_decision,
)
from services.trainer.anomaly.worker import TrainingJob, train_in_worker
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared import registry
from shared.active_model import ActiveModel, ActiveModelHolder, Scope
from shared.clock import utc, utcnow
from shared.errors import Conflict
from shared.incidents.notifier import Notifier
from shared.loops import BackgroundLoop
from shared.schemas.anomaly import (
    ActivateResponse,
    AnomalyScoreList,
    AnomalyScoreQuery,
    FeedbackResponse,
    HostThresholdList,
    TrainAnomalyRequest,
    TrainAnomalyResponse,
)
from shared.schemas.health import ScoringHealth
from shared.settings import Settings
from shared.severity import Severity
from shared.workers import run_in

log = logging.getLogger("autofix_ml.anomaly")

MIN_HISTORY_SAMPLES = 3 * 1440
SYNTHETIC_DAYS = 30
SYNTHETIC_HOST = "synthetic"
NO_MODEL_HINT = (
    "no anomaly detector is trained yet: POST /api/ml/train/anomaly-detector "
    '(e.g. {"use_synthetic": true}) first'
)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer of ``POST /predict/anomaly`` (``PredictResponse``), serialised as it is."""

    score: float
    is_anomaly: bool
    severity: Severity
    threshold: float
    model_id: int
    model_version: int
    host: str
    timestamp: datetime
    filled_metrics: list[str]
    top_metrics: list[dict[str, Any]]


class AnomalyService:
    """The active detector of the trainer and everything done with it."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        notifier: Notifier,
        *,
        training_pool: Executor,
        threads: ScoringThreads | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.training_pool = training_pool
        self.training = False
        self.models = ActiveModelHolder(
            MODEL_NAME, partial(artifact.load, threads=threads), on_change=self._model_changed
        )
        self.predict_histories: dict[str, RecentHistory] = {}
        self._lock = asyncio.Lock()  # model swaps and threshold feedback
        self.writer = ScoreWriter(engine)
        self.scoring = ScoringLoop(
            settings=settings,
            engine=engine,
            notifier=notifier,
            models=self.models,
            lock=self._lock,
            predict_histories=self.predict_histories,
        )
        self.loops: list[BackgroundLoop] = [self.scoring.loop, self.writer.loop]

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Load the active version (if any) and start the scoring and writer loops."""
        try:
            async with self.engine.connect() as conn:
                await self.models.refresh(conn)
        except Exception as exc:  # noqa: BLE001 - the service runs without a model
            log.error("could not load the active anomaly model: %s", exc)
        for loop in self.loops:
            loop.start()

    async def stop(self) -> None:
        for loop in self.loops:
            await loop.stop()
        with contextlib.suppress(Exception):
            await self.writer.flush()

    def _model_changed(self, _scope: Scope) -> None:
        # Histories are bound to a model's metrics and medians: rebuild them lazily.
        self.predict_histories.clear()
        self.scoring.histories.clear()

    # -- training and activation ---------------------------------------------------

    async def train(self, body: TrainAnomalyRequest) -> TrainAnomalyResponse:
        if self.training:
            raise Conflict("an anomaly detector is already training; try again when it is done")
        self.training = True
        try:
            return await self._train(body)
        finally:
            self.training = False

    async def _train(self, body: TrainAnomalyRequest) -> TrainAnomalyResponse:
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
        active = self.models.get()
        active_artifact: tuple[bytes, str] | None = None
        if active is not None:
            async with self.engine.connect() as conn:
                blob, _fmt, sha = await registry.load_artifact(conn, active.id)
            active_artifact = (blob, sha)
        job = TrainingJob(
            database_url=self.engine.url.render_as_string(hide_password=False),
            host=host,
            start=start,
            end=end,
            contamination=body.contamination,
            n_estimators=body.n_estimators,
            active_artifact=active_artifact,
            synthetic_seed=synthetic_seed,
            consecutive=self.settings.anomaly_consecutive,
        )
        outcome: TrainingOutcome = await run_in(self.training_pool, train_in_worker, job)
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
                    artifact_format=artifact.ARTIFACT_FORMAT,
                    parameters={**outcome.parameters, "host": host},
                    metrics=outcome.metrics,
                    training_start=outcome.training_start,
                    training_end=outcome.training_end,
                    sample_count=outcome.sample_count,
                )
                if activate:
                    if active is None:
                        await self.scoring.start_cursor(conn)
                    model = await registry.activate(conn, model.id)
                    loaded = await self.models.load(conn, model)
            if activate:
                self.models.put(loaded)
        return TrainAnomalyResponse(
            model=model,
            activated=activate,
            reason=reason,
            previous_model_id=active.id if active else None,
            evaluation=outcome.evaluation,
            synthetic_generated=generated,
            seconds=time.perf_counter() - started,
        )

    async def activate(self, model_id: int) -> ActivateResponse:
        """Make a stored version active (rollback); refuses one whose artifact fails its check."""
        async with self._lock:
            previous = self.models.get()
            async with self.engine.begin() as conn:
                model = await registry.get_model(conn, model_id)
                if model.name != MODEL_NAME:
                    raise Conflict(f"model {model_id} is a {model.name}, not an anomaly detector")
                loaded = await self.models.load(conn, model)
                if previous is None:
                    await self.scoring.start_cursor(conn)
                model = await registry.activate(conn, model_id)
            self.models.put(ActiveModel(loaded.model, model))
        return ActivateResponse(model=model, previous_model_id=previous.id if previous else None)

    # -- real-time scoring ---------------------------------------------------------

    async def predict(
        self, values: dict[str, float], *, host: str | None, timestamp: datetime | None
    ) -> Prediction:
        """Score one posted sample against its host's recent history; its score is stored."""
        active = self.models.require(NO_MODEL_HINT)
        det = active.model
        threshold = threshold_in_force(active)
        host = host or self.settings.hostname
        ts = utc(timestamp) if timestamp else utcnow()
        history = await self._history_for(host, active)
        epoch = ts.timestamp()
        times, _ = history.arrays()
        if not len(times):
            history.seed_with_medians(epoch)
            times, _ = history.arrays()
        if len(times) and epoch < times[-1]:
            history = history.copy_until(epoch)  # late sample: score it, do not keep it
        result = det.score_sample(
            values, timestamp=epoch, history=history, threshold=threshold, top_k=3
        )
        top = contribution_dicts(result.contributions)
        self.writer.queue(
            repo.score_record(
                metrics_id=None,
                model_id=active.id,
                timestamp=ts,
                host=host,
                score=result.score,
                threshold=result.threshold,
                is_anomaly=result.is_anomaly,
                severity=result.severity,
                contributions=top,
            )
        )
        return Prediction(
            score=result.score,
            is_anomaly=result.is_anomaly,
            severity=result.severity,
            threshold=result.threshold,
            model_id=active.id,
            model_version=active.version,
            host=host,
            timestamp=ts,
            filled_metrics=[m for m in det.metrics if m not in values],
            top_metrics=top,
        )

    async def _history_for(self, host: str, active: ActiveModel[AnomalyDetector]) -> RecentHistory:
        history = self.predict_histories.get(host)
        if history is None:
            det = active.model
            async with self.engine.connect() as conn:
                rows = await repo.recent_samples(conn, host=host, limit=det.history_samples)
            history = det.seeded_history(*repo.sample_arrays(rows, det.metrics))
            current = self.models.get()
            if current is not None and current.model is det:
                history = self.predict_histories.setdefault(host, history)
        return history

    async def list_scores(self, query: AnomalyScoreQuery) -> AnomalyScoreList:
        async with self.engine.connect() as conn:
            scores = await repo.list_scores(conn, query)
        return AnomalyScoreList(scores=scores, count=len(scores))

    async def scoring_health(self) -> ScoringHealth:
        """How far the scoring loop trails the stored samples."""
        async with self.engine.connect() as conn:
            sample, scored = await repo.scoring_progress(conn)
        lag = None
        if sample is not None and scored is not None:
            lag = max(0.0, (sample - scored).total_seconds())
        return ScoringHealth(
            newest_sample_at=sample,
            newest_scored_at=scored,
            lag_seconds=lag,
            lag_limit_seconds=self.settings.scoring_lag_limit,
        )

    # -- threshold feedback ---------------------------------------------------------

    async def feedback(self, score_id: int, kind: Feedback) -> FeedbackResponse:
        """One verdict per score; moves that host's own threshold (``feedback.give_feedback``)."""
        return await give_feedback(self.engine, self.settings, score_id, kind)

    async def thresholds(self, host: str | None) -> HostThresholdList:
        return await list_thresholds(self.engine, self.settings, host)
