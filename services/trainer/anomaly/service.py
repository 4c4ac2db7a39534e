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
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.trainer.anomaly import artifact
from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.feedback import give_feedback, list_thresholds
from services.trainer.anomaly.forest import ScoringThreads
from services.trainer.anomaly.forests import (
    AUTO_CONTAMINATION,
    AUTO_ESTIMATORS,
    INCIDENT_BUDGET,
    ForestScheduler,
)
from services.trainer.anomaly.history import RecentHistory
from services.trainer.anomaly.predict import Prediction, Predictor
from services.trainer.anomaly.scoring import (
    SYNTHETIC_HOST,
    ScoreWriter,
    ScoringLoop,
)
from services.trainer.anomaly.threshold import Feedback
from services.trainer.anomaly.training import (
    MODEL_NAME,
    MODEL_TYPE,
    TrainingOutcome,
    activation_decision,
)
from services.trainer.anomaly.worker import TrainingJob, train_in_worker
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.service import HOST_LOCKS, store
from shared import events as observe
from shared import registry
from shared.active_model import (
    ActiveModel,
    ActiveModelHolder,
    Scope,
    load_then_start,
    stop_loops,
    store_version,
)
from shared.db import write_transaction
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
from shared.workers import TRAINING_SLACK, give_up_after, run_in

log = logging.getLogger("autofix_ml.anomaly")

MIN_HISTORY_SAMPLES = 3 * 1440
SYNTHETIC_DAYS = 30


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
        self.writer = ScoreWriter(engine, capacity=settings.write_queue_size)
        self.scoring = ScoringLoop(
            settings=settings,
            engine=engine,
            notifier=notifier,
            models=self.models,
            lock=self._lock,
            predict_histories=self.predict_histories,
        )
        self.predictor = Predictor(
            settings, engine, self.models, self.scoring, self.writer, self.predict_histories
        )
        self.forests = ForestScheduler(
            settings, engine, self.models, train=self.train_host, busy=lambda: self.training
        )
        self.loops: list[BackgroundLoop] = [
            self.scoring.loop,
            self.writer.loop,
            self.forests.loop,
        ]

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Load the active version (if any) and start the scoring and writer loops."""
        await load_then_start(self.engine, self.models, self.loops)

    async def stop(self) -> None:
        await stop_loops(self.loops)
        with contextlib.suppress(Exception):
            await self.predictor.close()
        with contextlib.suppress(Exception):
            await self.writer.flush()
        try:
            await self.scoring.flush_states()
        except Exception as exc:  # noqa: BLE001 - shutting down; the last pass saved them
            log.error("could not save the detector states at shutdown: %s", exc)

    def _model_changed(self, scope: Scope) -> None:
        # A host's histories are bound to its forest's metrics and medians: rebuild them lazily.
        host = scope[0]
        if host is not None:
            self.predict_histories.pop(host, None)
            self.scoring.forest_histories.pop(host, None)

    # -- training and activation ---------------------------------------------------

    async def train_host(self, host: str) -> TrainAnomalyResponse:
        """Train a host's forest on its own history (the automatic schedule): its threshold
        from its own false-incident rate (``budget.choose_contamination``)."""
        body = TrainAnomalyRequest(
            host=host, contamination=AUTO_CONTAMINATION, n_estimators=AUTO_ESTIMATORS
        )
        return await self.train(body, incident_budget=INCIDENT_BUDGET)

    async def train(
        self, body: TrainAnomalyRequest, *, incident_budget: float | None = None
    ) -> TrainAnomalyResponse:
        if self.training:
            raise Conflict("an anomaly detector is already training; try again when it is done")
        self.training = True
        try:
            # Bounded as a whole (the training process has its own timeout), so that a step
            # that never returns cannot leave "already training" for good.
            async with give_up_after(
                self.settings.training_timeout + TRAINING_SLACK, "the anomaly detector training"
            ):
                return await self._train(body, incident_budget)
        finally:
            self.training = False

    async def _train(
        self, body: TrainAnomalyRequest, incident_budget: float | None
    ) -> TrainAnomalyResponse:
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
                    + f"; a host is trained on at least {MIN_HISTORY_SAMPLES} of its own samples "
                    "(3 days at one a minute): collect more. use_synthetic=true does not add to "
                    f"them: it trains the host {SYNTHETIC_HOST!r} on a generated month instead."
                )
            gen = SyntheticDataGenerator(seed=body.seed)
            frame = await asyncio.to_thread(gen.generate_full_training_set, SYNTHETIC_DAYS)
            async with HOST_LOCKS.hold(SYNTHETIC_HOST):
                generated = await store(self.engine, frame, host=SYNTHETIC_HOST)
            host, start, end = SYNTHETIC_HOST, None, None
            synthetic_seed = body.seed
        assert host is not None
        threshold = self.settings.anomaly_threshold
        if incident_budget is not None:
            async with self.engine.connect() as conn:
                threshold = (await repo.host_thresholds(conn)).get(host, threshold)
        active = self.models.get(host=host)  # versions compete within their host only
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
            incident_budget=incident_budget,
            threshold=threshold,
        )
        outcome: TrainingOutcome = await run_in(self.training_pool, train_in_worker, job)
        activate, reason = activation_decision(
            outcome.quality, outcome.active_quality, force=body.force
        )
        outcome.metrics["activation"] = {"activated": activate, "reason": reason}
        async with self._lock:
            model = await store_version(
                self.engine,
                self.models,
                outcome,
                model_type=MODEL_TYPE,
                artifact_format=artifact.ARTIFACT_FORMAT,
                host=host,
                activate=activate,
                reason=reason,
                started=started,
                previous=active.record if active else None,
            )
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
        # Read and verify the artifact first, outside the write (a decode takes a while; on
        # SQLite other writers wait for a write transaction).
        async with self.engine.connect() as conn:
            model = await registry.get_model(conn, model_id)
            if model.name != MODEL_NAME:
                raise Conflict(f"model {model_id} is a {model.name}, not an anomaly detector")
            loaded = await self.models.load(conn, model)
        async with self._lock:
            previous = self.models.get(host=model.host)
            async with write_transaction(self.engine) as conn:
                model = await registry.activate(conn, model_id)
            self.models.put(ActiveModel(loaded.model, model))
        observe.model_activated(
            model, reason="by hand", previous=previous.record if previous else None
        )
        return ActivateResponse(model=model, previous_model_id=previous.id if previous else None)

    # -- real-time scoring ---------------------------------------------------------

    async def predict(
        self, values: dict[str, float], *, host: str | None, timestamp: datetime | None
    ) -> Prediction:
        return await self.predictor.predict(values, host=host, timestamp=timestamp)

    async def list_scores(self, query: AnomalyScoreQuery) -> AnomalyScoreList:
        async with self.engine.connect() as conn:
            scores = await repo.list_scores(conn, query)
        return AnomalyScoreList(scores=scores, count=len(scores))

    async def scoring_health(self, conn: AsyncConnection | None = None) -> ScoringHealth:
        """How far the scoring loop trails the stored samples (on ``conn``, else a new one)."""
        if conn is None:
            async with self.engine.connect() as own:
                sample, scored = await repo.scoring_progress(own)
        else:
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
