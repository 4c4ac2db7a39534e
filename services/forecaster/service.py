"""The forecaster's work: train per-metric models, refresh stored forecasts, raise breach incidents.

`Forecaster` is made in the app's lifespan. Prophet runs on its own thread pool so the event
loop (health checks, reads) never waits on it; reads go to `metric_forecasts` only.

Usage: `result = await forecaster.train(TrainForecasterRequest(metrics=["cpu_usage_percent"]))`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy.ext.asyncio import AsyncEngine

from services.forecaster import jobs
from services.forecaster import model as fm
from services.forecaster import repository as repo
from services.forecaster.jobs import FitOutput, Prediction
from shared import registry
from shared.catalogue import METRIC_NAMES
from shared.db import utc, utcnow
from shared.errors import AppError, Conflict, NotFound
from shared.incidents import Notifier, raise_incident, resolve_incident
from shared.schemas.forecast import (
    TrainedMetric,
    TrainForecasterRequest,
    TrainForecasterResponse,
    evaluation_out,
)
from shared.settings import Settings

log = logging.getLogger("autofix_ml.forecaster")

T = TypeVar("T")

INCIDENT_TYPE = "predicted_breach"
DEFAULT_DAYS = 30.0
ALERT_HORIZON_HOURS = 24.0
TRAIN_HINT = 'train first: POST /api/ml/train/forecaster -d \'{"host": "%s"}\''


def dedup_key(host: str, metric: str) -> str:
    return f"{INCIDENT_TYPE}:{host}:{metric}"


def unknown_metric(metric: str) -> NotFound:
    return NotFound(f"unknown metric {metric!r}; known metrics: {', '.join(METRIC_NAMES)}")


# ----------------------------------------------------------------------------- breaches


@dataclass(frozen=True, slots=True)
class PredictedBreach:
    metric: str
    threshold: float
    yhat_crossing_at: datetime | None
    upper_crossing_at: datetime | None
    at: datetime
    predicted_value: float
    predicted_upper: float
    probability: float
    peak_probability: float
    severity: str

    def details(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "threshold": self.threshold,
            "at": iso(self.at),
            "yhat_crossing_at": iso(self.yhat_crossing_at),
            "upper_crossing_at": iso(self.upper_crossing_at),
            "predicted_value": self.predicted_value,
            "predicted_upper": self.predicted_upper,
            "probability": self.probability,
            "peak_probability": self.peak_probability,
        }


def find_breach(
    metric: str,
    times: Sequence[datetime],
    yhat: np.ndarray,
    upper: np.ndarray,
    *,
    threshold: float,
    interval_width: float,
    now: datetime,
) -> PredictedBreach | None:
    """First upward crossing of `threshold` by yhat and by the upper bound (model.detect_breach
    semantics on plain arrays: no DataFrame per request, so alerts stay a few milliseconds)."""
    if len(times) == 0:
        return None
    by_yhat = np.flatnonzero(yhat >= threshold)
    by_upper = np.flatnonzero(upper >= threshold)
    if by_yhat.size == 0 and by_upper.size == 0:
        return None
    i = int(by_yhat[0]) if by_yhat.size else int(by_upper[0])
    probability = fm.exceedance_probability(yhat, upper, threshold, interval_width)
    at = times[i]
    if by_yhat.size:
        severity = "critical" if at - now <= timedelta(hours=1) else "high"
    else:
        severity = "medium"
    return PredictedBreach(
        metric=metric,
        threshold=threshold,
        yhat_crossing_at=times[int(by_yhat[0])] if by_yhat.size else None,
        upper_crossing_at=times[int(by_upper[0])] if by_upper.size else None,
        at=at,
        predicted_value=float(yhat[i]),
        predicted_upper=float(upper[i]),
        probability=float(probability[i]),
        peak_probability=float(probability.max()),
        severity=severity,
    )


# ------------------------------------------------------------------------------ fitting


def storage_grid(now: datetime, *, step: pd.Timedelta, hours: float) -> list[datetime]:
    """Times after `now` on the model's grid, up to `now + hours` (rounded up to the grid)."""
    origin = pd.Timestamp(utc(now)).floor(step)
    count = math.ceil(pd.Timedelta(hours=hours) / step) + 1
    grid = pd.date_range(origin + step, periods=count, freq=step)
    return [ts.to_pydatetime() for ts in grid]


