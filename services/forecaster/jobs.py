"""Prophet work as plain picklable jobs, run in the forecaster's worker processes.

Everything crossing the process boundary is data (frames, JSON text, arrays), never a
Prophet object. A worker keeps the models it has parsed, by checksum, so an hourly refresh
does not parse the same JSON again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from services.forecaster import model as fm

_CACHE_SIZE = 64
_models: OrderedDict[str, fm.MetricModel] = OrderedDict()


@dataclass(slots=True)
class Prediction:
    """One metric's forecast on the storage grid."""

    times: list[datetime]
    yhat: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@dataclass(slots=True)
class FitOutput:
    """A fitted model as stored (Prophet JSON and its sha256) plus what is derived from it."""

    metric: str
    payload: str
    sha256: str
    trend: dict[str, Any]
    prediction: Prediction
    n_points: int
    fit_seconds: float
    trained_start: datetime
    trained_end: datetime
    y_scale: float


def warm() -> bool:
    """Nothing: submitted once per worker at start-up so Prophet is imported before a fit."""
    return True


def predict(model: fm.MetricModel, grid: Sequence[datetime]) -> Prediction:
    frame = fm.predict_at(model, grid)
    return Prediction(
        times=list(grid),
        yhat=frame["yhat"].to_numpy(dtype=float),
        lower=frame["yhat_lower"].to_numpy(dtype=float),
        upper=frame["yhat_upper"].to_numpy(dtype=float),
    )


def trend_dict(model: fm.MetricModel) -> dict[str, Any]:
    trend = fm.analyse_trend(model)
    return {
        "window_start": trend.window_start.isoformat(),
        "window_end": trend.window_end.isoformat(),
        "slope_per_hour": trend.slope_per_hour,
        "slope_per_day": trend.slope_per_day,
        "direction": trend.direction,
        "flat_tolerance_per_day": trend.flat_tolerance_per_day,
        "change_points": [
            {
                "time": point.time.isoformat(),
                "slope_change_per_hour": point.slope_change_per_hour,
                "slope_change_per_day": point.slope_change_per_day,
            }
            for point in trend.change_points
        ],
    }


def _remember(sha256: str, model: fm.MetricModel) -> None:
    _models[sha256] = model
    _models.move_to_end(sha256)
    while len(_models) > _CACHE_SIZE:
        _models.popitem(last=False)


def fit_job(
    metric: str,
    frame: pd.DataFrame,
    observed: pd.DataFrame,
    config: fm.ForecastConfig,
    grid: list[datetime],
) -> FitOutput:
    """Fit, serialise, analyse the trend and forecast the storage grid."""
    model = fm.fit_frame(frame, metric, config=config, observed=observed)
    serialized = fm.serialize_model(model)
    _remember(serialized.sha256, model)
    return FitOutput(
        metric=metric,
        payload=serialized.payload,
        sha256=serialized.sha256,
        trend=trend_dict(model),
        prediction=predict(model, grid),
        n_points=model.n_points,
        fit_seconds=model.fit_seconds,
        trained_start=model.trained_start,
        trained_end=model.trained_end,
        y_scale=float(model.prophet.y_scale or 1.0),
    )


def evaluate_job(
    metric: str, frame: pd.DataFrame, observed: pd.DataFrame, config: fm.ForecastConfig
) -> dict[str, Any]:
    """Holdout evaluation (a second fit on all but the final day)."""
    return fm.evaluate_frames(frame, observed, metric, config=config).as_dict()


def predict_job(payload: bytes, sha256: str, grid: list[datetime]) -> Prediction:
    """Forecast a stored model; its checksum is verified whenever it is parsed."""
    model = _models.get(sha256)
    if model is None:
        model = fm.load_model(payload, sha256)
        _remember(sha256, model)
    return predict(model, grid)
