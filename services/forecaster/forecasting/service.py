"""The forecaster's work: train per-metric models, refresh the stored forecasts, raise breach incidents.

Usage: `Forecaster(settings, engine, notifier, executor=pool, models=holder)`; `await f.train(req)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.forecaster.forecasting import forecast_store as store
from services.forecaster.forecasting import jobs
from services.forecaster.forecasting import repository as repo
from services.forecaster.forecasting.breach import (
    ALERT_HORIZON_HOURS,
    find_breach,
    interval_width,
    thresholds,
)
from services.forecaster.forecasting.outcome import (
    INCIDENT_TYPE,
    RefreshOutcome,
    dedup_key,
    scope_order,
)
from services.forecaster.forecasting.prediction import Prediction, forecast_grid
from services.forecaster.forecasting.prophet_model import (
    DEFAULT_CONFIG,
    ForecastConfig,
    StoredModel,
)
from services.forecaster.forecasting.retrain import due_hosts
from services.forecaster.forecasting.training import fit_metrics, log_trained, register
from shared.active_model import ActiveModel, ActiveModelHolder
from shared.clock import utcnow
from shared.errors import AppError, Conflict
from shared.incidents.notifier import Notifier
from shared.incidents.repository import raise_incident, resolve_incident
from shared.schemas.forecast import (
    ForecasterHealth,
    TrainedMetric,
    TrainForecasterRequest,
    TrainForecasterResponse,
    evaluation_out,
)
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings
from shared.workers import run_in

log = logging.getLogger("autofix_ml.forecaster")

ForecasterModels = ActiveModelHolder[StoredModel]


# (model id, its forecast, its interval width) per metric
Predictions = Mapping[str, tuple[int, Prediction, float]]


class Forecaster:
    """Trains, refreshes and stores forecasts; one per forecaster process.

    Prophet runs on `executor` (worker processes, made in the lifespan), so the event loop
    (health checks, reads) never waits on it.
    """

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        notifier: Notifier,
        *,
        executor: Executor,
        models: ForecasterModels,
        config: ForecastConfig = DEFAULT_CONFIG,
        warm_workers: int = 0,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.notifier = notifier
        self.executor = executor
        self.models = models
        self.config = config
        self.warm_workers = warm_workers
        # Validates ML_FORECAST_THRESHOLDS at start-up: an unknown metric there is an error.
        self.thresholds = thresholds(settings.forecast_thresholds)
        self._training: asyncio.Task[TrainForecasterResponse] | None = None
        self.fit_started_at: datetime | None = None
        self.last_refresh_at: datetime | None = None
        self._write_lock = asyncio.Lock()
        self._warm_checked = False
        self._retrain_failed: dict[str, datetime] = {}

    @property
    def step_minutes(self) -> float:
        return self.config.step.total_seconds() / 60.0

    @property
    def refresh_seconds(self) -> float:
        return self.settings.forecast_refresh_minutes * 60.0

    @property
    def horizon_hours(self) -> float:
        # A full day ahead stays readable until the next refresh.
        return ALERT_HORIZON_HOURS + min(self.settings.forecast_refresh_minutes / 60.0, 24.0)

    @property
    def retrain_seconds(self) -> float:  # ML_FORECAST_RETRAIN_HOURS; 0: never
        return self.settings.forecast_retrain_hours * 3600.0

    @property
    def fit_running(self) -> bool:
        return self._training is not None and not self._training.done()

    def close(self) -> None:
        if self._training is not None and not self._training.done():
            self._training.cancel()

    async def health(self) -> ForecasterHealth:
        """The GET /health answer: training state, last refresh, and whether the database answers."""
        state: dict[str, Any] = dict(
            service="forecaster",
            fit_running=self.fit_running,
            fit_started_at=self.fit_started_at if self.fit_running else None,
            last_refresh_at=self.last_refresh_at,
            refresh_minutes=self.settings.forecast_refresh_minutes,
        )
        try:
            async with self.engine.connect() as conn:
                active = await repo.count_active(conn)
        except Exception:  # noqa: BLE001 - reported, not raised
            return ForecasterHealth(status="degraded", database=False, **state)
        return ForecasterHealth(status="healthy", database=True, active_models=active, **state)

    # ----------------------------------------------------------------------- training

    async def train(self, request: TrainForecasterRequest) -> TrainForecasterResponse:
        """Fit and activate one model per metric; 409 while another training run is going."""
        if self.fit_running:
            raise Conflict(
                "a forecaster training run is already in progress "
                f"(started {self.fit_started_at:%Y-%m-%d %H:%M:%S} UTC); retry when it finishes"
            )
        self.fit_started_at = utcnow()
        task = asyncio.create_task(self._train(request), name="forecaster-train")
        # The run finishes (and stores its models) even if the client goes away.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._training = task
        return await asyncio.shield(task)

    async def _train(self, request: TrainForecasterRequest) -> TrainForecasterResponse:
        started = time.perf_counter()
        config = replace(self.config, interval_width=request.interval_width)
        grid = forecast_grid(utcnow(), step=config.step, hours=self.horizon_hours)
        run = await fit_metrics(self.engine, self.executor, request, config=config, grid=grid)

        generated_at = utcnow()
        outcome = RefreshOutcome(host=run.window.host, generated_at=generated_at)
        trained: list[TrainedMetric] = []
        async with self._write_lock:
            async with self.engine.begin() as conn:
                registered = await register(conn, run)
                predictions: dict[str, tuple[int, Prediction, float]] = {}
                for fitted, record, _artifact, _previous in registered:
                    predictions[fitted.fit.metric] = (
                        record.id,
                        fitted.fit.prediction,
                        config.interval_width,
                    )
                    trained.append(
                        TrainedMetric(
                            metric=fitted.fit.metric,
                            model_id=record.id,
                            version=record.version,
                            artifact_sha256=fitted.fit.sha256,
                            points=fitted.fit.n_points,
                            fit_seconds=fitted.fit.fit_seconds,
                            evaluation=evaluation_out(
                                None if fitted.evaluation is None else fitted.evaluation.as_dict()
                            ),
                            evaluation_error=fitted.evaluation_error,
                        )
                    )
                notify = await self._store(conn, outcome, predictions)
            # Committed: these are the active versions now, verified as they were written.
            for fitted, record, artifact, _previous in registered:
                self.models.put(ActiveModel(StoredModel(artifact, fitted.fit.sha256), record))
        log_trained(registered)
        self.last_refresh_at = generated_at
        for incident in notify:
            self.notifier.notify(incident)
        return TrainForecasterResponse(
            host=run.window.host,
            host_chosen=run.window.chosen,
            start=run.window.start,
            end=run.window.end,
            resolution_minutes=config.step.total_seconds() / 60.0,
            interval_width=config.interval_width,
            samples=run.samples,
            models=trained,
            failures=run.failures,
            forecasts_written=outcome.forecasts_written,
            generated_at=generated_at,
            predicted_breaches=outcome.predicted_breaches,
            seconds=time.perf_counter() - started,
            fit_seconds=run.fit_seconds,
        )

    # ------------------------------------------------------------ storing and incidents

    async def _store(
        self, conn: AsyncConnection, outcome: RefreshOutcome, predictions: Predictions
    ) -> list[IncidentOut]:
        """Write forecasts and open/resolve breach incidents; returns incidents to notify."""
        host, now = outcome.host, outcome.generated_at
        alert_until = now + timedelta(hours=ALERT_HORIZON_HOURS)
        notify: list[IncidentOut] = []
        for metric, (model_id, prediction, width) in predictions.items():
            outcome.forecasts_written += await store.write_forecasts(
                conn,
                host=host,
                metric=metric,
                model_id=model_id,
                generated_at=now,
                timestamps=prediction.times,
                yhat=prediction.yhat.tolist(),
                lower=prediction.lower.tolist(),
                upper=prediction.upper.tolist(),
            )
            outcome.metrics.append(metric)
            breach = None
            if metric in self.thresholds:
                n = sum(1 for t in prediction.times if t <= alert_until)
                breach = find_breach(
                    metric,
                    prediction.times[:n],
                    prediction.yhat[:n],
                    prediction.upper[:n],
                    threshold=self.thresholds[metric],
                    interval_width=width,
                    now=now,
                )
            key = dedup_key(host, metric)
            if breach is None:
                resolved = await resolve_incident(
                    conn, dedup_key=key, reason="the refreshed forecast no longer predicts it"
                )
                if resolved is not None:
                    outcome.incidents_resolved += 1
                    notify.append(resolved)
                continue
            outcome.predicted_breaches += 1
            incident, change = await raise_incident(
                conn,
                type=INCIDENT_TYPE,
                host=host,
                dedup_key=key,
                severity=breach.severity,
                metric=metric,
                title=(
                    f"{metric} on {host} predicted to reach {breach.threshold:g} "
                    f"at {breach.at:%Y-%m-%d %H:%M} UTC"
                ),
                description=(
                    f"Forecast {breach.predicted_value:.4g} (upper bound "
                    f"{breach.predicted_upper:.4g}) against the threshold {breach.threshold:g}; "
                    f"probability {breach.probability:.0%}."
                ),
                details={**breach.details(), "model_id": model_id, "generated_at": now.isoformat()},
                cooldown_minutes=self.settings.incident_cooldown_minutes,
                now=now,
            )
            if change != "updated":
                outcome.incidents_opened += 1
                notify.append(incident)
        return notify

    # ------------------------------------------------------------------------- refresh

    async def refresh(self) -> list[RefreshOutcome]:
        """Recompute the stored forecasts of every active model from now on, and the incidents.

        Versions activated by another process are loaded first; one that cannot be loaded
        is reported in its host's failures, every pass, until it can.
        """
        async with self._write_lock:
            async with self.engine.connect() as conn:
                await self.models.refresh(conn)
            by_host: dict[str, list[ActiveModel[StoredModel]]] = defaultdict(list)
            failed: dict[str, dict[str, str]] = defaultdict(dict)
            for scope in sorted(self.models.failures, key=scope_order):
                host, metric = scope
                failed[str(host)][str(metric)] = self.models.failures[scope]
            for active in sorted(self.models.all(), key=lambda a: scope_order(a.scope)):
                by_host[str(active.record.host)].append(active)

            outcomes: list[RefreshOutcome] = []
            for host in sorted(by_host.keys() | failed.keys()):
                entries = by_host.get(host, [])
                generated_at = utcnow()
                grid = forecast_grid(generated_at, step=self.config.step, hours=self.horizon_hours)
                outcome = RefreshOutcome(host=host, generated_at=generated_at)
                outcome.failures.update(failed.get(host, {}))
                results = await asyncio.gather(
                    *(run_in(self.executor, jobs.predict_job, a.model, grid) for a in entries),
                    return_exceptions=True,
                )
                predictions: dict[str, tuple[int, Prediction, float]] = {}
                for active, result in zip(entries, results, strict=True):
                    metric = str(active.record.metric)
                    if isinstance(result, BaseException):
                        outcome.failures[metric] = "prediction failed"
                        log.error("forecaster: predicting %s failed: %s", metric, result)
                        continue
                    width = interval_width(active.record.parameters)
                    predictions[metric] = (active.id, result, width)
                async with self.engine.begin() as conn:
                    notify = await self._store(conn, outcome, predictions)
                for incident in notify:
                    self.notifier.notify(incident)
                outcomes.append(outcome)
            self.last_refresh_at = utcnow()
            return outcomes

    async def seconds_until_refresh(self) -> float:
        async with self.engine.connect() as conn:
            if await repo.count_active(conn) == 0:
                return self.refresh_seconds
            newest = await store.newest_generation(conn)
        if newest is None:
            return 0.0
        return max(0.0, self.refresh_seconds - (utcnow() - newest).total_seconds())

    async def refresh_step(self) -> float:
        """One pass of the refresh loop: refresh when due; the seconds until the next look.

        The worker processes start on the first job, or on the first pass when models exist
        already (a restart): a fresh, empty install does not pay for Prophet until it trains.
        """
        if not self._warm_checked:
            self._warm_checked = True
            await self._warm_if_trained()
        delay = await self.seconds_until_refresh()
        if delay > 0:
            return min(delay, self.refresh_seconds)
        outcomes = await self.refresh()
        log.info(
            "forecaster: refreshed %d host(s), %d points",
            len(outcomes),
            sum(o.forecasts_written for o in outcomes),
        )
        return self.refresh_seconds  # even when nothing was written (every model unloadable)

    async def retrain_step(self) -> float:
        """One pass of the training schedule: refit the due host that waited longest (see
        `retrain.due_hosts`) through `train`, on the worker processes; the seconds to wait."""
        period = self.retrain_seconds
        if period <= 0 or self.fit_running:  # off, or an on-demand run: look again later
            return 60.0
        now = utcnow()
        async with self.engine.connect() as conn:
            spans = await repo.sample_spans(conn)
            trained_at = await repo.trained_at_by_host(conn)
        plan = due_hosts(
            spans, trained_at, now=now, every=timedelta(seconds=period), skip=self._retrain_failed
        )
        # Hosts short of history are looked at again every refresh period.
        idle = min(period, self.refresh_seconds, period if plan.wait is None else plan.wait)
        if not plan.due:
            return idle
        host = plan.due[0]
        try:
            result = await self.train(TrainForecasterRequest(host=host))
            self._retrain_failed.pop(host, None)
            log.info("forecaster: scheduled training of %s: %d models", host, len(result.models))
        except AppError as exc:
            if self.fit_running:  # an on-demand run started meanwhile
                return 60.0
            self._retrain_failed[host] = now
            log.warning("forecaster: scheduled training of %s failed: %s", host, exc.detail)
        return 0.0 if len(plan.due) > 1 else idle

    async def _warm_if_trained(self) -> None:
        try:
            async with self.engine.connect() as conn:
                trained = await repo.count_active(conn) > 0
        except Exception:  # noqa: BLE001 - the refresh below reports database trouble
            return
        if trained:
            for _ in range(self.warm_workers):
                self.executor.submit(jobs.warm)