def history_frames(
    columns: list[str], rows: list[tuple[Any, ...]], metrics: Sequence[str], bucket_seconds: int
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """SQL bucket means as model.fit_frame's inputs: (normal-only frame, every-sample frame).

    Each bucket is stamped at its middle, as model.resample_history does.
    """
    if not rows:
        return {name: (_empty(), _empty()) for name in metrics}
    table = pd.DataFrame.from_records(rows, columns=columns)
    starts = pd.to_datetime(table["bucket"].astype("int64") * bucket_seconds, unit="s")
    ds = starts + pd.Timedelta(seconds=bucket_seconds / 2)
    out: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for name in metrics:
        frames = []
        for column in (f"{name}__normal", name):
            y = pd.to_numeric(table[column], errors="coerce").astype(float)
            frame = pd.DataFrame({"ds": ds, "y": y}).dropna().reset_index(drop=True)
            frames.append(frame)
        out[name] = (frames[0], frames[1])
    return out


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.DatetimeIndex([]), "y": np.array([], dtype=float)})


# ------------------------------------------------------------------------------ service


@dataclass(slots=True)
class RefreshOutcome:
    host: str
    generated_at: datetime
    metrics: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    forecasts_written: int = 0
    predicted_breaches: int = 0
    incidents_opened: int = 0
    incidents_resolved: int = 0


