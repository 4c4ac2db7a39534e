"""Training runs: the window, the SQL bucket means, fits and evaluations on the workers, registration.

Usage: `run = await fit_metrics(engine, executor, request, config=config, grid=grid)`, then
`registered = await register(conn, run)` inside the transaction that stores the forecasts,
`log_trained(registered)` once it is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.forecaster.forecasting import repository as repo
from services.forecaster.forecasting.config import ForecastConfig, for_metric
from services.forecaster.forecasting.errors import ForecastError
from services.forecaster.forecasting.evaluation import StoredEvaluation
from services.forecaster.forecasting.history import (
    MetricHistory,
    frames_from_buckets,
    without_spans,
)
from services.forecaster.forecasting.jobs import FitOutput, fit_job
from shared import events, registry
from shared.catalogue import METRIC_NAMES
from shared.errors import AppError, Conflict, NotFound
from shared.schemas.forecast import TrainForecasterRequest
from shared.schemas.models import ModelSummary
from shared.workers import run_in

log = logging.getLogger("autofix_ml.forecaster")

DEFAULT_DAYS = 30.0


@dataclass(frozen=True, slots=True)
class TrainingWindow:
    """The host and stretch of history a training run fits."""

    host: str
    chosen: bool  # True when the host was picked (most samples), not asked for
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class FittedMetric:
    """A metric's fitted model, and its backtest evaluation or why there is none."""

    fit: FitOutput
    evaluation: StoredEvaluation | None
    evaluation_error: str | None


@dataclass(frozen=True, slots=True)
class FitRun:
    """What a training run fitted, before anything is stored."""

    window: TrainingWindow
    config: ForecastConfig
    samples: int
    fitted: list[FittedMetric]
    failures: dict[str, str]
    fit_seconds: float


class Registered(NamedTuple):
    """A version stored and activated by `register`, and the active version it replaced."""

    fitted: FittedMetric
    record: ModelSummary
    artifact: bytes
    previous: ModelSummary | None


async def resolve_window(conn: AsyncConnection, request: TrainForecasterRequest) -> TrainingWindow:
    """The host asked for (404 naming the hosts with samples if it has none), else the busiest."""
    if request.host is not None:
        host, chosen = request.host, False
        span = await repo.sample_span(conn, host)
        if span is None:
            hosts = [h for h, _ in await repo.sample_counts(conn)]
            raise NotFound(
                f"no samples for host {host!r}; hosts with samples: " + (", ".join(hosts) or "none")
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
    return TrainingWindow(host=host, chosen=chosen, start=start, end=end)


def _reason(exc: BaseException, fallback: str) -> str:
    """A domain error's own words; anything else only as `fallback` (never echo internals)."""
    return str(exc) if isinstance(exc, ForecastError) else fallback


async def fit_metrics(
    engine: AsyncEngine,
    executor: Executor,
    request: TrainForecasterRequest,
    *,
    config: ForecastConfig,
    grid: list[datetime],
) -> FitRun:
    """Fit and evaluate every metric asked for on `executor`; a failed metric is reported, not raised."""
    metrics = request.metrics or list(METRIC_NAMES)
    seconds = int(config.step.total_seconds())
    async with engine.connect() as conn:
        window = await resolve_window(conn, request)
        spans = await repo.flagged_spans(conn, host=window.host, start=window.start, end=window.end)
        buckets = await repo.bucketed_history(
            conn,
            host=window.host,
            start=window.start,
            end=window.end,
            metrics=metrics,
            bucket_seconds=seconds,
        )
    if buckets.samples == 0:
        raise Conflict(
            f"no samples for host {window.host!r} between {window.start.isoformat()} "
            f"and {window.end.isoformat()}"
        )

    def frames() -> dict[str, MetricHistory]:
        out = frames_from_buckets(buckets.table(), metrics, bucket_seconds=seconds)
        return {k: without_spans(v, spans, bucket_seconds=seconds) for k, v in out.items()}

    histories = await asyncio.to_thread(frames)
    started = time.perf_counter()
    # One job per metric: the backtest, the choice and the final fit (the evaluation is
    # the backtest's, stored in the artifact). Bounds come from the catalogue, explicitly.
    fits = [
        run_in(executor, fit_job, name, histories[name], for_metric(config, name), grid)
        for name in metrics
    ]
    fit_results = await asyncio.gather(*fits, return_exceptions=True)
    fit_seconds = time.perf_counter() - started

    fitted: list[FittedMetric] = []
    failures: dict[str, str] = {}
    for name, output in zip(metrics, fit_results, strict=True):
        if isinstance(output, BaseException):
            if not isinstance(output, Exception):
                raise output
            log.warning("forecaster: fitting %s for %s failed: %s", name, window.host, output)
            failures[name] = _reason(output, "fit failed")
            continue
        evaluation = StoredEvaluation(output.evaluation)
        if evaluation.complete:
            fitted.append(FittedMetric(output, evaluation, None))
        else:
            fitted.append(FittedMetric(output, None, evaluation.error or "no backtest"))
    if not fitted:
        raise Conflict(
            f"no metric of host {window.host!r} could be fitted: "
            + "; ".join(f"{k}: {v}" for k, v in failures.items())
        )
    return FitRun(window, config, buckets.samples, fitted, failures, fit_seconds)


async def register(conn: AsyncConnection, run: FitRun) -> list[Registered]:
    """Store and activate one version per fitted metric: (fitted, its record, its artifact,
    the version it replaced or None)."""
    config, window = run.config, run.window
    out = []
    for fitted in run.fitted:
        fit = fitted.fit
        previous = await registry.active_model(
            conn, name=repo.MODEL_NAME, host=window.host, metric=fit.metric
        )
        artifact = fit.artifact
        evaluation = (
            fitted.evaluation.as_dict()
            if fitted.evaluation is not None
            else {"evaluation_error": fitted.evaluation_error}
        )
        record = await registry.insert_model(
            conn,
            name=repo.MODEL_NAME,
            model_type="backtest_selected",
            artifact=artifact,
            artifact_format="forecast_json",
            parameters={
                "chosen": None if fitted.evaluation is None else fitted.evaluation.chosen,
                "resolution": config.resolution,
                "interval_width": config.interval_width,
                "changepoint_prior_scale": config.changepoint_prior_scale,
                "daily_fourier_order": config.daily_fourier_order,
                "weekly_fourier_order": config.weekly_fourier_order,
                "weekend_daily_seasonality": config.weekend_daily_seasonality,
                "backtest_origins": config.backtest_origins,
                "backtest_spacing_hours": config.backtest_spacing_hours,
                "backtest_horizon_hours": config.backtest_horizon_hours,
                "y_scale": fit.y_scale,
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
            },
            metrics={**evaluation, "trend": fit.trend.as_dict()},
            host=window.host,
            metric=fit.metric,
            training_start=fit.trained_start,
            training_end=fit.trained_end,
            sample_count=fit.n_points,
            status="active",
        )
        if record.artifact_sha256 != fit.sha256:
            raise AppError("stored model checksum differs from the serialised model")
        out.append(Registered(fitted, record, artifact, previous))
    return out


def log_trained(registered: list[Registered]) -> None:
    """Log and count the versions `register` stored once they are committed: `model_trained`
    and `model_activated` (its `previous_model_id` the version each replaced)."""
    events.versions_trained((r.record, r.fitted.fit.fit_seconds, r.previous) for r in registered)
