"""The trainer service: synthetic data, the model registry, anomaly detection, failure
prediction and incidents."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.analysis.endpoints import router as analysis_router
from services.trainer.analysis.service import AnalysisService
from services.trainer.anomaly.endpoints import router as anomaly_router
from services.trainer.anomaly.forest import ScoringThreads
from services.trainer.anomaly.service import AnomalyService
from services.trainer.failure.endpoints import router as failure_router
from services.trainer.failure.service import FailureService
from services.trainer.health.endpoints import router as health_router
from services.trainer.health.service import scoring_gauges
from services.trainer.incidents.endpoints import router as incidents_router
from services.trainer.registry.endpoints import router as registry_router
from services.trainer.synthetic.endpoints import router as synthetic_router
from shared.db import database
from shared.incidents.notifier import Notifier
from shared.observability import Sample, queue_sample
from shared.settings import Settings, get_settings
from shared.web import new_app
from shared.workers import prewarm, process_pool, shutdown, thread_pool

# What the training process runs: imported there at start (ML_TRAINING_PREWARM).
TRAINING_MODULES = ("services.trainer.anomaly.worker", "services.trainer.failure.worker")
PREWARM_DELAY = 5.0  # seconds after the start: a restarted trainer serves first

# Threads that share a large scoring batch in the service (the training process uses one).
SCORING_THREADS = min(2, os.cpu_count() or 1)


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with database(settings.database_url, engine) as db:
            app.state.engine = db
            app.state.settings = settings
            # The trainer re-sends open incidents to Alertmanager (all services' incidents).
            app.state.notifier = Notifier(settings, db, resend_alerts=True)
            app.state.notifier.start()
            app.state.loops = list(app.state.notifier.loops)
            # Before the scoring loop starts: it hears of every incident the scoring opens.
            app.state.analysis = AnalysisService(settings, db, app.state.notifier)
            app.state.analysis.start()
            app.state.loops += app.state.analysis.loops
            # A fit holds the GIL: a process keeps health fast. The pool replaces itself if its
            # process dies or hangs, answering that training 503 (never one waiting forever).
            training_pool = process_pool(1, job_timeout=settings.training_timeout)
            if settings.training_prewarm:
                app.state.prewarm = prewarm(training_pool, TRAINING_MODULES, delay=PREWARM_DELAY)
            scoring_pool = thread_pool(SCORING_THREADS, name="anomaly-scoring")
            app.state.anomaly = AnomalyService(
                settings,
                db,
                app.state.notifier,
                training_pool=training_pool,
                threads=ScoringThreads(scoring_pool, SCORING_THREADS),
            )
            await app.state.anomaly.start()
            app.state.loops += app.state.anomaly.loops
            app.state.failure = FailureService(
                settings, db, app.state.notifier, training_pool=training_pool
            )
            # The failure predictor keeps each host's last hour from the anomaly loop's reads.
            app.state.anomaly.scoring.observers.append(app.state.failure.windows.observe)
            await app.state.failure.start()
            app.state.loops += app.state.failure.loops
            anomaly: AnomalyService = app.state.anomaly

            async def writer_queue() -> list[Sample]:
                return [queue_sample("score_writes", len(anomaly.writer.pending))]

            observability = app.state.observability
            observability.gauges = lambda: scoring_gauges(anomaly)
            observability.sources = [app.state.notifier.samples, writer_queue]
            try:
                yield
            finally:
                await app.state.failure.stop()
                await app.state.anomaly.stop()
                await app.state.analysis.stop()
                if settings.training_prewarm:
                    app.state.prewarm.cancel()
                shutdown(training_pool, wait=True)
                shutdown(scoring_pool)
                await app.state.notifier.stop()

    app = new_app(
        title="autofix-ml trainer",
        description="Synthetic training data, model training and the model registry.",
        lifespan=lifespan,
        settings=settings,
    )
    app.include_router(health_router)
    app.include_router(synthetic_router)
    app.include_router(registry_router)
    app.include_router(incidents_router)
    app.include_router(anomaly_router)
    app.include_router(analysis_router)
    app.include_router(failure_router)
    return app