class Forecaster:
    """Trains, refreshes and answers from stored forecasts; one per forecaster process."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        notifier: Notifier,
        *,
        executor: Executor | None = None,
        workers: int = 2,
        config: fm.ForecastConfig = fm.DEFAULT_CONFIG,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.notifier = notifier
        self.config = config
        # Prophet runs in worker processes of its own: fitting in threads of this process
        # held the GIL long enough (JSON, pandas, CmdStan output parsing) to push /health
        # to a 90-150 ms p99 during a fit (bench_forecast_service). Tests may hand in a
        # thread pool; the jobs are the same plain functions either way.
        self._owns_executor = executor is None
        self.workers = workers
        self.executor: Executor = executor or ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )
        # Validates ML_FORECAST_THRESHOLDS at start-up: an unknown metric there is an error.
        self.thresholds = fm.thresholds(settings.forecast_thresholds)
        self._training: asyncio.Task[TrainForecasterResponse] | None = None
        self.fit_started_at: datetime | None = None
        self.last_refresh_at: datetime | None = None
        self._write_lock = asyncio.Lock()
        self._warmed = False

    @property
    def step(self) -> pd.Timedelta:
        return self.config.step

    @property
    def refresh_seconds(self) -> float:
        return self.settings.forecast_refresh_minutes * 60.0

    @property
    def horizon_hours(self) -> float:
        # A full day ahead stays readable until the next refresh.
        return ALERT_HORIZON_HOURS + min(self.settings.forecast_refresh_minutes / 60.0, 24.0)

    @property
    def fit_running(self) -> bool:
        return self._training is not None and not self._training.done()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def warm(self) -> None:
        """Start the worker processes (each imports Prophet, ~2 s) before they are needed."""
        if self._owns_executor and not self._warmed:
            self._warmed = True
            for _ in range(self.workers):
                self.executor.submit(jobs.warm)

    def close(self) -> None:
        if self._training is not None and not self._training.done():
            self._training.cancel()
        if self._owns_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)

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

    async def _resolve_window(
        self, request: TrainForecasterRequest
    ) -> tuple[str, bool, datetime, datetime]:
        async with self.engine.connect() as conn:
            if request.host is not None:
                host, chosen = request.host, False
                span = await repo.sample_span(conn, host)
                if span is None:
                    hosts = [h for h, _ in await repo.sample_counts(conn)]
                    raise NotFound(
                        f"no samples for host {host!r}; hosts with samples: "
                        + (", ".join(hosts) or "none")
                    )
            else:
                counts = await repo.sample_counts(conn)
                if not counts:
                    raise Conflict(
                        "metrics_history is empty: generate data first "
                        "(POST /api/ml/train/generate-synthetic) or let the collector run"
                    )
                host, chosen = counts[0][0], True
                span = await repo.sample_span(conn, host)
                assert span is not None
        end = request.end or span[1]
        start = request.start or end - timedelta(days=request.days or DEFAULT_DAYS)
        return host, chosen, start, end

    async def _train(self, request: TrainForecasterRequest) -> TrainForecasterResponse:
        started = time.perf_counter()
        host, chosen, start, end = await self._resolve_window(request)
        metrics = request.metrics or list(METRIC_NAMES)
        config = replace(self.config, interval_width=request.interval_width)
        bucket_seconds = int(config.step.total_seconds())
        async with self.engine.connect() as conn:
            columns, rows = await repo.bucketed_history(
                conn,
                host=host,
                start=start,
                end=end,
                metrics=metrics,
                bucket_seconds=bucket_seconds,
            )
        samples = int(sum(row[1] for row in rows))
        if samples == 0:
            raise Conflict(
                f"no samples for host {host!r} between {start.isoformat()} and {end.isoformat()}"
            )
        frames = await asyncio.to_thread(history_frames, columns, rows, metrics, bucket_seconds)
        fit_started = time.perf_counter()
        grid = storage_grid(utcnow(), step=config.step, hours=self.horizon_hours)
        fits = [
            self._run(jobs.fit_job, name, frames[name][0], frames[name][1], config, grid)
            for name in metrics
        ]
        evaluations = [
            self._run(jobs.evaluate_job, name, frames[name][0], frames[name][1], config)
            for name in metrics
        ]
        fit_results = await asyncio.gather(*fits, return_exceptions=True)
        eval_results = await asyncio.gather(*evaluations, return_exceptions=True)
        fit_seconds = time.perf_counter() - fit_started

        fitted: list[tuple[FitOutput, dict[str, Any] | None, str | None]] = []
        failures: dict[str, str] = {}
        for name, fit, evaluation in zip(metrics, fit_results, eval_results, strict=True):
            if isinstance(fit, BaseException):
                if not isinstance(fit, Exception):
                    raise fit
                log.warning("forecaster: fitting %s for %s failed: %s", name, host, fit)
                failures[name] = str(fit) if isinstance(fit, fm.ForecastError) else "fit failed"
                continue
            if isinstance(evaluation, BaseException):
                reason = (
                    str(evaluation)
                    if isinstance(evaluation, fm.ForecastError)
                    else "evaluation failed"
                )
                fitted.append((fit, None, reason))
            else:
                fitted.append((fit, evaluation, None))
        if not fitted:
            raise Conflict(
                f"no metric of host {host!r} could be fitted: "
                + "; ".join(f"{k}: {v}" for k, v in failures.items())
            )

        generated_at = utcnow()
        trained: list[TrainedMetric] = []
        notify: list[dict[str, Any]] = []
        outcome = RefreshOutcome(host=host, generated_at=generated_at)
        async with self._write_lock, self.engine.begin() as conn:
            predictions: dict[str, tuple[int, Prediction, float]] = {}
            for fit, evaluation, evaluation_error in fitted:
                row = await registry.insert_model(
                    conn,
                    name=repo.MODEL_NAME,
                    model_type="prophet",
                    artifact=fit.payload.encode("utf-8"),
                    artifact_format="prophet_json",
                    parameters={
                        "resolution": config.resolution,
                        "interval_width": config.interval_width,
                        "changepoint_prior_scale": config.changepoint_prior_scale,
                        "daily_fourier_order": config.daily_fourier_order,
                        "weekly_fourier_order": config.weekly_fourier_order,
                        "weekend_daily_seasonality": config.weekend_daily_seasonality,
                        "uncertainty_samples": config.uncertainty_samples,
                        "y_scale": fit.y_scale,
                        "window_start": start.isoformat(),
                        "window_end": end.isoformat(),
                    },
                    metrics={
                        **(evaluation or {"evaluation_error": evaluation_error}),
                        "trend": fit.trend,
                    },
                    host=host,
                    metric=fit.metric,
                    training_start=fit.trained_start,
                    training_end=fit.trained_end,
                    sample_count=fit.n_points,
                    status="active",
                )
                if row.artifact_sha256 != fit.sha256:
                    raise AppError("stored model checksum differs from the serialised model")
                predictions[fit.metric] = (row.id, fit.prediction, config.interval_width)
                trained.append(
                    TrainedMetric(
                        metric=fit.metric,
                        model_id=row.id,
                        version=row.version,
                        artifact_sha256=row.artifact_sha256,
                        points=fit.n_points,
                        fit_seconds=fit.fit_seconds,
                        evaluation=evaluation_out(evaluation),
                        evaluation_error=evaluation_error,
                    )
                )
            notify = await self._store(conn, outcome, predictions)
        self.last_refresh_at = generated_at
        for incident in notify:
            self.notifier.notify(incident)
        return TrainForecasterResponse(
            host=host,
            host_chosen=chosen,
            start=start,
            end=end,
            resolution_minutes=config.step.total_seconds() / 60.0,
            interval_width=config.interval_width,
            samples=samples,
            models=trained,
            failures=failures,
            forecasts_written=outcome.forecasts_written,
            generated_at=generated_at,
            predicted_breaches=outcome.predicted_breaches,
            seconds=time.perf_counter() - started,
            fit_seconds=fit_seconds,
        )

    # ------------------------------------------------------------ storing and incidents

    async def _store(
        self,
        conn: Any,
        outcome: RefreshOutcome,
        predictions: Mapping[str, tuple[int, Prediction, float]],
    ) -> list[dict[str, Any]]:
        """Write forecasts and open/resolve breach incidents; returns incidents to notify."""
        host, now = outcome.host, outcome.generated_at
        alert_until = now + timedelta(hours=ALERT_HORIZON_HOURS)
        notify: list[dict[str, Any]] = []
        for metric, (model_id, prediction, width) in predictions.items():
            outcome.forecasts_written += await repo.write_forecasts(
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

    async def verified_artifact(self, conn: Any, model_id: int) -> tuple[bytes, str]:
        """A stored model's bytes and sha256, checked against each other on every load."""
        artifact, fmt, sha = await registry.load_artifact(conn, model_id)
        if fmt != "prophet_json":
            raise AppError(f"model {model_id} is not a Prophet model ({fmt})")
        return artifact, sha

    async def refresh(self) -> list[RefreshOutcome]:
        """Recompute the stored forecasts of every active model from now on, and the incidents."""
        async with self._write_lock:
            async with self.engine.connect() as conn:
                models = await repo.active_models(conn)
                by_host: dict[str, list[tuple[dict[str, Any], tuple[bytes, str] | str]]]
                by_host = defaultdict(list)
                for row in models:
                    loaded: tuple[bytes, str] | str
                    try:
                        loaded = await self.verified_artifact(conn, int(row["id"]))
                    except (AppError, fm.ForecastError, ValueError, KeyError) as exc:
                        detail = exc.detail if isinstance(exc, AppError) else str(exc)
                        log.error("forecaster: cannot load model %s: %s", int(row["id"]), detail)
                        loaded = str(detail)
                    by_host[str(row["host"])].append((row, loaded))

            outcomes: list[RefreshOutcome] = []
            for host, entries in by_host.items():
                generated_at = utcnow()
                grid = storage_grid(generated_at, step=self.step, hours=self.horizon_hours)
                outcome = RefreshOutcome(host=host, generated_at=generated_at)
                usable = [(row, m) for row, m in entries if not isinstance(m, str)]
                for row, m in entries:
                    if isinstance(m, str):
                        outcome.failures[str(row["metric"])] = m
                results = await asyncio.gather(
                    *(self._run(jobs.predict_job, m[0], m[1], grid) for _, m in usable),
                    return_exceptions=True,
                )
                predictions: dict[str, tuple[int, Prediction, float]] = {}
                for (row, _artifact), result in zip(usable, results, strict=True):
                    if isinstance(result, BaseException):
                        outcome.failures[str(row["metric"])] = "prediction failed"
                        log.error("forecaster: predicting %s failed: %s", row["metric"], result)
                        continue
                    width = (row.get("parameters") or {}).get("interval_width")
                    predictions[str(row["metric"])] = (
                        int(row["id"]),
                        result,
                        float(width or fm.DEFAULT_INTERVAL_WIDTH),
                    )
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
            newest = await repo.newest_generation(conn)
        if newest is None:
            return 0.0
        return max(0.0, self.refresh_seconds - (utcnow() - newest).total_seconds())

    async def refresh_loop(self) -> None:
        """Refresh every ML_FORECAST_REFRESH_MINUTES (at start-up too if forecasts are stale).

        Worker processes start on the first job, or here when models exist already (a
        restart): a fresh, empty install does not pay for Prophet until it trains.
        """
        try:
            async with self.engine.connect() as conn:
                if await repo.count_active(conn) > 0:
                    self.warm()
        except Exception:  # noqa: BLE001 - the loop below reports database trouble
            pass
        while True:
            try:
                delay = await self.seconds_until_refresh()
                if delay > 0:
                    await asyncio.sleep(min(delay, self.refresh_seconds))
                    continue
                outcomes = await self.refresh()
                log.info(
                    "forecaster: refreshed %d host(s), %d points",
                    len(outcomes),
                    sum(o.forecasts_written for o in outcomes),
                )
                # Even a pass that wrote nothing (every model unloadable) waits a full period.
                await asyncio.sleep(self.refresh_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must survive a bad pass
                log.exception("forecaster: refresh failed")
                await asyncio.sleep(min(60.0, self.refresh_seconds))
