"""Prophet work as plain picklable jobs, run in the forecaster's worker processes.

Usage: `await run_in(pool, fit_job, metric, history, config, grid)`; only data crosses the process
boundary (frames, JSON text, arrays), never a Prophet object.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.forecaster.forecasting.evaluation import MetricEvaluation, evaluate
from services.forecaster.forecasting.history import MetricHistory
from services.forecaster.forecasting.prediction import Prediction
from services.forecaster.forecasting.prophet_model import (
    ForecastConfig,
    MetricModel,
    StoredModel,
    fit,
    load_model,
    predict,
    serialize_model,
)
from services.forecaster.forecasting.trend import TrendAnalysis, analyse_trend


class ModelCache:
    """The models a worker process has parsed, by checksum, newest used last."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[str, MetricModel] = OrderedDict()

    def get(self, sha256: str) -> MetricModel | None:
        return self._models.get(sha256)

    def put(self, sha256: str, model: MetricModel) -> None:
        self._models[sha256] = model
        self._models.move_to_end(sha256)
        while len(self._models) > self.size:
            self._models.popitem(last=False)


# One per worker process: an hourly refresh does not parse the same JSON again.
_cache = ModelCache(64)


@dataclass(slots=True)
class FitOutput:
    """A fitted model as stored (Prophet JSON and its sha256) plus what is derived from it."""

    metric: str
    artifact: bytes  # the stored JSON, UTF-8: encoded here, not on the service's event loop
    sha256: str
    evaluation: dict[str, Any]  # the document's "evaluation", as parsing the artifact gives it
    trend: TrendAnalysis
    prediction: Prediction
    n_points: int
    fit_seconds: float
    trained_start: datetime
    trained_end: datetime
    y_scale: float


def warm() -> bool:
    """Nothing: submitted once per worker at start-up so Prophet is imported before a fit."""
    return True


def fit_job(
    metric: str, history: MetricHistory, config: ForecastConfig, grid: list[datetime]
) -> FitOutput:
    """Fit, serialise, analyse the trend and forecast the storage grid."""
    model = fit(history, metric, config=config)
    serialized = serialize_model(model)
    _cache.put(serialized.sha256, model)
    return FitOutput(
        metric=metric,
        artifact=serialized.payload.encode("utf-8"),
        sha256=serialized.sha256,
        # Parsing megabytes of JSON back on the service's loop stalled its /health.
        evaluation=json.loads(json.dumps(model.evaluation, sort_keys=True)),
        trend=analyse_trend(model),
        prediction=predict(model, grid),
        n_points=model.n_points,
        fit_seconds=model.fit_seconds,
        trained_start=model.trained_start,
        trained_end=model.trained_end,
        y_scale=model.y_scale,
    )


def evaluate_job(metric: str, history: MetricHistory, config: ForecastConfig) -> MetricEvaluation:
    """Holdout evaluation (a second fit on all but the final day)."""
    return evaluate(history, metric, config=config)


def predict_job(stored: StoredModel, grid: list[datetime]) -> Prediction:
    """Forecast a stored version; it is parsed (and its checksum checked) once per worker."""
    model = _cache.get(stored.sha256)
    if model is None:
        model = load_model(stored.payload, stored.sha256)
        _cache.put(stored.sha256, model)
    return predict(model, grid)
