"""Evaluations: the backtest's, stored with each version, and a holdout one for benches.

Usage: `StoredEvaluation.from_payload(payload)` (what training registers and GET /models shows);
`evaluate(history, "cpu_usage_percent")` fits on all but the final day and scores that day against
seasonal-naive forecasts (what `bench.bench_forecast` reports).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from services.forecaster.forecasting.errors import InsufficientHistoryError
from services.forecaster.forecasting.history import MetricHistory
from services.forecaster.forecasting.prophet_model import (
    DEFAULT_CONFIG,
    ForecastConfig,
    MetricModel,
    fit,
    predict_frame,
)
from shared.arrays import FloatArray


@dataclass(frozen=True, slots=True)
class StoredEvaluation:
    """The backtest evaluation a fit stores in its artifact (see `backtest.summary`)."""

    data: dict[str, Any]

    @classmethod
    def from_payload(cls, payload: str | bytes) -> StoredEvaluation:
        document = json.loads(payload)
        return cls(dict(document.get("evaluation") or {}))

    @property
    def complete(self) -> bool:
        return self.data.get("method") == "backtest"

    @property
    def chosen(self) -> str | None:
        value = self.data.get("chosen")
        return None if value is None else str(value)

    @property
    def error(self) -> str | None:
        value = self.data.get("evaluation_error")
        return None if value is None else str(value)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.data)


@dataclass(frozen=True, slots=True)
class MetricEvaluation:
    """Accuracy of a model on the held-out final stretch against seasonal-naive forecasts.

    Every held-out bucket is scored, anomalous ones included. MAPE skips actual values of
    zero (None when none are left); MASE scales by the in-sample MAE of the one-day naive.
    """

    metric: str
    resolution: str
    score_resolution: str
    holdout_start: datetime
    holdout_end: datetime
    n_points: int
    mae: float
    mape: float | None
    mase: float | None
    coverage: float
    interval_width: float
    naive_day_mae: float | None
    naive_week_mae: float | None
    naive_day_mape: float | None
    naive_week_mape: float | None
    fit_seconds: float
    chosen: str = ""
    sample_coverage: float | None = None

    @property
    def best_naive_mae(self) -> float | None:
        maes = [m for m in (self.naive_day_mae, self.naive_week_mae) if m is not None]
        return min(maes) if maes else None

    @property
    def beats_naive(self) -> bool:
        best = self.best_naive_mae
        return best is None or self.mae < best

    def as_dict(self) -> dict[str, Any]:
        """The JSON document stored with the model version (its registry `metrics`)."""
        data = asdict(self)
        data["holdout_start"] = self.holdout_start.isoformat()
        data["holdout_end"] = self.holdout_end.isoformat()
        data["best_naive_mae"] = self.best_naive_mae
        data["beats_naive"] = self.beats_naive
        return data


def _mae(actual: FloatArray, predicted: FloatArray) -> float | None:
    ok = ~np.isnan(predicted) & ~np.isnan(actual)
    return float(np.mean(np.abs(actual[ok] - predicted[ok]))) if ok.any() else None


def _mape(actual: FloatArray, predicted: FloatArray, zero_tol: float = 1e-9) -> float | None:
    ok = ~np.isnan(predicted) & ~np.isnan(actual) & (np.abs(actual) > zero_tol)
    if not ok.any():
        return None
    return float(np.mean(np.abs((actual[ok] - predicted[ok]) / actual[ok])) * 100.0)


def _lagged(series: pd.Series, ds: pd.Series, lag: pd.Timedelta) -> FloatArray:
    return series.reindex(pd.DatetimeIndex(ds) - lag).to_numpy(dtype=float)


def _sample_coverage(
    model: MetricModel, samples: pd.DataFrame | None, cutoff: pd.Timestamp
) -> float | None:
    if samples is None:
        return None
    ts = pd.DatetimeIndex(pd.to_datetime(samples["timestamp"], utc=True)).tz_localize(None)
    keep = np.asarray(ts >= cutoff) & np.isfinite(samples["value"].to_numpy(dtype=float))
    if not keep.any():
        return None
    step = model.config.step
    middles = ts[keep].floor(step) + step / 2
    unique = pd.DatetimeIndex(middles.unique())
    band = predict_frame(model, unique).set_index("ds")
    lower = band["yhat_lower"].reindex(middles).to_numpy(dtype=float)
    upper = band["yhat_upper"].reindex(middles).to_numpy(dtype=float)
    values = samples["value"].to_numpy(dtype=float)[keep]
    return float(np.mean((values >= lower) & (values <= upper)))


def evaluate(
    history: MetricHistory,
    metric: str,
    *,
    config: ForecastConfig = DEFAULT_CONFIG,
    holdout_hours: float = 24.0,
    scored: pd.DataFrame | None = None,
    score_resolution: str | None = None,
    samples: pd.DataFrame | None = None,
) -> MetricEvaluation:
    """Fit on all but the final ``holdout_hours`` of ``history`` and score that stretch.

    ``scored`` (default: ``history.observed``) holds the actual bucket means at
    ``score_resolution`` (default: the model's); pass one scoring resolution to compare
    models fitted at several. ``samples`` (``timestamp``, ``value``: raw samples) adds the
    share of held-out samples inside the band of their bucket (``sample_coverage``): the
    band is calibrated to cover samples, so bucket means fall inside it more often.
    """
    scored_at = score_resolution or config.resolution
    if scored is None:
        scored = history.observed
    if scored.empty:
        raise InsufficientHistoryError(f"{metric}: no data")
    end = scored["ds"].iloc[-1] + pd.Timedelta(scored_at) / 2
    cutoff = end - pd.Timedelta(hours=holdout_hours)
    training = MetricHistory(
        fit=history.fit[history.fit["ds"] < cutoff],
        observed=history.observed[history.observed["ds"] < cutoff],
        spread=None if history.spread is None else history.spread[history.spread["ds"] < cutoff],
    )
    test = scored[scored["ds"] >= cutoff].reset_index(drop=True)
    if test.empty:
        raise InsufficientHistoryError(f"{metric}: nothing to hold out")
    model = fit(training, metric, config=config)
    predicted = predict_frame(model, pd.DatetimeIndex(test["ds"]))

    actual = test["y"].to_numpy(dtype=float)
    yhat = predicted["yhat"].to_numpy(dtype=float)
    inside = (actual >= predicted["yhat_lower"].to_numpy()) & (
        actual <= predicted["yhat_upper"].to_numpy()
    )
    by_time = pd.Series(scored["y"].to_numpy(dtype=float), index=pd.DatetimeIndex(scored["ds"]))
    naive_day = _lagged(by_time, test["ds"], pd.Timedelta(days=1))
    naive_week = _lagged(by_time, test["ds"], pd.Timedelta(days=7))

    in_sample = scored[scored["ds"] < cutoff]
    scale = _mae(
        in_sample["y"].to_numpy(dtype=float),
        _lagged(by_time, in_sample["ds"], pd.Timedelta(days=1)),
    )
    mae = float(np.mean(np.abs(actual - yhat)))
    return MetricEvaluation(
        sample_coverage=_sample_coverage(model, samples, cutoff),
        metric=metric,
        resolution=config.resolution,
        score_resolution=scored_at,
        holdout_start=pd.Timestamp(cutoff).tz_localize("UTC").to_pydatetime(),
        holdout_end=pd.Timestamp(test["ds"].iloc[-1]).tz_localize("UTC").to_pydatetime(),
        n_points=len(test),
        mae=mae,
        mape=_mape(actual, yhat),
        mase=mae / scale if scale else None,
        coverage=float(inside.mean()),
        interval_width=config.interval_width,
        naive_day_mae=_mae(actual, naive_day),
        naive_week_mae=_mae(actual, naive_week),
        naive_day_mape=_mape(actual, naive_day),
        naive_week_mape=_mape(actual, naive_week),
        fit_seconds=model.fit_seconds,
        chosen=model.chosen,
    )
